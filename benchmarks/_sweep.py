"""The ``max_batches_in_flight`` sweep and the aiohttp transport, which justify two defaults
(``python benchmarks/bench_throughput.py --sweep``; writes the "sweep" section of docs/benchmarks.md)."""

from __future__ import annotations

import io
from typing import Any

import anyio
from _common import audit_rows, emulator_process, machine, write_section
from _contenders import ours

from sentinel_forwarder import AuditEntry
from sentinel_forwarder._model import wire as _wire
from sentinel_forwarder.testing import AsyncEmulatorCredential


async def aiohttp_transport(info: dict[str, Any], n: int, batch: int, in_flight: int) -> float:
    """The alternative transport: the SDK's async client (aiohttp, asyncio only), same chunks, encoded on
    the event loop as this design would have to. Returns rows/s."""
    import time

    from azure.monitor.ingestion.aio import LogsIngestionClient as AsyncClient

    entries = audit_rows(n)
    limiter = anyio.Semaphore(in_flight)
    client = AsyncClient(info["endpoint"], AsyncEmulatorCredential())

    async def post(batch: list[AuditEntry]) -> None:
        async with limiter:
            chunks, _ = _wire.plan(batch, _wire.CODEC)
            for chunk in chunks:
                for body, _a, _b in _wire.compressed(chunk, _wire.CODEC, 1):
                    await client.upload(
                        info["rule_id"], info["stream_name"], io.BytesIO(body), enforce_https=False
                    )

    started = time.perf_counter()
    async with client, anyio.create_task_group() as tg:
        for i in range(0, n, batch):
            tg.start_soon(post, entries[i : i + batch])
    return n / (time.perf_counter() - started)


def sweep() -> None:
    table: dict[float, dict[str, float]] = {}
    for latency in (0.0, 0.05):
        results: dict[str, float] = {}
        with emulator_process(latency=latency) as info:
            results["aiohttp, 1000-row batches, 8 concurrent"] = anyio.run(
                aiohttp_transport, info, 60_000, 1000, 8, backend="asyncio"
            )
            for k in (1, 2, 4, 8, 16):
                run = anyio.run(
                    lambda k=k: ours(
                        info,
                        8_000 * min(k, 4),
                        max_batches_in_flight=k,  # type: ignore[misc]
                        max_request_rows=100,
                    )
                )
                results[f"100-row requests, {k} in flight"] = run.rows_per_s
            for k in (1, 4, 8):
                run = anyio.run(
                    lambda k=k: ours(
                        info,
                        60_000,
                        max_batch_size=1000,  # type: ignore[misc]
                        max_request_rows=1000,
                        max_batches_in_flight=k,
                        capacity=50_000,
                    )
                )
                results[f"1,000-row requests, {k} in flight"] = run.rows_per_s
        table[latency] = results
    lines = [
        f"Machine: {machine()}; codec {_wire.CODEC.name}; emulator in sink mode in its own process.",
        "",
        "| configuration | rows/s @0 ms | rows/s @50 ms |",
        "|---|---:|---:|",
    ]
    for key in table[0.0]:
        lines.append(f"| {key} | {table[0.0][key]:,.0f} | {table[0.05][key]:,.0f} |")
    print("\n".join(lines))
    write_section("sweep", "## Concurrency sweep and the aiohttp transport\n\n" + "\n".join(lines))
