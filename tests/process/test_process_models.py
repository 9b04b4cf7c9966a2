"""Every way Python runs an application, as real processes: each test counts the rows that landed in the
emulator against the rows forwarded, and fails on silent loss or on a row delivered twice.

CI runs this directory on every CPython from 3.10 to 3.13 (``.ci/run``).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from sentinel_forwarder.emulator import Emulator

APPS = Path(__file__).parent / "apps"
#: Bounds on waiting for a process: it ends (or says READY) within this, or the test fails.
BOUND = 60


def env_for(emu: Emulator) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(APPS), os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ,
        "SENTINEL_FORWARDER_ENDPOINT": emu.endpoint,
        "SENTINEL_FORWARDER_RULE_ID": emu.rule_id,
        "PYTHONPATH": path,
    }


def run_app(emu: Emulator, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=APPS, env=env_for(emu), capture_output=True, text=True, timeout=BOUND
    )


def landed(emu: Emulator) -> int:
    ids = [row["Id"] for row in emu.rows(emu.table)]
    assert len(ids) == len(set(ids)), "a row landed twice"
    return len(ids)


class Lines:
    """Reads a process's output on a thread, so the test can wait for a line with a bound."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)  # the process closed its output: it ended

    def wait_for(self, text: str, count: int = 1) -> None:
        found = 0
        while found < count:
            try:
                line = self._lines.get(timeout=BOUND)
            except queue.Empty:
                raise AssertionError(f"no {text!r} within {BOUND} s; output so far: {self.seen}") from None
            if line is None:
                raise AssertionError(f"the process ended before {text!r}; output: {self.seen}")
            self.seen.append(line)
            found += line.count(text)  # two workers can write into one line


@pytest.fixture
def process() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; killed at the end if still running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(BOUND)


# -- interpreter exit, sys.exit, os._exit, SIGTERM --------------------------------------------------------


@pytest.mark.parametrize("mode", ["return", "sys_exit"])
def test_buffered_rows_drain_at_interpreter_exit(emu: Emulator, mode: str) -> None:
    done = run_app(emu, "exits.py", mode, "50")
    assert done.returncode == 0, done.stderr
    assert landed(emu) == 50


def test_os_exit_loses_buffered_rows_as_documented(emu: Emulator) -> None:
    done = run_app(emu, "exits.py", "os_exit", "50")
    assert done.returncode == 0, done.stderr
    assert landed(emu) == 0  # docs/deployment.md: nothing runs after os._exit; use durable delivery


@pytest.mark.parametrize("drain", [True, False], ids=["drain_on_sigterm", "default"])
def test_sigterm(emu: Emulator, drain: bool, process: list[subprocess.Popen[str]]) -> None:
    mode = "wait_for_signal_drain" if drain else "wait_for_signal"
    p = subprocess.Popen(
        [sys.executable, "exits.py", mode, "200"],
        cwd=APPS,
        env=env_for(emu),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.append(p)
    assert p.stdout is not None
    Lines(p.stdout).wait_for("READY")
    p.send_signal(signal.SIGTERM)
    assert p.wait(BOUND) == -signal.SIGTERM  # either way the signal still ends the process as it would
    # with the opt-in the buffer is delivered first; without it, SIGTERM's default action loses it
    assert landed(emu) == (200 if drain else 0)


# -- fork and multiprocessing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode",
    [
        "os_fork",
        "os_fork_flush_first",
        "os_fork_bound_method",
        "mp_fork_process",
        "mp_fork_sys_exit",
        "mp_fork_pool",
        "mp_spawn_process",
        "mp_spawn_pool",
    ],
)
def test_children_deliver_everything_once(emu: Emulator, mode: str) -> None:
    done = run_app(emu, "forks.py", mode, "25")
    assert done.returncode == 0, done.stderr
    assert landed(emu) == int(done.stdout.split()[-1]) == 100


def test_a_forwarder_closed_before_fork_stays_closed_in_the_child(emu: Emulator) -> None:
    done = run_app(emu, "forks.py", "os_fork_closed_in_parent", "25")
    assert done.returncode == 0, done.stderr  # the child saw every row refused and counted as "closed"
    assert landed(emu) == 25


# -- servers -----------------------------------------------------------------------------------------------


def serve_then_stop(
    emu: Emulator,
    process: list[subprocess.Popen[str]],
    command: list[str],
    *,
    ready: str,
    on_stderr: bool,
    socket_path: Path,
    requests: int = 40,
) -> None:
    """Start a server with two workers, wait until both say *ready*, send requests, stop it with SIGTERM."""
    p = subprocess.Popen(
        [sys.executable, "-m", *command],
        cwd=APPS,
        env=env_for(emu),
        stdout=subprocess.DEVNULL if on_stderr else subprocess.PIPE,
        stderr=subprocess.PIPE if on_stderr else subprocess.DEVNULL,
        text=True,
    )
    process.append(p)
    stream = p.stderr if on_stderr else p.stdout
    assert stream is not None
    Lines(stream).wait_for(ready, count=2)
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), timeout=BOUND) as client:
        for _ in range(requests):
            assert client.get("http://app/").text == "audited\n"
    p.send_signal(signal.SIGTERM)
    assert p.wait(BOUND) == 0
    assert landed(emu) == requests


@pytest.mark.parametrize("preload", [False, True], ids=["plain", "preload"])
def test_gunicorn_sync_workers(
    emu: Emulator, preload: bool, tmp_path: Path, process: list[subprocess.Popen[str]]
) -> None:
    # A graceful stop: each worker leaves through sys.exit, so atexit drains it.
    sock = tmp_path / "gunicorn.sock"
    command = ["gunicorn", "-w", "2", "--bind", f"unix:{sock}", "-c", "gunicorn_conf.py"]
    command += [*(["--preload"] if preload else []), "wsgi_app:app"]
    serve_then_stop(emu, process, command, ready="WORKER READY", on_stderr=False, socket_path=sock)


def test_uvicorn_two_workers(emu: Emulator, tmp_path: Path, process: list[subprocess.Popen[str]]) -> None:
    # The workers shut down: each lifespan drains its forwarder.
    sock = tmp_path / "uvicorn.sock"
    command = ["uvicorn", "asgi_app:app", "--workers", "2", "--uds", str(sock)]
    serve_then_stop(
        emu, process, command, ready="Application startup complete", on_stderr=True, socket_path=sock
    )
