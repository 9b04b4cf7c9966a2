"""The public API's types: add_sentinel_forwarder's overloads, checked by mypy on a typed example module."""

from __future__ import annotations

import inspect
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
