"""Measure what an ``AISentinelAudit_CL`` row costs: JSON bytes, gzip ratio, estimated billed bytes.

Rows are built with the library itself (:class:`~sentinel_forwarder.AuditEntry` linked by a
:class:`~sentinel_forwarder.HashChain`, serialised by ``to_row()``) from a fixed random seed, so the numbers
are reproducible. Batches of 100 rows are serialised the way ``azure-monitor-ingestion`` does (stdlib
``json.dumps`` of the list, then gzip).

``python tools/measure_cost.py`` prints the Markdown block that ``docs/cost.md`` embeds between the
``measured:begin`` / ``measured:end`` markers; a content test fails when the two disagree.
"""

from __future__ import annotations

__all__ = ["EXAMPLE_PRICE_PER_GB", "Measurement", "build_rows", "main", "markdown", "measure"]

import gzip
import json
import random
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from sentinel_forwarder import AuditEntry, HashChain  # noqa: E402

#: Example list price per GB ingested into an Analytics table with Sentinel, USD. Illustrative only.
EXAMPLE_PRICE_PER_GB = 5.00
#: Example price per GB for a Basic table (ingestion, no Sentinel analytics), USD. Illustrative only.
EXAMPLE_BASIC_PRICE_PER_GB = 1.00
BATCH = 100
SEED = 20240611

# Severity mix of a busy application: most records are informational, few are Critical.
_SEVERITIES = (("None", 55), ("Low", 25), ("Medium", 12), ("High", 6), ("Critical", 2))
_EVENTS: Sequence[tuple[str, str]] = (
    (
        "prompt-injection",
        "Prompt injection attempt blocked: user message asked to ignore previous instructions",
    ),
    ("jailbreak", "Jailbreak pattern detected in user prompt (role-play override), response withheld"),
    ("pii-leak", "Model response contained an e-mail address and a phone number; redacted before delivery"),
    (
        "credential-exposure",
        "API key pattern (sk-...) found in tool output; value masked, key flagged for rotation",
    ),
    ("toxicity", "Response scored 0.82 on the toxicity classifier; replaced with a refusal"),
    ("rate-limit", "Session exceeded 60 requests per minute; throttled for 30 s"),
    ("tool-call", "Tool 'sql_query' called with a DELETE statement; blocked by policy read-only-tools"),
    ("content-filter", "Request passed all content filters"),
    (
        "data-exfiltration",
        "Response attempted to render an external image URL with query-string data; stripped",
    ),
)


def _weighted(rng: random.Random) -> str:
    labels = [label for label, _ in _SEVERITIES]
    weights = [weight for _, weight in _SEVERITIES]
    return rng.choices(labels, weights=weights)[0]


def build_rows(n: int, *, seed: int = SEED) -> list[dict[str, Any]]:
    """*n* realistic rows, as sent: linked by one forwarder's hash chain, 1-40 records per session."""
    rng = random.Random(seed)
    start = datetime(2024, 6, 1, tzinfo=timezone.utc)
    rows: list[dict[str, Any]] = []
    chain = HashChain(chain_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)))
    while len(rows) < n:
        session = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        for _ in range(min(rng.randint(1, 40), n - len(rows))):
            detector, summary = rng.choice(_EVENTS)
            summary += f" (score {rng.random():.2f}, request {rng.getrandbits(48):012x})"
            start += timedelta(milliseconds=rng.randint(1, 5000))
            entry = AuditEntry(
                summary,
                severity=_weighted(rng),
                detector_id=detector,
                session_id=session,
                id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                timestamp=start,
            )
            rows.append(chain.link(entry).to_row())
    return rows


def _billed_bytes(row: dict[str, Any]) -> int:
    """Estimated billed size: the UTF-8 length of each value, datetimes as their ISO text. An estimate."""
    return sum(len(str(v).encode("utf-8")) for v in row.values())


@dataclass(frozen=True)
class Measurement:
    rows: int
    json_bytes_per_row: float
    gzip_bytes_per_row: float
    billed_bytes_per_row: float

    @property
    def gzip_ratio(self) -> float:
        return self.json_bytes_per_row / self.gzip_bytes_per_row


def measure(rows: Sequence[dict[str, Any]], batch: int = BATCH) -> Measurement:
    """Average bytes per row over full batches of *batch* rows."""
    batches = [rows[i : i + batch] for i in range(0, len(rows) - batch + 1, batch)]
    raw = [json.dumps(list(b)).encode("utf-8") for b in batches]
    packed = [gzip.compress(r) for r in raw]
    count = len(batches) * batch
    return Measurement(
        rows=count,
        json_bytes_per_row=sum(map(len, raw)) / count,
        gzip_bytes_per_row=sum(map(len, packed)) / count,
        billed_bytes_per_row=sum(_billed_bytes(r) for b in batches for r in b) / count,
    )


def markdown(m: Measurement) -> str:
    """The measured block of ``docs/cost.md``."""
    lines = [
        f"Measured over {m.rows:,} rows in batches of {BATCH} (`python tools/measure_cost.py`):",
        "",
        "| per row | bytes |",
        "|---|---:|",
        f"| JSON as sent (uncompressed) | {m.json_bytes_per_row:.0f} |",
        f"| gzip on the wire | {m.gzip_bytes_per_row:.0f} (ratio {m.gzip_ratio:.1f} : 1) |",
        f"| billed size, estimated (sum of value lengths) | {m.billed_bytes_per_row:.0f} |",
        "",
        f"Cost at the **example price of ${EXAMPLE_PRICE_PER_GB:.2f} per GB** (Analytics plan with Sentinel) "
        f"and **${EXAMPLE_BASIC_PRICE_PER_GB:.2f} per GB** (Basic plan), using the estimated billed size:",
        "",
        "| rows per month | GB per month | Analytics, example USD | Basic, example USD |",
        "|---:|---:|---:|---:|",
    ]
    for rows in (1_000_000, 10_000_000, 100_000_000, 1_000_000_000):
        gb = rows * m.billed_bytes_per_row / 1e9
        analytics, basic = gb * EXAMPLE_PRICE_PER_GB, gb * EXAMPLE_BASIC_PRICE_PER_GB
        lines.append(f"| {rows:,} | {gb:,.2f} | {analytics:,.2f} | {basic:,.2f} |")
    return "\n".join(lines)


def main() -> int:
    print(markdown(measure(build_rows(10_000))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
