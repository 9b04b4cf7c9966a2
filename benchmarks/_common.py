"""Shared helpers for the benchmarks: realistic rows, an out-of-process emulator, and docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sentinel_forwarder import AuditEntry, Severity

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
DETECTORS = [
    "pii-leak",
    "credential-exposure",
    "prompt-injection",
    "jailbreak",
    "toxicity",
    "data-exfiltration",
]
SEVERITIES = [Severity.LOW] * 5 + [Severity.MEDIUM] * 3 + [Severity.HIGH] + [Severity.CRITICAL]


def audit_rows(n: int) -> list[AuditEntry]:
    """Rows shaped like a real AI-application audit trail (about 350 bytes of JSON each)."""
    return [
        AuditEntry(
            f"Detector {DETECTORS[i % 6]} flagged a model response in conversation turn {i % 40}: "
            f"matched pattern class {i % 13}, response withheld from the user",
            severity=SEVERITIES[i % 10],
            detector_id=DETECTORS[i % 6],
            session_id=f"session-{i % 997:04d}",
        )
        for i in range(n)
    ]


@contextmanager
def emulator_process(*, latency: float = 0.0) -> Iterator[dict[str, Any]]:
    """Run ``sentinel-forwarder emulator --sink`` in its own process (no GIL shared with the client)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel_forwarder.cli", "emulator", "--port", "0", "--sink", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info: dict[str, Any] = json.loads(proc.stdout.readline())
        set_faults(info["endpoint"], {"reset": {}, "latency": {"seconds": latency}})
        yield info
    finally:
        proc.terminate()
        proc.wait(10)


def set_faults(endpoint: str, actions: dict[str, Any]) -> None:
    req = urllib.request.Request(
        f"{endpoint}/_emulator/faults",
        data=json.dumps(actions).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(req, timeout=10).read()


def emulator_stats(endpoint: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{endpoint}/_emulator/stats", timeout=10) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def machine() -> str:
    impl, version = platform.python_implementation(), platform.python_version()
    return f"{impl} {version}, {os.cpu_count()} cores, {platform.machine()}"


def write_section(name: str, body: str) -> None:
    """Replace the ``<!-- name -->`` section of docs/benchmarks.md with *body* (create it if missing)."""
    DOCS.parent.mkdir(exist_ok=True)
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    )
    DOCS.write_text(text)
