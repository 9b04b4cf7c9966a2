"""kill -9 at random moments: every row whose durable forward returned is delivered by a later run.

A child process forwards rows through the real SDK to the emulator with a spool. Every 50th row it calls
``forward_durable`` and prints that row's number once it returns: every row up to it is then committed
(commits are in order). The test kills the child with SIGKILL at a random moment, 20 times, starting it
again on the same spool directory each time; a last run delivers what is left. Rows forwarded with plain
``forward()`` after the last confirmation may be lost (the commit window); they are reported, not asserted.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from sentinel_forwarder.emulator import Emulator

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

TOTAL = 100_000
KILLS = 20
CHILD = """
import sys
from sentinel_forwarder import AuditEntry, AzureSentinelForwarder, BackgroundForwarder, BufferingForwarder
from sentinel_forwarder.testing import EmulatorCredential

endpoint, rule_id, spool, start, stop = sys.argv[1:]
sink = AzureSentinelForwarder(endpoint, EmulatorCredential(), rule_id=rule_id, retry_backoff=0.01)
bg = BackgroundForwarder(BufferingForwarder(sink, spool=spool, max_interval=0.05)).start()
for i in range(int(start), int(stop)):
    entry = AuditEntry(f"row {i}", id=f"row-{i}")
    if i % 50 == 49 or i == int(stop) - 1:
        assert bg.forward_durable(entry, timeout=60)
        print(i, flush=True)
    else:
        bg.forward(entry)
bg.flush(60)
print("done", flush=True)
bg.close()
"""


def run_child(emu: Emulator, spool: Path, start: int, stop: int, kill_after: int | None) -> int:
    """Run the child from row *start*; kill it after *kill_after* confirmations. -> rows confirmed through."""
    args = [sys.executable, "-c", CHILD, emu.endpoint, emu.rule_id, str(spool), str(start), str(stop)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    confirmed = start - 1
    seen = 0
    try:
        for line in proc.stdout:
            if line.strip() == "done":
                break
            confirmed = int(line)
            seen += 1
            if kill_after is not None and seen >= kill_after:
                proc.kill()  # SIGKILL: no atexit, no drain, no finally
                break
    finally:
        proc.stdout.close()
        proc.wait(timeout=120)
    return confirmed


def test_kill_9_twenty_times_loses_no_durably_forwarded_row(emu: Emulator, tmp_path: Path) -> None:
    rng = random.Random(20261121)
    per_run = TOTAL // (KILLS + 1)
    next_row = 0
    confirmed: list[int] = []  # rows confirmed through, per killed run
    for _ in range(KILLS):
        stop = next_row + per_run
        last = run_child(emu, tmp_path, next_row, stop, kill_after=rng.randint(1, per_run // 50))
        confirmed.append(last)
        next_row = stop  # rows after `last` of that run may be lost: the next run starts afresh
    last = run_child(emu, tmp_path, next_row, TOTAL, kill_after=None)
    assert last == TOTAL - 1
    landed = Counter(r["Id"] for r in emu.rows(emu.table))
    starts = [i * per_run for i in range(KILLS)]
    must = {f"row-{i}" for s, c in zip(starts, confirmed, strict=True) for i in range(s, c + 1)}
    must |= {f"row-{i}" for i in range(next_row, TOTAL)}
    missing = must - set(landed)
    assert not missing, f"{len(missing)} durably forwarded rows lost, e.g. {sorted(missing)[:5]}"
    duplicates = sum(n - 1 for n in landed.values())
    assert set(landed) <= {f"row-{i}" for i in range(TOTAL)}
    # A killed run had forwarded at most the 49 rows after its last confirmation plus the one it was
    # waiting on: those that did not land are what the commit window cost.
    window = {f"row-{i}" for c in confirmed for i in range(c + 1, c + 51)}
    lost = len(window - set(landed))
    print(
        f"\nkill -9 x{KILLS}: every durably forwarded row landed; {duplicates} duplicates by Id; "
        f"at most {lost} rows offered with forward() were lost (of the {len(window)} after each run's last "
        "confirmation, most of them not yet offered when the kill came)"
    )
