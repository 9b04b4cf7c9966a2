"""Run the command line as a user does: ``python -m sentinel_forwarder`` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import sentinel_forwarder

#: The tree whose package is under test (a worktree may shadow an installed copy through PYTHONPATH).
SOURCE_ROOT = Path(sentinel_forwarder.__file__).resolve().parent.parent


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``python -m sentinel_forwarder *args`` at 80 columns, with only *env* (and what Python needs) set."""
    full = {
        "PYTHONPATH": str(SOURCE_ROOT),
        "COLUMNS": "80",
        "PYTHONIOENCODING": "utf-8",
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "sentinel_forwarder", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full,
        cwd=cwd,
        check=False,
    )
