"""The durable spool's cost: rows/s to the emulator with the spool on and off, and ``forward()`` with it on.

Both contenders run in the same run, in interleaved rounds (off, on, off, on, ...); the table gives medians
and their ratio, at 0 ms and 50 ms of added latency.

Run: ``python benchmarks/bench_spool.py`` (writes the "spool" section of docs/benchmarks.md).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

import anyio
from _common import audit_rows, emulator_process, machine, write_section

from sentinel_forwarder import AzureSentinelForwarder, BufferingForwarder
from sentinel_forwarder.testing import EmulatorCredential, RecordingForwarder

ROUNDS = 3
N = 60_000


async def throughput(info: dict[str, Any], spool: bool) -> float:
    """forward() as fast as the buffer takes rows, until close has delivered them all. -> rows/s"""
    entries = audit_rows(N)
    sink = AzureSentinelForwarder(info["endpoint"], EmulatorCredential(), rule_id=info["rule_id"])
    with tempfile.TemporaryDirectory() as directory:
        fwd = BufferingForwarder(sink, spool=directory if spool else None)
        started = time.perf_counter()
        async with fwd:
            for entry in entries:
                while fwd.queue_depth() >= 10_000:  # noqa: ASYNC110 (a producer that must not drop)
                    await anyio.sleep(0.001)
                fwd.forward(entry)
            if spool:
                assert await fwd.flush(600) == 0
        elapsed = time.perf_counter() - started
    stats = fwd.statistics()
    assert stats.sent == N and not stats.dropped, stats
    return N / elapsed


async def forward_ns(spool: bool) -> float:
    """ns per forward() call on the owning loop (the pump does not run during the loop)."""
    rows = audit_rows(20_000)
    with tempfile.TemporaryDirectory() as directory:
        fwd = BufferingForwarder(
            RecordingForwarder(), max_batch_size=50_000, capacity=50_000, spool=directory if spool else None
        )
        async with fwd:
            start = time.perf_counter_ns()
            for row in rows:
                fwd.forward(row)
            return (time.perf_counter_ns() - start) / len(rows)


def main() -> None:
    lines = [
        f"Machine: {machine()}. Emulator in sink mode in its own process; ~350-byte rows; default options; "
        f"{N:,} rows per round, {ROUNDS} interleaved rounds per contender, medians. With the spool every row "
        "is committed to SQLite before delivery and deleted after the service's 204.",
        "",
        "| measure | spool off | spool on | on / off |",
        "|---|---:|---:|---:|",
    ]
    for latency in (0.0, 0.05):
        with emulator_process(latency=latency) as info:
            off: list[float] = []
            on: list[float] = []
            for _ in range(ROUNDS):
                off.append(anyio.run(throughput, info, False))
                on.append(anyio.run(throughput, info, True))
        a, b = statistics.median(off), statistics.median(on)
        lines.append(f"| rows/s at {latency * 1000:.0f} ms | {a:,.0f} | {b:,.0f} | {b / a:.2f} |")
    off, on = [], []
    for _ in range(5):
        off.append(anyio.run(forward_ns, False))
        on.append(anyio.run(forward_ns, True))
    a, b = statistics.median(off), statistics.median(on)
    lines.append(f"| `forward()` ns per call | {a:,.0f} | {b:,.0f} | {b / a:.2f} |")
    for line in lines:
        print(line)
    write_section("spool", "## The durable spool\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
