"""The designs bench_throughput.py compares, each delivering *n* rows to the emulator and timing itself.

Each returns a :class:`Run`: rows/s of wall clock from the first row offered until every row was delivered,
and the client process's CPU time per row over the same span (all threads: serialising, compressing, HTTP;
the emulator runs in its own process). Rows are made before the clock starts.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
from _common import audit_rows
from azure.monitor.ingestion import LogsIngestionClient

from sentinel_forwarder import AuditEntry, AzureSentinelForwarder, BufferingForwarder
from sentinel_forwarder.testing import AsyncEmulatorCredential, EmulatorCredential


@dataclass(frozen=True)
class Run:
    rows_per_s: float
    cpu_us_per_row: float


class _Clock:
    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def run(self, n: int) -> Run:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return Run(n / wall, cpu / n * 1e6)


@contextmanager
def _sdk_client(info: dict[str, Any]) -> Iterator[LogsIngestionClient]:
    client = LogsIngestionClient(info["endpoint"], EmulatorCredential())
    try:
        yield client
    finally:
        client.close()


def seed_design(info: dict[str, Any], n: int) -> Run:
    """The seed: rows as dicts, one 100-row ``upload()`` at a time, the SDK serialising."""
    entries = audit_rows(n)
    with _sdk_client(info) as client:
        clock = _Clock()
        for i in range(0, n, 100):
            rows = [e.to_row() for e in entries[i : i + 100]]
            client.upload(info["rule_id"], info["stream_name"], rows, enforce_https=False)
        return clock.run(n)


def raw_sdk(info: dict[str, Any], n: int) -> Run:
    """The raw SDK given every row at once: ``upload(list)`` cuts 1 MB chunks and posts them in turn."""
    entries = audit_rows(n)
    with _sdk_client(info) as client:
        clock = _Clock()
        client.upload(
            info["rule_id"], info["stream_name"], [e.to_row() for e in entries], enforce_https=False
        )
        return clock.run(n)


async def ours(info: dict[str, Any], n: int, **options: Any) -> Run:
    """forward() as fast as the buffer takes rows (no drops), until the close has delivered them all."""
    entries = audit_rows(n)
    sink = sink_for(info, options.get("max_batches_in_flight", 4))
    fwd = BufferingForwarder(sink, **options)
    capacity = options.get("capacity", 10_000)
    clock = _Clock()
    async with fwd:
        for entry in entries:
            # A producer that must not drop polls for room: the buffer has no "room available" event,
            # by design (forward() never waits).
            while fwd.queue_depth() >= capacity:  # noqa: ASYNC110
                await anyio.sleep(0.001)
            fwd.forward(entry)
    run = clock.run(n)
    stats = fwd.statistics()
    assert stats.sent == n and not stats.dropped, stats
    return run


def sink_for(info: dict[str, Any], in_flight: int) -> AzureSentinelForwarder:
    return AzureSentinelForwarder(
        info["endpoint"],
        EmulatorCredential(),
        rule_id=info["rule_id"],
        max_concurrent_uploads=max(8, in_flight),
    )


def otel_batch(info: dict[str, Any], n: int) -> Run:
    """OpenTelemetry's ``BatchLogRecordProcessor`` (defaults: 512-row exports, one worker thread) with an
    exporter that uploads each export through the SDK. Its queue is sized to hold the run, so none drop."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import (
        BatchLogRecordProcessor,
        LogRecordExporter,
        LogRecordExportResult,
    )

    entries = audit_rows(n)
    delivered = 0

    class SentinelExporter(LogRecordExporter):
        def __init__(self, client: LogsIngestionClient) -> None:
            self._client = client

        def export(self, batch: Any) -> LogRecordExportResult:
            nonlocal delivered
            rows = [dict(r.log_record.attributes) for r in batch]
            self._client.upload(info["rule_id"], info["stream_name"], rows, enforce_https=False)
            delivered += len(rows)
            return LogRecordExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            return True

    with _sdk_client(info) as client:
        provider = LoggerProvider()
        provider.add_log_record_processor(BatchLogRecordProcessor(SentinelExporter(client), max_queue_size=n))
        logger = provider.get_logger("audit")
        clock = _Clock()
        for e in entries:
            logger.emit(body=e.summary, attributes=e.to_row())
        provider.force_flush(600_000)
        run = clock.run(n)
        provider.shutdown()
    assert delivered == n, (delivered, n)
    return run


async def litellm_style(info: dict[str, Any], n: int) -> Run:
    """LiteLLM's batch logger: an unbounded list, flushed by one task at 512 rows or every 5 s, each flush
    uploaded in turn through the SDK's async client on the event loop (asyncio only: aiohttp)."""
    from azure.monitor.ingestion.aio import LogsIngestionClient as AsyncClient

    entries = audit_rows(n)
    queue: list[dict[str, Any]] = []
    wake = anyio.Event()
    delivered = 0
    client = AsyncClient(info["endpoint"], AsyncEmulatorCredential())

    async def flusher() -> None:
        nonlocal wake, delivered
        while delivered < n:
            if len(queue) < 512:
                with anyio.move_on_after(5):
                    await wake.wait()
                wake = anyio.Event()
            batch = queue[:]
            del queue[:]
            if batch:
                await client.upload(info["rule_id"], info["stream_name"], batch, enforce_https=False)
                delivered += len(batch)

    async with client:
        clock = _Clock()
        async with anyio.create_task_group() as tg:
            tg.start_soon(flusher)
            for i, e in enumerate(entries):
                queue.append(e.to_row())
                if len(queue) >= 512:
                    wake.set()
                if i % 512 == 511:
                    # a producer that yields now and then, as request handlers do
                    await anyio.lowlevel.checkpoint()
            wake.set()
        return clock.run(n)


def encode_ceiling(batches: int, codec: Any) -> float:
    """CPU µs per row to serialise and compress a 2,500-row batch (the default ``max_request_rows``) at the
    default ``compress_level`` on one thread: the median over *batches* batches."""
    import statistics

    from sentinel_forwarder._model import wire as _wire

    entries = audit_rows(2500)
    costs = []
    for _ in range(batches):
        cpu = time.thread_time()
        chunks, _ = _wire.plan(entries, codec)
        for chunk in chunks:
            for _body in _wire.compressed(chunk, codec, 6):
                pass
        costs.append((time.thread_time() - cpu) / len(entries) * 1e6)
    return statistics.median(costs)


def per_request_cpu(info: dict[str, Any], make: Callable[[], Any], requests: int) -> float:
    """Client CPU ms per ``upload()`` of a one-row gzip body through the client *make* returns."""
    import gzip
    import json

    body = gzip.compress(json.dumps([AuditEntry("x").to_row()]).encode())
    client = make()
    try:
        for _ in range(20):  # connection, token
            client.upload(info["rule_id"], info["stream_name"], io.BytesIO(body), enforce_https=False)
        cpu = time.process_time()
        for _ in range(requests):
            client.upload(info["rule_id"], info["stream_name"], io.BytesIO(body), enforce_https=False)
        return (time.process_time() - cpu) / requests * 1e3
    finally:
        client.close()
