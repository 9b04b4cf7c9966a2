"""Throughput, client CPU, requests per MB and the application loop's lag, every contender in one run.

Against the emulator in sink mode in its own process, with 0 ms and 50 ms added latency, in interleaved
rounds (medians): our defaults, our best tuned configuration, our defaults without the ``fast`` extra, the
seed design (one 100-row ``upload()`` at a time), the raw SDK's ``upload()`` of a list, OpenTelemetry's
``BatchLogRecordProcessor`` with an exporter that uploads through the SDK, and a LiteLLM-style batch logger.
Then, in the same run: a 1 ms ticker's lag on the application's loop while the forwarder ships 15,000
rows/s and at full speed, the CPU ceiling of encoding and compressing on one core, and the client CPU of one
request through the SDK's default transport and through ours.

Run: ``python benchmarks/bench_throughput.py`` (about 4 minutes; ``--quick`` for a smoke run of about 1).
It rewrites the "throughput" section of docs/benchmarks.md and the figures docs/bench_throughput.png and
docs/bench_lag.png (with the ``bench`` extra's matplotlib). ``--sweep`` also re-runs the
``max_batches_in_flight`` sweep (the "sweep" section).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from typing import Any

import anyio
from _common import DOCS, audit_rows, emulator_process, emulator_stats, machine, set_faults, write_section
from _contenders import (
    Run,
    encode_ceiling,
    litellm_style,
    otel_batch,
    ours,
    per_request_cpu,
    raw_sdk,
    seed_design,
    sink_for,
)

from sentinel_forwarder import BufferingForwarder
from sentinel_forwarder._model import wire as _wire
from sentinel_forwarder._sinks.azure import sink as _azure

TUNED: dict[str, Any] = {
    "max_batch_size": 1000,
    "max_batches_in_flight": 8,
    "capacity": 50_000,
}
NAMES = {
    "defaults": "ours, defaults",
    "tuned": "ours, tuned (1,000-row batches, 8 in flight, 50k buffer)",
    "nochain": "ours, defaults, without the hash chain (`chain=False`)",
    "stdlib": "ours, defaults, without the `fast` extra (json + zlib)",
    "seed": "seed design: one 100-row `upload()` at a time",
    "raw_sdk": "raw SDK: `upload(list)` of every row",
    "otel": "OpenTelemetry `BatchLogRecordProcessor` + SDK exporter",
    "litellm": "LiteLLM-style: list flushed at 512 rows / 5 s, sequential",
}


def contenders(quick: bool, latency: float) -> dict[str, Callable[[dict[str, Any]], Run]]:
    """Each contender and how many rows it gets: enough for a few seconds, fewer for the slow ones."""
    scale = 0.1 if quick else 1.0
    big = int(60_000 * scale)
    slow = int((3_000 if latency else 10_000) * scale)
    medium = int((15_000 if latency else 30_000) * scale)
    return {
        "defaults": lambda info: anyio.run(ours, info, big),
        "tuned": lambda info: anyio.run(lambda: ours(info, big, **TUNED)),
        "nochain": lambda info: anyio.run(lambda: ours(info, big, chain=False)),
        "stdlib": lambda info: stdlib_codec(lambda: anyio.run(ours, info, big // 2)),
        "seed": lambda info: seed_design(info, slow),
        "raw_sdk": lambda info: raw_sdk(info, medium),
        "otel": lambda info: otel_batch(info, medium),
        "litellm": lambda info: anyio.run(litellm_style, info, medium, backend="asyncio"),
    }


def stdlib_codec(fn: Callable[[], Run]) -> Run:
    """Run *fn* with the standard library's codec, as without the ``fast`` extra."""
    saved = _azure.CODEC
    _azure.CODEC = _wire.STDLIB
    try:
        return fn()
    finally:
        _azure.CODEC = saved


def unsliced(fn: Callable[[], Any], slice_rows: int = 10**9) -> Any:
    """Run *fn* with the sink serialising a whole batch without releasing the GIL (or every *slice_rows*)."""
    saved = _wire.GIL_SLICE
    _wire.GIL_SLICE = slice_rows
    try:
        return fn()
    finally:
        _wire.GIL_SLICE = saved


