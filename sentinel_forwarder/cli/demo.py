"""``sentinel-forwarder demo``: the whole path on the embedded emulator, in one process and one command.

A simulated AI application emits ~20,000 audit records (mixed severities and detectors, many sessions, and one
session that bursts High events the way an attack would). They are forwarded (and hash-chained by the
forwarder) through ``BufferingForwarder`` → ``AzureSentinelForwarder`` → the unmodified Azure SDK → the
emulator over HTTPS, with a throttling episode injected halfway. The demo then prints what happened and
exits 0 only if every row landed, the chain verifies and nothing was lost.
"""

from __future__ import annotations

__all__ = ["demo"]

import random
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any

import anyio
import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .._evidence.verify import verify_chain
from .._forwarders.buffering import BufferingForwarder, ForwarderStatistics
from .._model.entry import AuditEntry, Severity
from .._model.protocol import AuditForwarder, SendResult
from .._sinks.azure.sink import AzureSentinelForwarder
from ..emulator import Emulator, QueryError, RuleReport
from ..testing import EmulatorCredential

#: The session the simulation attacks from (the burst rule should name it).
ATTACKER = "session-attacker-7f3a"

DETECTORS = (
    ("prompt-injection", "Prompt injection attempt blocked in user input"),
    ("pii-leak", "Model response contained an e-mail address; redacted before delivery"),
    ("credential-exposure", "API key pattern found in retrieved document"),
    ("jailbreak", "Jailbreak template matched (role-play override)"),
    ("toxicity", "Toxic language score above threshold"),
    ("data-exfiltration", "Tool call tried to send conversation history to an external URL"),
)


@dataclass
class _TimedSink:
    """A wrapper around any sink that records each batch's duration: one protocol, composable."""

    inner: AuditForwarder
    durations: list[float] = field(default_factory=list)

    async def __aenter__(self) -> _TimedSink:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.inner.__aexit__(exc_type, exc_val, exc_tb)

    async def send_batch(self, entries: Sequence[AuditEntry], /) -> SendResult:
        started = time.perf_counter()
        try:
            return await self.inner.send_batch(entries)
        finally:
            self.durations.append(time.perf_counter() - started)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _records(n: int, seed: int) -> list[AuditEntry]:
    """A simulated AI application's audit trail, with one attacking session."""
    rng = random.Random(seed)
    start = datetime.now(timezone.utc) - timedelta(minutes=10)
    attack_at = n // 2
    out: list[AuditEntry] = []
    for i in range(n):
        when = start + timedelta(milliseconds=i * 25)
        if attack_at <= i < attack_at + 40 and i % 2 == 0:
            detector, summary = DETECTORS[0] if i % 4 else DETECTORS[5]
            out.append(
                AuditEntry(
                    f"{summary} (automated probing, attempt {(i - attack_at) // 2 + 1})",
                    severity=Severity.HIGH if i % 8 else Severity.CRITICAL,
                    detector_id=detector,
                    session_id=ATTACKER,
                    timestamp=when,
                )
            )
            continue
        detector, summary = rng.choice(DETECTORS)
        roll = rng.random()
        severity = (
            Severity.NONE
            if roll < 0.30
            else Severity.LOW
            if roll < 0.75
            else Severity.MEDIUM
            if roll < 0.995
            else Severity.HIGH
        )
        out.append(
            AuditEntry(
                summary,
                severity=severity,
                detector_id=detector,
                session_id=f"session-{rng.randrange(800):04d}",
                timestamp=when,
            )
        )
    return out


