"""The public API's types: add_sentinel_forwarder's overloads, checked by mypy on a typed example module."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import SOURCE_ROOT

from sentinel_forwarder import add_sentinel_forwarder
from sentinel_forwarder._setup import SetupOptions

EXAMPLE = Path(__file__).parent / "typing" / "typed_example.py"


def test_setup_options_list_every_keyword_argument() -> None:
    """The overloads take SetupOptions: a keyword added to add_sentinel_forwarder must be added there too."""
    keywords = [
        p.name
        for p in inspect.signature(add_sentinel_forwarder).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    assert list(SetupOptions.__annotations__) == keywords
    declared = add_sentinel_forwarder.__annotations__  # strings: from __future__ import annotations
    for name, annotation in SetupOptions.__annotations__.items():
        assert getattr(annotation, "__forward_arg__", annotation) == declared[name], name


@pytest.mark.timeout(300)
def test_mypy_accepts_the_typed_example_and_its_return_types(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    proc = subprocess.run(
        [
            sys.executable, "-m", "mypy", "--strict", "--python-version", "3.10",
            "--cache-dir", str(tmp_path / "cache"), str(EXAMPLE),
        ],
        capture_output=True,
        text=True,
        cwd=SOURCE_ROOT,
        env={"PYTHONPATH": str(SOURCE_ROOT), "PATH": ""},
        timeout=300,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(300)
def test_pyright_accepts_the_typed_example(tmp_path: Path) -> None:
    """pyright (strict, unnecessary ignores are errors) agrees with mypy on the same example."""
    pytest.importorskip("pyright")
    proc = subprocess.run(
        [sys.executable, "-m", "pyright", "--pythonpath", sys.executable, str(EXAMPLE)],
        capture_output=True,
        text=True,
        cwd=SOURCE_ROOT,
        env={**os.environ, "PYTHONPATH": str(SOURCE_ROOT)},
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_audit_entry_init_for_type_checkers_matches_the_fields() -> None:
    """AuditEntry's __init__ under TYPE_CHECKING (severity: Severity | str | int) must list the dataclass's
    fields in order, with the same defaults where they are plain values."""
    import ast
    import dataclasses

    from sentinel_forwarder import AuditEntry
    from sentinel_forwarder._model import entry as _entry

    tree = ast.parse(Path(_entry.__file__).read_text(encoding="utf-8"))
    [cls] = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "AuditEntry"]
    [init] = [n for n in ast.walk(cls) if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
    names = [a.arg for a in init.args.args[1:]]
    fields = dataclasses.fields(AuditEntry)
    assert names == [f.name for f in fields]
    defaults = {
        a.arg: d for a, d in zip(init.args.args[-len(init.args.defaults) :], init.args.defaults, strict=True)
    }
    for f in fields:
        if f.default is not dataclasses.MISSING and isinstance(f.default, str):
            assert ast.literal_eval(defaults[f.name]) == f.default, f.name
        elif f.default_factory is not dataclasses.MISSING:
            assert isinstance(defaults[f.name], ast.Constant) and defaults[f.name].value is Ellipsis, f.name
