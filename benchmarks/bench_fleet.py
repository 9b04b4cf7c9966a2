"""A fleet on one DCR: N forwarder processes with the library defaults against one rate-limited emulator.

Each scenario starts one emulator in its own process (TLS, rows stored in a SQLite file, 50 ms added latency,
the DCR's rate limit scaled down from 12,000 requests and 2 GB a minute) and N client processes. Each client
runs a ``BufferingForwarder`` around an ``AzureSentinelForwarder`` with the library defaults (only the
endpoint, rule id, ``EmulatorCredential`` and the emulator's CA are set; ``spool=`` a temporary directory in
spool mode), offers R realistic rows a second for T seconds (each row built at its offer time, so its
``TimeGenerated`` is the offer time), closes it (the drain), and prints its final ``statistics()`` as JSON.
The parent then reads what landed from the emulator: its counters over the admin API (requests by status,
JSON bytes) and its stored rows straight from the SQLite file (``_IngestedAt``, the time the emulator
accepted the request, against each row's ``TimeGenerated``; ``ChainId`` tells the instances apart).

Reported per scenario: landed share (distinct rows stored / rows offered), rows dropped by reason,
unconfirmed and still spooled at close, 429s, accepted requests per minute (fleet, against the DCR's limit;
per instance, against its budget, 30 small requests a minute by default), rows per accepted request, and
p50/p99 delivery latency (offered -> accepted). Plus one instance alone (no rate limit) at 300, 1,000 and
3,000 rows/s: requests per MB of JSON. Each client records the ``Retry-After`` of every 429 (wrapping the
retry policy's ``parse_retry_after``) and what its throttle gate was given (wrapping ``close_for``):
measurement only, the library is not changed. The section names the library's commit and a hash of its
sources before and after each scenario, and says if another run of this benchmark overlapped.

Run: ``python benchmarks/bench_fleet.py`` (11 to 13 minutes on 2 cores; ``--seconds`` sets T, 45 by
default). ``--quick`` is a smoke run (a quarter of the processes, 6 s each, the DCR's limit scaled so that
it throttles; about 5 minutes; writes nothing to the docs). ``--scenario NAME`` (repeatable) runs only those
scenarios (``--list`` names them); ``--no-write`` leaves docs/benchmarks.md alone. It rewrites the "fleet"
section of docs/benchmarks.md, keeping any hand-written text after ``<!-- fleet:notes -->`` at its end. The
tables are also written to /tmp/fleet-results.md (and every figure to /tmp/fleet-results.json).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import shutil
import signal
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from _common import DOCS, audit_rows, machine, write_section

RESULTS = Path("/tmp/fleet-results.md")
PACKAGE = Path(__file__).resolve().parent.parent / "sentinel_forwarder"
LATENCY = 0.05  # seconds the emulator adds to every answer
DCR_REQUESTS = 12_000  # the service's documented limits per DCR and minute
DCR_BYTES = 2_000_000_000
MAX_INTERVAL = 5.0  # the library's default max_interval
TICK = 0.01  # seconds between the clients' offers


@dataclass(frozen=True)
class Scenario:
    name: str
    processes: int
    rate: float  # rows/s per process
    limit: int | None  # the DCR's requests a minute (None: no limit)
    spool: bool = False
    burst: bool = False  # process 0 offers 10x its rate for BURST_SECONDS from T/3
    budget: float | None = None  # max_requests_per_minute; None: the library default
    single: bool = False  # the single-instance requests-per-MB table


BURST_SECONDS = 10.0
BURST_FACTOR = 10


def scenarios() -> list[Scenario]:
    fleet = []
    for spool in (False, True):
        mode = "spool" if spool else "mem"
        fleet += [
            Scenario(f"8x1000@600-{mode}", 8, 1000, 600, spool),
            Scenario(f"8x1000@400-{mode}", 8, 1000, 400, spool),
            Scenario(f"16x500@600-{mode}", 16, 500, 600, spool),
            Scenario(f"burst-8x1000@600-{mode}", 8, 1000, 600, spool, burst=True),
        ]
    fleet += [Scenario("8x1000@600-mem-nobudget", 8, 1000, 600, budget=0)]
    single = [Scenario(f"single-{r}", 1, r, None, single=True) for r in (300, 1000, 3000)]
    return fleet + single


def quick_version(s: Scenario, seconds: float) -> Scenario:
    """A smoke run: a quarter of the processes (at least 2), the DCR's limit scaled alike and to the run's
    length (so that a few seconds fill the 60 s window and the service throttles)."""
    if s.single:
        return s
    n = max(2, s.processes // 4)
    assert s.limit is not None
    return replace(s, processes=n, limit=max(1, int(s.limit * n / s.processes * seconds / 60)))


# -- the client process --------------------------------------------------------------------------------------


def child(cfg: dict[str, Any]) -> None:
    """One instance: a forwarder with the defaults, R rows/s for T s, close, final statistics on stdout."""
    watchdog = threading.Timer(cfg["seconds"] + 240, lambda: os._exit(3))
    watchdog.daemon = True
    watchdog.start()
    import anyio

    from sentinel_forwarder import AuditEntry, AzureSentinelForwarder, BufferingForwarder
    from sentinel_forwarder._core import throttle
    from sentinel_forwarder._sinks.azure import retry
    from sentinel_forwarder.testing import EmulatorCredential

    asked: list[float | None] = []
    close_for = throttle.ThrottleGate.close_for

    def recording_close_for(self: Any, retry_after: float | None) -> float:
        asked.append(retry_after)  # measurement only: what the service asked for, then the library's code
        return close_for(self, retry_after)

    throttle.ThrottleGate.close_for = recording_close_for  # type: ignore[method-assign]

    # And every Retry-After the service sent, as the retry policy reads it off a 429 (measurement only).
    wire: list[tuple[float, float | None]] = []
    parse = retry.parse_retry_after

    def recording_parse(headers: Any, **kwargs: Any) -> float | None:
        value = parse(headers, **kwargs)
        wire.append((time.time(), value))
        return value

    retry.parse_retry_after = recording_parse

    seconds, rate = float(cfg["seconds"]), float(cfg["rate"])
    burst_from = seconds / 3 if cfg["burst"] else float("inf")
    burst_len = min(BURST_SECONDS, seconds / 3)

    def due(elapsed: float) -> int:
        extra = min(max(elapsed - burst_from, 0.0), burst_len) * rate * (BURST_FACTOR - 1)
        return int(rate * elapsed + extra)

    template = audit_rows(1000)
    large: int | None = None

    async def run() -> dict[str, Any]:
        sink = AzureSentinelForwarder(
            cfg["endpoint"], EmulatorCredential(), rule_id=cfg["rule_id"], connection_verify=cfg["ca"]
        )
        options: dict[str, Any] = {}
        if cfg["spool"]:
            options["spool"] = cfg["spool"]
        if cfg["budget"] is not None:
            options["max_requests_per_minute"] = cfg["budget"]
        fwd = BufferingForwarder(sink, **options)
        batching = getattr(fwd, "_batching", None)  # requests this large skip the budget (None: unknown)
        nonlocal large
        large = getattr(batching, "large", getattr(batching, "max_request_rows", None))
        rates: list[float] = []
        throttled_samples = 0
        samples = 0
        max_depth = 0
        async with fwd:
            print(json.dumps({"ready": True}), flush=True)
            await anyio.to_thread.run_sync(sys.stdin.readline)
            wall0, t0 = time.time(), time.monotonic()
            offered, next_sample = 0, 1.0
            while (elapsed := time.monotonic() - t0) < seconds:
                k = due(elapsed) - offered
                if k > 0:
                    stamp = datetime.now(timezone.utc)
                    for i in range(offered, offered + k):
                        t = template[i % 1000]
                        fwd.forward(
                            AuditEntry(
                                t.summary,
                                severity=t.severity,
                                detector_id=t.detector_id,
                                session_id=t.session_id,
                                timestamp=stamp,
                            )
                        )
                    offered += k
                if elapsed >= next_sample:
                    next_sample += 1.0
                    health = fwd.health()
                    samples += 1
                    throttled_samples += health.throttled
                    if health.request_rate is not None:
                        rates.append(health.request_rate)
                    max_depth = max(max_depth, health.backlog)
                await anyio.sleep(TICK)
            offer_end = time.monotonic()
            target = due(seconds)
        closed = time.monotonic()
        stats = fwd.statistics()
        usage = os.times()
        out: dict[str, Any] = {
            f.name: getattr(stats, f.name) for f in fields(stats) if f.name not in ("dropped", "last_error")
        }
        out["dropped"] = {str(k): v for k, v in stats.dropped.items() if v}
        out.update(
            last_error=stats.last_error,
            target=target,
            wall0=wall0,
            offer_seconds=offer_end - t0,
            close_seconds=closed - offer_end,
            asked=asked,
            wire=wire,
            rate_min=min(rates) if rates else None,
            rate_mean=statistics.fmean(rates) if rates else None,
            throttled_share=throttled_samples / samples if samples else 0.0,
            max_backlog=max_depth,
            cpu=usage.user + usage.system,
            default_budget=inspect.signature(BufferingForwarder)
            .parameters["max_requests_per_minute"]
            .default,
            large=large,
        )
        return out

    result = anyio.run(run)
    print(json.dumps(result), flush=True)


# -- the parent ----------------------------------------------------------------------------------------------


def admin(info: dict[str, Any], path: str, body: dict[str, Any] | None = None) -> Any:
    """The emulator's admin API over TLS (``_common.set_faults``/``emulator_stats`` speak plain HTTP)."""
    context = ssl.create_default_context(cafile=info["ca_path"])
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{info['endpoint']}/_emulator/{path}",
        data=data,
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=10, context=context) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


