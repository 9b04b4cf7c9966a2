"""Cost of ``forward()``: on the owning loop against a bare anyio ``send_nowait``, and from a foreign thread.

Run: ``python benchmarks/bench_forward.py`` (writes the "forward" section of docs/benchmarks.md).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

import anyio
from _common import audit_rows, machine, write_section

from sentinel_forwarder import AuditEntry, BufferingForwarder
from sentinel_forwarder.testing import RecordingForwarder

N = 20_000
ROUNDS = 15


def per_call_ns(fn: Callable[[AuditEntry], object], rows: list[AuditEntry]) -> float:
    start = time.perf_counter_ns()
    for row in rows:
        fn(row)
    return (time.perf_counter_ns() - start) / len(rows)


async def on_loop(rows: list[AuditEntry]) -> tuple[float, float]:
    """Median ns per call over ROUNDS rounds, alternating the two contenders in the same run."""
    ours: list[float] = []
    bare: list[float] = []
    for _ in range(ROUNDS):
        send, receive = anyio.create_memory_object_stream[AuditEntry](N)
        bare.append(per_call_ns(send.send_nowait, rows))
        send.close()
        receive.close()
        # max_batch_size > N: the pump is woken for the first row only and never runs during the loop,
        # so the measurement is forward() itself, not the pump competing for the thread.
        async with BufferingForwarder(
            RecordingForwarder(), capacity=N, max_batch_size=N + 1, max_interval=3600
        ) as fwd:
            ours.append(per_call_ns(fwd.forward, rows))
    return statistics.median(ours), statistics.median(bare)


def from_thread(rows: list[AuditEntry]) -> tuple[float, float]:
    """Median and p99 ns of single forward() calls from a foreign thread while the pump runs."""
    samples: list[int] = []

    async def main() -> None:
        async with BufferingForwarder(RecordingForwarder(), capacity=10 * N, max_interval=0.01) as fwd:

            def produce() -> None:
                clock = time.perf_counter_ns
                overhead = min(-clock() + clock() for _ in range(1000))
                for _ in range(3):
                    for row in rows:
                        t0 = clock()
                        fwd.forward(row)
                        samples.append(clock() - t0 - overhead)

            await anyio.to_thread.run_sync(produce)

    anyio.run(main)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


def main() -> None:
    rows = audit_rows(N)
    lines = [
        f"Machine: {machine()}. {N:,} rows a round, median of {ROUNDS} rounds; "
        "both contenders in the same run.",
        "",
        "| backend | `forward()` ns/call | bare `send_nowait` ns/call | ratio (target ≤ 1.5) |",
        "|---|---:|---:|---:|",
    ]
    for backend in ("asyncio", "trio"):
        ours, bare = anyio.run(on_loop, rows, backend=backend)
        lines.append(f"| {backend} | {ours:.0f} | {bare:.0f} | {ours / bare:.2f} |")
        print(lines[-1])
    median, p99 = from_thread(rows)
    lines += [
        "",
        f"From a foreign thread while the pump runs (asyncio loop): median **{median / 1000:.2f} µs**, "
        f"p99 {p99 / 1000:.2f} µs per call (target: median ≤ 2 µs).",
    ]
    print(lines[-1])
    write_section("forward", "## `forward()` cost\n\n" + "\n".join(lines))


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