def gil_options(quick: bool, rounds: int) -> dict[str, dict[str, float]]:
    """The loop's lag while two threads serialise 2,500-row batches (no network): busy all the time, or 10 %
    of the time, with the GIL released every *n* rows or not at all. {option: {p50, p99}}."""
    import asyncio
    import threading

    entries = audit_rows(2500)
    seconds = 1.0 if quick else 2.0

    def worker(stop: threading.Event, duty: float) -> None:
        while not stop.is_set():
            t = time.perf_counter()
            _wire.plan(entries, _wire.CODEC)
            if duty < 1:
                time.sleep((time.perf_counter() - t) * (1 - duty) / duty)

    got: dict[str, list[dict[str, float]]] = {}
    for _round in range(rounds):
        for duty in (0.1, 1.0):
            for slice_rows in (10**9, 1000, 256):
                stop = threading.Event()
                threads = [threading.Thread(target=worker, args=(stop, duty)) for _ in range(2)]

                def measure(threads: list[threading.Thread] = threads) -> dict[str, float]:
                    for t in threads:
                        t.start()
                    return asyncio.run(idle_lag(seconds))  # type: ignore[arg-type]

                try:
                    lag = unsliced(measure, slice_rows)
                finally:
                    stop.set()
                    for t in threads:
                        t.join()
                name = f"{duty:.0%} busy, " + (
                    "not released" if slice_rows > 10**6 else f"every {slice_rows}"
                )
                got.setdefault(name, []).append(lag)
    return {n: {k: statistics.median(r[k] for r in runs) for k in ("p50", "p99")} for n, runs in got.items()}


def throughput(quick: bool, rounds: int) -> dict[float, dict[str, dict[str, float]]]:
    """{latency: {contender: {rows_per_s, cpu_us, per_mb}}}: medians over interleaved rounds."""
    out: dict[float, dict[str, dict[str, float]]] = {}
    for latency in (0.0, 0.05):
        runs: dict[str, list[tuple[Run, float]]] = {}
        with emulator_process(latency=latency) as info:
            todo = contenders(quick, latency)
            for _round in range(rounds):
                for name, fn in todo.items():
                    set_faults(info["endpoint"], {"reset": {}, "latency": {"seconds": latency}})
                    before = emulator_stats(info["endpoint"])
                    run = fn(info)
                    after = emulator_stats(info["endpoint"])
                    mb = (after["bytes_decompressed"] - before["bytes_decompressed"]) / 1e6
                    runs.setdefault(name, []).append((run, (after["requests"] - before["requests"]) / mb))
                    print(
                        f"  {latency * 1000:.0f} ms  {name:9s} {run.rows_per_s:9,.0f} rows/s "
                        f"{run.cpu_us_per_row:6.1f} µs/row",
                        flush=True,
                    )
        out[latency] = {
            name: {
                "rows_per_s": statistics.median(r.rows_per_s for r, _ in got),
                "cpu_us": statistics.median(r.cpu_us_per_row for r, _ in got),
                "per_mb": statistics.median(m for _, m in got),
            }
            for name, got in runs.items()
        }
    return out


# -- the application's loop -----------------------------------------------------------------------------