@contextmanager
def emulator(directory: Path, limit: int | None) -> Iterator[dict[str, Any]]:
    """The emulator in its own process: TLS, rows kept in a SQLite file, 50 ms latency, the scaled limit."""
    log = (directory / "emulator.log").open("w")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "sentinel_forwarder.cli", "emulator", "--port", "0", "--tls", "--json"),
            *("--db", str(directory / "emulator.db"), "--cert-dir", str(directory / "certs")),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info: dict[str, Any] = json.loads(proc.stdout.readline())
        faults: dict[str, Any] = {"reset": {}, "latency": {"seconds": LATENCY}}
        if limit is not None:
            faults["rate_limit"] = {
                "requests_per_minute": limit,
                "bytes_per_minute": DCR_BYTES * limit // DCR_REQUESTS,
            }
        admin(info, "faults", faults)
        yield info
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def fleet_run(s: Scenario, seconds: float, work: Path) -> dict[str, Any]:
    """Run one scenario. -> the clients' results, the emulator's counters and what landed."""
    with emulator(work, s.limit) as info:
        procs: list[subprocess.Popen[str]] = []
        logs = []
        try:
            for k in range(s.processes):
                spool = work / f"spool-{k}"
                if s.spool:
                    spool.mkdir()
                cfg = {
                    "endpoint": info["endpoint"],
                    "rule_id": info["rule_id"],
                    "ca": info["ca_path"],
                    "seconds": seconds,
                    "rate": s.rate,
                    "burst": s.burst and k == 0,
                    "spool": str(spool) if s.spool else None,
                    "budget": s.budget,
                }
                log = (work / f"client-{k}.log").open("w")
                logs.append(log)
                procs.append(
                    subprocess.Popen(
                        [sys.executable, __file__, "--child", json.dumps(cfg)],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=log,
                        text=True,
                        cwd=Path(__file__).parent,
                    )
                )
            for k, p in enumerate(procs):  # all imported and open before anyone offers a row
                assert p.stdout is not None
                line = p.stdout.readline()
                if not line:
                    raise RuntimeError(f"client {k} died: {(work / f'client-{k}.log').read_text()[-2000:]}")
            before = admin(info, "stats")
            started = time.time()
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            clients = []
            for k, p in enumerate(procs):
                out, _ = p.communicate(timeout=seconds + 300)
                lines = [x for x in out.splitlines() if x.startswith("{")]
                if p.returncode or not lines:
                    log_text = (work / f"client-{k}.log").read_text()[-2000:]
                    raise RuntimeError(f"client {k} exited {p.returncode}: {log_text}")
                clients.append(json.loads(lines[-1]))
            ended = time.time()
            deadline = time.monotonic() + 30
            while admin(info, "stats")["in_flight"] and time.monotonic() < deadline:
                time.sleep(0.2)
            after = admin(info, "stats")
            landed = read_landed(work / "emulator.db", info["table"])
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(5)
            for log in logs:
                log.close()
    return {
        "clients": clients,
        "before": before,
        "after": after,
        "started": started,
        "ended": ended,
        "landed": landed,
    }