async def _run(console: Console, records: int, seed: int, rate: int) -> bool:
    entries = _records(records, seed)
    with Emulator(tls=True) as emu:
        console.print(f"[bold]Emulator[/] {emu.endpoint} (HTTPS, CA file {emu.ca_path})")
        console.print(f"  rule [cyan]{emu.rule_id}[/]  stream [cyan]{emu.stream_name}[/]")
        sink = _TimedSink(
            AzureSentinelForwarder(
                emu.endpoint, EmulatorCredential(), rule_id=emu.rule_id, connection_verify=str(emu.ca_path)
            )
        )
        forwarder = BufferingForwarder(sink, max_interval=1.0, name="demo")
        throttle_at = records * 2 // 5
        tick = 0.02
        per_tick = max(1, int(rate * tick))
        with Progress(
            TextColumn("{task.description:<34}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            offered = progress.add_task("offered by the application", total=records)
            landed = progress.add_task("landed in AISentinelAudit_CL", total=records)
            started = time.perf_counter()
            async with forwarder:
                for i in range(0, records, per_tick):
                    if i <= throttle_at < i + per_tick:
                        emu.faults.fail_next(4, 429, retry_after=1)
                        progress.console.print(
                            "[yellow]⚠ injected throttling: the next 4 requests get 429 + Retry-After: 1[/]"
                        )
                    for entry in entries[i : i + per_tick]:
                        forwarder.forward(entry)
                    progress.update(offered, completed=min(i + per_tick, records))
                    progress.update(landed, completed=emu.count(emu.table))
                    await anyio.sleep(tick)
            elapsed = time.perf_counter() - started
            progress.update(landed, completed=emu.count(emu.table))
        stats = forwarder.statistics()
        landed_rows = emu.rows(emu.table)
        emu_stats = emu.stats()
        _summary(console, stats, sink.durations, emu_stats, elapsed)
        _show_rows(console, landed_rows)
        report = verify_chain(landed_rows, previous_hash="")
        chain_ok = report.ok and report.rows == len(landed_rows)
        if chain_ok:
            console.print(f"[green]✓ hash chain verified over all {report.rows:,} landed rows[/]")
        else:
            console.print(f"[red]✗ hash chain broken: {report}[/]")
        try:
            reports = await anyio.to_thread.run_sync(lambda: emu.run_rules(since=entries[0].timestamp))
        except QueryError as exc:  # no KQL engine here (duckdb-kql needs Python 3.11+): say so, go on
            console.print(f"[yellow]! the shipped analytics rules were not run: {exc.message}[/]")
            attacker_flagged = True
        else:
            attacker_flagged = _show_rules(console, reports)
        ok = (
            len(landed_rows) == stats.sent
            and stats.dropped_total == 0
            and stats.sent + stats.filtered == stats.offered == records
            and chain_ok
            and attacker_flagged
        )
        if ok:
            console.print(f"[bold green]✓ all {stats.sent:,} rows landed; nothing lost.[/]")
        else:
            console.print(
                f"[bold red]✗ {len(landed_rows):,} rows landed, {stats.sent:,} reported sent, "
                f"dropped {dict(stats.dropped)}, unconfirmed {stats.unconfirmed:,}[/]"
            )
        return ok


def _show_rules(console: Console, reports: Sequence[RuleReport]) -> bool:
    """The shipped analytics rules, run over the landed rows as Sentinel would have every queryFrequency since
    the first record: which fire, on which sessions. Whether the burst rule named the attacker."""
    table = Table(
        title="Shipped analytics rules over the landed rows (KQL on DuckDB, each scheduled run)",
    )
    table.add_column("Rule")
    table.add_column("Result")
    table.add_column("Alerts", justify="right")
    table.add_column("Sessions")
    attacker_flagged = False
    for report in reports:
        if report.rule.kind != "analytics":
            continue
        sessions = list(dict.fromkeys(str(a.custom_details.get("SessionId", "")) for a in report.alerts))
        sessions = [x for x in sessions if x]
        if ATTACKER in sessions:
            sessions = [f"[bold]{ATTACKER}[/]", *(x for x in sessions if x != ATTACKER)]
            attacker_flagged |= report.rule.source.endswith("/HighSeverityBurstInSession.yaml")
        shown = ", ".join(sessions[:3]) + (f" +{len(sessions) - 3} more" if len(sessions) > 3 else "")
        result = (
            "[red]error[/]" if report.error else "[bold red]fires[/]" if report.fired else "[green]quiet[/]"
        )
        table.add_row(report.rule.name.removeprefix("AI audit - "), result, str(len(report.alerts)), shown)
    console.print(table)
    for report in reports:
        if report.error:
            console.print(f"[red]{report.rule.name}: {report.error}[/]", highlight=False)
    return attacker_flagged


def _summary(
    console: Console, stats: ForwarderStatistics, durations: list[float], emu_stats: Any, elapsed: float
) -> None:
    table = Table(title="Forwarder summary", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    ms = sorted(d * 1000 for d in durations) or [0.0]
    wire, raw = emu_stats.bytes_received, emu_stats.bytes_decompressed
    rows = [
        ("offered", f"{stats.offered:,}"),
        ("sent (delivered)", f"{stats.sent:,}"),
        ("dropped", ", ".join(f"{r}: {n:,}" for r, n in stats.dropped.items()) or "0"),
        ("unconfirmed (landing unknown)", f"{stats.unconfirmed:,}"),
        ("batches sent / failed", f"{stats.batches_sent:,} / {stats.batches_failed:,}"),
        (
            "requests answered 204 / 429",
            f"{emu_stats.by_status.get(204, 0):,} / {emu_stats.by_status.get(429, 0)}",
        ),
        ("batch latency p50 / p99", f"{statistics.median(ms):.1f} ms / {ms[int(len(ms) * 0.99) - 1]:.1f} ms"),
        ("bytes on the wire (gzip)", f"{wire:,}"),
        ("JSON bytes", f"{raw:,}"),
        ("gzip ratio", f"{raw / wire:.1f} : 1" if wire else "-"),
        ("elapsed", f"{elapsed:.1f} s ({stats.sent / elapsed:,.0f} rows/s, paced by the simulated app)"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def _show_rows(console: Console, rows: Sequence[Mapping[str, Any]]) -> None:
    table = Table(title="A few landed rows (AISentinelAudit_CL)")
    for column in ("TimeGenerated", "SessionId", "Severity", "DetectorId", "Summary", "Hash"):
        table.add_column(column, no_wrap=column != "Summary")
    for row in [r for r in rows if r["Severity"] in ("High", "Critical")][:3] + list(rows[:2]):
        table.add_row(
            str(row["TimeGenerated"])[:19],
            str(row["SessionId"]),
            str(row["Severity"]),
            str(row["DetectorId"]),
            str(row["Summary"])[:48],
            str(row["Hash"])[:10] + "…",
        )
    console.print(table)


@click.command()
@click.option("--records", default=20_000, show_default=True, help="Audit records to simulate.")
@click.option("--rate", default=4_000, show_default=True, help="Records per second the simulated app emits.")
@click.option("--seed", default=7, show_default=True, help="Seed of the simulation.")
def demo(records: int, rate: int, seed: int) -> None:
    """Forward simulated audit records to the embedded emulator and show what landed (no Azure needed)."""
    if records < 100:
        raise click.BadParameter("at least 100 records", param_hint="--records")
    console = Console()
    ok = anyio.run(_run, console, records, seed, rate)
    raise SystemExit(0 if ok else 1)
