"""`sentinel-forwarder demo` as a newcomer runs it: a subprocess, exit status 0 only when nothing was lost."""

from __future__ import annotations

import os
import subprocess
import sys

from cli_helpers import SOURCE_ROOT


def test_demo_runs_on_the_embedded_emulator() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sentinel_forwarder.cli", "demo", "--records", "3000", "--rate", "30000"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(SOURCE_ROOT), "COLUMNS": "140", "PATH": "", "PYTHONIOENCODING": "utf-8"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "all 3,000 rows landed; nothing lost" in out
    assert "hash chain verified over all 3,000 landed rows" in out
    assert "session-attacker-7f3a" in out
    assert "injected throttling" in out


def test_demo_rejects_a_tiny_run() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sentinel_forwarder.cli", "demo", "--records", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(SOURCE_ROOT)},
    )
    assert proc.returncode == 2
    assert "--records" in proc.stderr