async def lag_run(
    info: dict[str, Any], rate: float | None, seconds: float, **options: Any
) -> dict[str, float]:
    """A 1 ms ticker's lag on the loop that calls forward(), at *rate* rows/s (None: as fast as it takes
    them), over *seconds*; also the rows/s delivered and the client CPU per row."""
    pool = audit_rows(20_000)
    rows = itertools.cycle(pool)
    lags: list[float] = []
    done = anyio.Event()

    async def ticker() -> None:
        while not done.is_set():
            t = time.perf_counter()
            await anyio.sleep(0.001)
            lags.append(time.perf_counter() - t - 0.001)

    fwd = BufferingForwarder(sink_for(info, options.get("max_batches_in_flight", 4)), **options)
    capacity = options.get("capacity", 10_000)
    sent = 0
    wall, cpu = time.perf_counter(), time.process_time()
    async with fwd, anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            if rate is None:
                while fwd.queue_depth() < capacity:
                    fwd.forward(next(rows))
                    sent += 1
                await anyio.sleep(0.001)
            else:
                for _ in range(int(elapsed * rate) - sent):
                    fwd.forward(next(rows))
                    sent += 1
                await anyio.sleep(0.005)
        done.set()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stats = fwd.statistics()
    assert stats.sent == sent and not stats.dropped, stats
    lags.sort()
    return {
        "p50": lags[len(lags) // 2] * 1e3,
        "p99": lags[int(len(lags) * 0.99)] * 1e3,
        "max": lags[-1] * 1e3,
        "rows_per_s": sent / wall,
        "cpu_us": cpu / sent * 1e6,
    }


async def idle_lag(seconds: float) -> dict[str, float]:
    lags: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        await anyio.sleep(0.001)
        lags.append(time.perf_counter() - t - 0.001)
    lags.sort()
    return {
        "p50": lags[len(lags) // 2] * 1e3,
        "p99": lags[int(len(lags) * 0.99)] * 1e3,
        "max": lags[-1] * 1e3,
    }


def loop_lag(quick: bool, rounds: int) -> dict[str, dict[str, float]]:
    seconds = 1.5 if quick else 4.0
    configs: dict[str, Callable[[dict[str, Any]], dict[str, float]]] = {}
    for rate_name, rate in (("15k", 15_000.0), ("full", None)):
        configs[f"defaults@{rate_name}"] = lambda info, r=rate: anyio.run(  # type: ignore[misc]
            lambda: lag_run(info, r, seconds), backend="asyncio"
        )
        configs[f"tuned@{rate_name}"] = lambda info, r=rate: anyio.run(  # type: ignore[misc]
            lambda: lag_run(info, r, seconds, **TUNED), backend="asyncio"
        )
        configs[f"nochain@{rate_name}"] = lambda info, r=rate: anyio.run(  # type: ignore[misc]
            lambda: lag_run(info, r, seconds, chain=False), backend="asyncio"
        )
        configs[f"stdlib@{rate_name}"] = lambda info, r=rate: stdlib_codec(  # type: ignore[misc]
            lambda: anyio.run(lambda: lag_run(info, r, seconds), backend="asyncio")  # type: ignore[arg-type]
        )
        configs[f"unsliced@{rate_name}"] = lambda info, r=rate: unsliced(  # type: ignore[misc]
            lambda: anyio.run(lambda: lag_run(info, r, seconds), backend="asyncio")  # type: ignore[arg-type]
        )
    got: dict[str, list[dict[str, float]]] = {}
    with emulator_process(latency=0.0) as info:
        got["idle"] = [anyio.run(idle_lag, seconds, backend="asyncio")]
        for _round in range(rounds):
            for name, fn in configs.items():
                got.setdefault(name, []).append(fn(info))
                r = got[name][-1]
                print(
                    f"  lag {name:15s} p50 {r['p50']:.2f} p99 {r['p99']:.2f} max {r['max']:.1f} ms "
                    f"{r.get('rows_per_s', 0):,.0f} rows/s",
                    flush=True,
                )
    return {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in got.items()}


def transport_cpu(quick: bool, rounds: int) -> dict[str, float]:
    from azure.monitor.ingestion import LogsIngestionClient

    from sentinel_forwarder._sinks.azure.transport import ingestion_transport
    from sentinel_forwarder.testing import EmulatorCredential

    n = 50 if quick else 300
    got: dict[str, list[float]] = {"sdk": [], "ours": []}
    with emulator_process(latency=0.0) as info:
        makers = {
            "sdk": lambda: LogsIngestionClient(info["endpoint"], EmulatorCredential()),
            "ours": lambda: LogsIngestionClient(
                info["endpoint"],
                EmulatorCredential(),
                transport=ingestion_transport(
                    info["endpoint"], pool_size=8, connection_timeout=5, read_timeout=10, verify=True
                ),
            ),
        }
        for _round in range(rounds):
            for name, make in makers.items():
                got[name].append(per_request_cpu(info, make, n))
    return {name: statistics.median(v) for name, v in got.items()}


# -- the report -----------------------------------------------------------------------------------------


def plots(table: dict[float, dict[str, dict[str, float]]], lag: dict[str, dict[str, float]]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no figures")
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name in table[0.0]:
        ax.plot(
            [0, 50],
            [table[0.0][name]["rows_per_s"], table[0.05][name]["rows_per_s"]],
            marker="o",
            label=NAMES[name],
        )
    ax.set_yscale("log")
    ax.set_xlabel("added latency per request (ms)")
    ax.set_ylabel("rows/s delivered (log scale)")
    ax.set_xticks([0, 50])
    ax.set_title("Throughput against latency")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(DOCS.parent / "bench_throughput.png", dpi=110)
    plt.close(fig)

    names = list(lag)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    width = 0.27
    for k, stat in enumerate(("p50", "p99", "max")):
        ax.bar(
            [i + (k - 1) * width for i in range(len(names))], [lag[n][stat] for n in names], width, label=stat
        )
    ax.axhline(5, color="red", linestyle="--", linewidth=1, label="target p99 ≤ 5 ms at 15k rows/s")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, fontsize=8)
    ax.set_ylabel("1 ms ticker's lag (ms)")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_title("The application's event loop while the forwarder ships")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(DOCS.parent / "bench_lag.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    contenders = list(table[0.0])
    ax.barh([NAMES[n] for n in contenders], [table[0.0][n]["cpu_us"] for n in contenders], color="tab:blue")
    ax.axvline(4, color="red", linestyle="--", linewidth=1, label="target ≤ 4 µs")
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("client CPU per row delivered (µs), 0 ms latency")
    ax.set_title("Client CPU per row")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(DOCS.parent / "bench_cpu.png", dpi=110)
    plt.close(fig)
    return True


def report(
    table: dict[float, dict[str, dict[str, float]]],
    lag: dict[str, dict[str, float]],
    ceiling: dict[str, float],
    transport: dict[str, float],
    gil: dict[str, dict[str, float]],
    rounds: int,
    seconds: float,
    figures: bool,
) -> str:
    fast, slow = table[0.0], table[0.05]
    lines = [
        f"Machine: {machine()}; codec {_wire.CODEC.name}. Emulator in sink mode (validates, stores "
        f"nothing) in its own process; rows of ~340 bytes of JSON; {rounds} interleaved round(s), medians; "
        f"the whole run took {seconds / 60:.1f} min. Rows/s: from the first row offered until every row was "
        "delivered (no drops). CPU: the client process's CPU time (all its threads) per row over the same "
        "span, which depends less on other load than wall clock does.",
        "",
        "| contender | rows/s @0 ms | rows/s @50 ms | vs seed @50 ms | vs tuned @50 ms | client CPU µs/row "
        "@0 ms | requests per MB @50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in fast:
        lines.append(
            f"| {NAMES[name]} | {fast[name]['rows_per_s']:,.0f} | {slow[name]['rows_per_s']:,.0f} | "
            f"{slow[name]['rows_per_s'] / slow['seed']['rows_per_s']:.1f} | "
            f"{slow[name]['rows_per_s'] / slow['tuned']['rows_per_s']:.2f} | {fast[name]['cpu_us']:.1f} | "
            f"{slow[name]['per_mb']:.1f} |"
        )
    lines += [
        "",
        "The application's loop: lag of a 1 ms ticker (`anyio.sleep(0.001)`) on the asyncio loop that calls "
        "`forward()`, while the forwarder ships a paced 15,000 rows/s or as fast as it takes rows (0 ms "
        "latency). Idle: the ticker alone; `nochain`: the defaults with `chain=False`; `stdlib`: without the "
        "`fast` extra; `unsliced`: see below.",
        "",
        "| forwarder @ rate | p50 ms | p99 ms | max ms | rows/s | client CPU µs/row |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in lag.items():
        extra = f"{r['rows_per_s']:,.0f} | {r['cpu_us']:.1f}" if "rows_per_s" in r else " | "
        lines.append(f"| {name} | {r['p50']:.2f} | {r['p99']:.2f} | {r['max']:.1f} | {extra} |")
    lines += [
        "",
        "Why the sink releases the GIL while it serialises: the loop's lag (1 ms ticker) while two threads "
        "serialise 2,500-row batches, no network, with the GIL released every *n* rows or not at all "
        "(`unsliced` rows above: the same forwarder, not released).",
        "",
        "| encoding threads | p50 ms | p99 ms |",
        "|---|---:|---:|",
        *(f"| {name} | {r['p50']:.2f} | {r['p99']:.2f} |" for name, r in gil.items()),
    ]
    lines += [
        "",
        "CPU ceiling, encode + compress on one core (2,500-row batches, `compress_level` 6, median): "
        + ", ".join(f"{name} {us:.2f} µs/row ({1e6 / us:,.0f} rows/s)" for name, us in ceiling.items())
        + ". Per request (a one-row body, sequential), client CPU: the SDK's default transport "
        f"{transport['sdk']:.2f} ms, ours {transport['ours']:.2f} ms "
        f"(ratio {transport['ours'] / transport['sdk']:.2f}).",
    ]
    if figures:
        lines += [
            "",
            "![throughput against latency](bench_throughput.png)",
            "",
            "![client CPU per row](bench_cpu.png)",
            "",
            "![loop lag](bench_lag.png)",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer rows, one round")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, quick 1)")
    parser.add_argument("--sweep", action="store_true", help="also re-run the max_batches_in_flight sweep")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    started = time.perf_counter()
    ceiling = {c.name: encode_ceiling(5 if args.quick else 20, c) for c in (_wire.CODEC, _wire.STDLIB)}
    print("ceiling", ceiling, flush=True)
    transport = transport_cpu(args.quick, rounds)
    print("per request", transport, flush=True)
    gil = gil_options(args.quick, rounds)
    print("gil", gil, flush=True)
    table = throughput(args.quick, rounds)
    lag = loop_lag(args.quick, rounds)
    figures = False if args.quick else plots(table, lag)
    text = report(table, lag, ceiling, transport, gil, rounds, time.perf_counter() - started, figures)
    print(text)
    if not args.quick:
        write_section("throughput", "## Throughput, CPU and the application's loop\n\n" + text)
    if args.sweep:
        from _sweep import sweep

        sweep()


if __name__ == "__main__":
    main()