def read_landed(db: Path, table: str) -> dict[str, Any]:
    """What the emulator stored: per request (instance, time, rows) and each row's delivery latency."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cur = conn.execute(
            f'SELECT _IngestedAt, json_extract(_Row, "$.TimeGenerated"), json_extract(_Row, "$.ChainId"), '
            f'json_extract(_Row, "$.Id") FROM "{table}"'
        )
        parse = datetime.fromisoformat
        cache: dict[str, float] = {}
        requests: Counter[tuple[str, float]] = Counter()
        latencies: list[float] = []
        ids: set[str] = set()
        rows = 0
        for ingested, generated, chain, row_id in cur:
            t = cache.get(ingested)
            if t is None:
                t = cache[ingested] = parse(ingested).timestamp()
            g = cache.get(generated)
            if g is None:
                g = cache[generated] = parse(generated).timestamp()
            requests[(chain, t)] += 1
            latencies.append(t - g)
            ids.add(row_id)
            rows += 1
            if len(cache) > 200_000:
                cache.clear()
    finally:
        conn.close()
    latencies.sort()
    return {
        "rows": rows,
        "distinct": len(ids),
        "requests": [(c, t, n) for (c, t), n in requests.items()],
        "latencies": latencies,
    }


def quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def peak_per_minute(times: list[float]) -> int:
    """The most requests in any sliding 60-second window."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - 60:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def timeline(times: list[float], start: float, step: float = 10.0) -> list[int]:
    """Accepted requests in each *step* seconds from "go"."""
    counts = Counter(int((t - start) // step) for t in times)
    return [counts.get(i, 0) for i in range(max(counts, default=-1) + 1)]


def summarise(s: Scenario, seconds: float, run: dict[str, Any]) -> dict[str, Any]:
    clients, landed = run["clients"], run["landed"]
    before, after = run["before"], run["after"]

    def status(code: str) -> int:
        return int(after["by_status"].get(code, 0)) - int(before["by_status"].get(code, 0))

    offered = sum(c["offered"] for c in clients)
    dropped: Counter[str] = Counter()
    for c in clients:
        dropped.update(c["dropped"])
    requests = landed["requests"]
    times = [t for _, t, _ in requests]
    per_chain: dict[str, list[float]] = defaultdict(list)
    small_per_chain: dict[str, list[float]] = defaultdict(list)
    large = clients[0]["large"]
    for chain, t, n in requests:
        per_chain[chain].append(t)
        if large is None or n < large:
            small_per_chain[chain].append(t)
    start = run["started"]
    span = (max(times) - start) / 60 if times else float("nan")  # minutes from "go" to the last acceptance
    rows_per_request = sorted(n for _, _, n in requests)
    asked = [a for c in clients for a in c["asked"]]
    asked_numbers = sorted(a for a in asked if a is not None)
    wire = [(t, v) for c in clients for t, v in c["wire"]]
    sent = sorted(v for _, v in wire if v is not None)
    lat = landed["latencies"]
    json_bytes = int(after["bytes_decompressed"]) - int(before["bytes_decompressed"])
    return {
        "name": s.name,
        "scenario": asdict(s),
        "seconds": seconds,
        "offered": offered,
        "target": sum(c["target"] for c in clients),
        "landed_rows": landed["rows"],
        "landed": landed["distinct"],
        "duplicates": landed["rows"] - landed["distinct"],
        "share": landed["distinct"] / offered if offered else float("nan"),
        "sent": sum(c["sent"] for c in clients),
        "dropped": dict(dropped),
        "unconfirmed": sum(c["unconfirmed"] for c in clients),
        "spooled": sum(c["spooled"] for c in clients),
        "queue_depth": sum(c["queue_depth"] for c in clients),
        "status_204": status("204"),
        "status_429": status("429"),
        "other_statuses": {
            k: v - int(before["by_status"].get(k, 0))
            for k, v in after["by_status"].items()
            if k not in ("204", "429") and v - int(before["by_status"].get(k, 0))
        },
        "accepted_requests": len(requests),
        "fleet_per_min": len(requests) / span if times else float("nan"),
        "fleet_peak_60s": peak_per_minute(times),
        "instance_per_min": statistics.fmean(len(v) / span for v in per_chain.values()) if times else 0,
        "instance_peak_60s": max((peak_per_minute(v) for v in per_chain.values()), default=0),
        "instance_small_peak_60s": max((peak_per_minute(v) for v in small_per_chain.values()), default=0),
        "large": large,
        "rows_per_request": landed["rows"] / len(requests) if requests else float("nan"),
        "rows_per_request_p50": quantile(rows_per_request, 0.5),
        "json_mb": json_bytes / 1e6,
        "requests_per_mb": len(requests) / (json_bytes / 1e6) if json_bytes else float("nan"),
        "p50": quantile(lat, 0.5),
        "p99": quantile(lat, 0.99),
        "max_latency": lat[-1] if lat else float("nan"),
        # Over the rows offered: a row that never landed counts as infinitely late.
        "p99_offered": lat[int(0.99 * offered)] if int(0.99 * offered) < len(lat) else float("inf"),
        "timeline": timeline(times, start),
        "throttles": sum(c["throttles"] for c in clients),
        "throttled_seconds_mean": statistics.fmean(c["throttled_seconds"] for c in clients),
        "asked_max": asked_numbers[-1] if asked_numbers else None,
        "asked_p50": quantile(asked_numbers, 0.5) if asked_numbers else None,
        "asked_unsaid": sum(a is None for a in asked),
        "service_asked_max": sent[-1] if sent else None,
        "service_asked_p50": quantile(sent, 0.5) if sent else None,
        "service_answers": len(wire),
        "first_429": min(t for t, _ in wire) - start if wire else None,
        "rate_min": min((c["rate_min"] for c in clients if c["rate_min"] is not None), default=None),
        "rate_mean": statistics.fmean(c["rate_mean"] for c in clients if c["rate_mean"] is not None)
        if any(c["rate_mean"] is not None for c in clients)
        else None,
        "throttled_share": statistics.fmean(c["throttled_share"] for c in clients),
        "close_max": max(c["close_seconds"] for c in clients),
        "offer_seconds_max": max(c["offer_seconds"] for c in clients),
        "max_backlog": max(c["max_backlog"] for c in clients),
        "client_cpu": sum(c["cpu"] for c in clients),
        "wall": run["ended"] - run["started"],
        "errors": sorted({c["last_error"] for c in clients if c["last_error"]})[:3],
        "budget": clients[0]["default_budget"] if s.budget is None else s.budget,
    }


# -- reporting -----------------------------------------------------------------------------------------------


def fmt_s(x: float | None) -> str:
    if x == float("inf"):
        return "never"
    return "-" if x is None or x != x else f"{x:.2f} s" if x < 10 else f"{x:.1f} s"


def drops(r: dict[str, Any]) -> str:
    return ", ".join(f"{v:,} {k}" for k, v in sorted(r["dropped"].items())) or "0"


def fleet_ok(r: dict[str, Any]) -> dict[str, bool]:
    limit = r["scenario"]["limit"]
    asked = r["service_asked_max"] or 0.0
    budget = r["budget"]
    return {
        "landed": r["landed"] == r["offered"]
        and not r["dropped"]
        and not r["spooled"]
        and not r["unconfirmed"],
        "rate": r["fleet_peak_60s"] <= limit
        and (not budget or r["instance_small_peak_60s"] <= budget + max(budget / 30, 1)),  # + the bucket
        "latency": r["p99_offered"] <= MAX_INTERVAL + asked,
    }


def yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def tables(results: list[dict[str, Any]]) -> str:
    fleet = [r for r in results if not r["scenario"]["single"]]
    single = [r for r in results if r["scenario"]["single"]]
    out: list[str] = []
    budget = next((r["budget"] for r in results if r["scenario"]["budget"] is None), "?")
    large = next((f"{r['large']:,}" for r in results if r["large"]), "?")
    if fleet:
        out += [
            "**What landed.** Offered: rows the clients passed to `forward()`; landed: distinct rows the "
            "emulator stored; dropped, unconfirmed, spooled: summed over the clients' final `statistics()` "
            "after close; close: the slowest client's `close()` (the drain).",
            "",
            "| scenario | offered | landed | share | dropped (reason) | unconfirmed | spooled at close "
            "| duplicates | close |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        for r in fleet:
            out.append(
                f"| {r['name']} | {r['offered']:,} | {r['landed']:,} | {r['share']:.2%} | {drops(r)} "
                f"| {r['unconfirmed']:,} | {r['spooled']:,} | {r['duplicates']:,} | {fmt_s(r['close_max'])} |"
            )
        out += [
            "",
            "**Requests and latency.** 429s: answers the emulator gave, first at (seconds after the start), "
            "with the largest (median) `Retry-After` it sent; gate closed: deliveries that closed the "
            "clients' throttle gate (`statistics().throttles`); accepted/min: 204s per minute from the "
            "start to the last acceptance (fleet, and the mean instance), peak: the most in any 60 s "
            "window (fleet against the DCR's limit; busiest instance, all requests and small ones, "
            f"those under {large} rows that wait for the budget, against its budget of {budget}); "
            "rows/request: mean (median); latency: offer to acceptance by the emulator, per row; rate: "
            "the lowest `health().request_rate` seen (mean over 1 s samples); paused: share of 1 s "
            "samples with `health().throttled`.",
            "",
            "| scenario | 429s | first at | Retry-After | gate closed | accepted/min fleet (peak / limit) "
            f"| per instance (peak; small / {budget}) | rows/request | p50 | p99 | max | rate min (mean) "
            "| paused |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in fleet:
            asked = (
                "-"
                if r["service_asked_max"] is None
                else f"{r['service_asked_max']:.0f} s ({r['service_asked_p50']:.0f} s)"
            )
            first = "-" if r["first_429"] is None else f"{r['first_429']:.0f} s"
            rate = "no budget" if r["rate_min"] is None else f"{r['rate_min']:.0f} ({r['rate_mean']:.0f})"
            out.append(
                f"| {r['name']} | {r['status_429']:,} | {first} | {asked} | {r['throttles']:,} "
                f"| {r['fleet_per_min']:.0f} ({r['fleet_peak_60s']} / {r['scenario']['limit']}) "
                f"| {r['instance_per_min']:.0f} ({r['instance_peak_60s']}; {r['instance_small_peak_60s']}) "
                f"| {r['rows_per_request']:,.0f} ({r['rows_per_request_p50']:,.0f}) "
                f"| {fmt_s(r['p50'])} | {fmt_s(r['p99'])} | {fmt_s(r['max_latency'])} | {rate} "
                f"| {r['throttled_share']:.0%} |"
            )
        out += [
            "",
            "**Targets per scenario.** Lands 100 %: every offered row stored, nothing dropped, unconfirmed "
            f"or left spooled; within the budget: fleet ≤ the DCR's limit and every instance's small "
            f"requests ≤ {budget} (+ the bucket's two seconds) in any 60 s window (large requests skip the "
            "budget by design; the no-budget run: fleet only); p99 ≤ 5 s + the "
            "largest Retry-After the service sent, over the rows offered (a row that never landed is "
            "never delivered: with less than 99 % landed, p99 is never); for reference, the p99 of the "
            "rows that did land against the same bound.",
            "",
            "| scenario | lands 100 % | within the budget | p99 ≤ 5 s + Retry-After | landed rows' p99 |",
            "|---|---|---|---|---|",
        ]
        for r in fleet:
            ok = fleet_ok(r)
            limit_p99 = MAX_INTERVAL + (r["service_asked_max"] or 0.0)
            out.append(
                f"| {r['name']} | {yes(ok['landed'])} ({r['share']:.2%}) | {yes(ok['rate'])} "
                f"| {yes(ok['latency'])} ({fmt_s(r['p99_offered'])} vs {fmt_s(limit_p99)}) "
                f"| {fmt_s(r['p99'])} ({'within' if r['p99'] <= limit_p99 else 'over'}) |"
            )
        out += [
            "",
            "**Timeline.** Requests the emulator accepted in each 10 s from the start (offering stops at T, "
            "then the drain).",
            "",
            "| scenario | accepted requests per 10 s |",
            "|---|---|",
        ]
        for r in fleet:
            out.append(f"| {r['name']} | {' · '.join(str(n) for n in r['timeline'])} |")
    if single:
        out += [
            "",
            "**One instance alone, paced** (defaults, no rate limit, 50 ms latency): requests per MB of JSON "
            "(decoded body bytes the emulator received, 10⁶ bytes; target ≤ 5 at 1,000 to 3,000 rows/s).",
            "",
            "| rows/s | offered | landed | requests | MB of JSON | requests per MB | rows/request "
            "| requests/min | p50 | p99 | ≤ 5 per MB |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in single:
            rate = r["scenario"]["rate"]
            target = "n/a" if rate < 1000 else yes(r["requests_per_mb"] <= 5)
            out.append(
                f"| {rate:,.0f} | {r['offered']:,} | {r['landed']:,} | {r['accepted_requests']:,} "
                f"| {r['json_mb']:.1f} | {r['requests_per_mb']:.2f} | {r['rows_per_request']:,.0f} "
                f"| {r['fleet_per_min']:.0f} | {fmt_s(r['p50'])} | {fmt_s(r['p99'])} | {target} |"
            )
    return "\n".join(out)


def conditions(
    seconds: float, quick: bool, load: list[str], mut: list[bool], wall: float, results: list[dict[str, Any]]
) -> str:
    busy = any(mut)
    versions = sorted({v for r in results for v in r["library"]})
    if len({v.split("(sources ")[-1] for v in versions}) == 1:
        commits = sorted({v.split(" (sources ")[0] for v in versions})
        library = (
            f"Library: commit {' / '.join(commits)}, sources {versions[0].split('(sources ')[-1][:-1]}. "
        )
    else:
        library = (
            "**The library's sources changed during the run** (another engineer's edits): "
            + "; ".join(f"{r['name']}: {' then '.join(r['library'])}" for r in results)
            + ". "
        )
    return (
        library
        + f"Machine: {machine()}, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB. "
        f"Load average before / after the run: {load[0]} / {load[-1]}"
        + (
            "; **another job (a mutation test using both cores) ran at the same time**"
            if busy
            else "; no other benchmark or test ran at the same time"
        )
        + (
            "; **another run of this benchmark overlapped "
            + ", ".join(r["name"] for r in results if r["overlap"])
            + "**"
            if any(r["overlap"] for r in results)
            else ""
        )
        + f". Whole run {wall / 60:.1f} min{' (quick smoke run)' if quick else ''}. "
        f"Each scenario: one emulator process (TLS, rows stored in SQLite, {LATENCY * 1000:.0f} ms added "
        "latency, the DCR's limits scaled from 12,000 requests and 2 GB a minute to the number of requests "
        "given, bytes alike) and N client processes, each a `BufferingForwarder` with the library defaults "
        f"(`spool=` a temporary directory in spool mode), offering its rows for T = {seconds:g} s in 10 ms "
        "ticks, then closing it (default `drain_timeout`, 20 s). Burst: client 0 offers 10x for "
        f"{min(BURST_SECONDS, seconds / 3):g} s from T/3. The DCR's rate limit is a sliding 60 s window, so "
        f"runs shorter than a minute see the first window fill up, not a long steady state."
    )


def library_version() -> str:
    """The library as the clients import it: its commit, and a hash of its sources (it may be edited)."""
    git = ["git", "-C", str(PACKAGE.parent)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "sentinel_forwarder"], capture_output=True, text=True
    )
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(path.read_bytes())
    extra = " + uncommitted changes" if dirty.stdout.strip() else ""
    return f"{head.strip()}{extra} (sources {digest.hexdigest()[:10]})"


def others() -> int:
    """Other fleet benchmark runs on the machine (not this one or its clients)."""
    mine, pid = set(), os.getpid()
    while pid > 1:  # this process and its ancestors (``timeout``, a shell) are not others
        mine.add(pid)
        try:
            pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            break
    count = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in mine:
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        python = b"python" in cmd[0]
        if python and any(c.endswith(b"bench_fleet.py") for c in cmd) and b"--child" not in cmd:
            count += 1
    return count


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


NOTES = "<!-- fleet:notes -->"


def kept_notes() -> str:
    """Hand-written text at the end of the docs section, after ``<!-- fleet:notes -->``: kept as it is."""
    text = DOCS.read_text() if DOCS.exists() else ""
    section = text.partition("<!-- fleet:start -->")[2].partition("<!-- fleet:end -->")[0]
    notes = section.partition(NOTES)
    return "\n\n" + NOTES + notes[2].rstrip() if notes[1] else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few processes, short, no docs")
    parser.add_argument("--scenario", action="append", default=[], help="run only this scenario (repeatable)")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--seconds", type=float, default=None, help="T, seconds each client offers rows")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    todo = scenarios()
    if args.list:
        for s in todo:
            print(s.name)
        return
    if args.scenario:
        unknown = set(args.scenario) - {s.name for s in todo}
        if unknown:
            parser.error(f"unknown scenario(s) {sorted(unknown)}; --list names them")
        todo = [s for s in todo if s.name in args.scenario]
    seconds = args.seconds or (6.0 if args.quick else 45.0)
    if args.quick:
        todo = [quick_version(s, seconds) for s in todo]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the finally blocks: stop every process
    load, mut = [load_average()], [Path("/work/mut").exists()]
    wall0 = time.time()
    results = []
    for s in todo:
        work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
        try:
            t = time.time()
            version, overlap = library_version(), others()
            r = summarise(s, seconds, fleet_run(s, seconds, work))
            r["library"] = sorted({version, library_version()})
            r["overlap"] = max(overlap, others())
            mut.append(Path("/work/mut").exists())
            print(
                f"{s.name}: {time.time() - t:.0f} s, share {r['share']:.2%}, dropped {drops(r)}, "
                f"spooled {r['spooled']}, unconfirmed {r['unconfirmed']}, 429s {r['status_429']}, "
                f"{r['fleet_per_min']:.0f} req/min (peak {r['fleet_peak_60s']}), "
                f"{r['rows_per_request']:.0f} rows/req, {r['requests_per_mb']:.2f} req/MB, "
                f"p50 {r['p50']:.2f} s p99 {r['p99']:.2f} s, Retry-After max {r['asked_max']}, "
                f"client CPU {r['client_cpu']:.0f} s, load {load_average()}",
                flush=True,
            )
            results.append(r)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    load.append(load_average())
    body = conditions(seconds, args.quick, load, mut, time.time() - wall0, results) + "\n\n" + tables(results)
    print(body)
    RESULTS.write_text("# Fleet benchmark\n\n" + body + "\n")
    Path("/tmp/fleet-results.json").write_text(json.dumps(results, indent=1, default=str))
    if args.quick or args.no_write:
        print(f"(docs/benchmarks.md left alone; tables in {RESULTS})")
    else:
        write_section("fleet", "## Fleet\n\n" + body + kept_notes())


if __name__ == "__main__":
    main()
