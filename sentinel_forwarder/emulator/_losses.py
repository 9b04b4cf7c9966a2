"""What Azure would accept and silently lose or change, as the emulator records it.

By default the emulator answers like the service (``204``) for requests whose data the service would quietly
drop or alter, and records each such loss as a :class:`Loss`; in strict mode the same requests are answered
``400`` instead (see ``docs/emulator.md``). Pure Python (no starlette): the CLI formats reports with
:func:`format_loss_report`.
"""

from __future__ import annotations

__all__ = ["LOSS_KINDS", "Loss", "LossKind", "format_loss_report", "summarize_losses"]

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

#: What can happen to data that Azure accepts with ``204``:
#:
#: * ``bare_object``: the body was one JSON object instead of an array; nothing lands;
#: * ``undeclared_column``: a column the stream does not declare; the value is dropped;
#: * ``coerced``: a value of another JSON type in a ``string`` column, stored as text;
#: * ``time_replaced``: a ``TimeGenerated`` more than 2 days old or 1 day ahead, replaced by the receive time;
#: * ``truncated``: a string longer than 64 KB (65,536 UTF-8 bytes), cut.
LossKind = Literal["bare_object", "undeclared_column", "coerced", "time_replaced", "truncated"]
LOSS_KINDS: tuple[LossKind, ...] = (
    "bare_object",
    "undeclared_column",
    "coerced",
    "time_replaced",
    "truncated",
)

_LABELS: dict[str, str] = {
    "bare_object": "bare JSON object body dropped",
    "undeclared_column": "undeclared column value(s) dropped",
    "coerced": "value(s) coerced to string",
    "time_replaced": "TimeGenerated value(s) replaced by the receive time",
    "truncated": "string value(s) truncated to 64 KB",
}


@dataclass(frozen=True)
class Loss:
    """One silent loss or change of data that the real service would answer ``204`` to."""

    #: The ``x-ms-request-id`` the emulator answered with.
    request_id: str
    #: The DCR immutable id and input stream of the request.
    rule_id: str
    stream: str
    #: Index of the record in the request body; ``None`` when the whole body is concerned.
    row: int | None
    #: The column concerned, if any.
    column: str | None
    kind: LossKind
    #: What happened, in words (e.g. ``"JSON integer 5 stored as the string '5'"``).
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """The loss as JSON-ready data."""
        return asdict(self)


def summarize_losses(losses: Sequence[Loss]) -> str:
    """One line saying what a request lost, e.g. ``"3 undeclared column value(s) dropped (Extra, Note)"``.

    :param losses: The losses of one request.
    """
    kinds = Counter(loss.kind for loss in losses)
    parts: list[str] = []
    for kind in LOSS_KINDS:
        if not kinds[kind]:
            continue
        columns = sorted({loss.column for loss in losses if loss.kind == kind and loss.column})
        shown = ", ".join(columns[:5]) + (", ..." if len(columns) > 5 else "")
        parts.append(f"{kinds[kind]} {_LABELS[kind]}" + (f" ({shown})" if shown else ""))
    return "; ".join(parts)


def format_loss_report(losses: Iterable[Loss], *, total: int | None = None) -> str:
    """A human-readable report of recorded losses, grouped by request (for ``sentinel-forwarder`` commands).

    :param losses: Recorded losses, in order.
    :param total: How many losses happened, when more than were recorded (the emulator keeps a bounded
        number).
    :returns: Several lines, or a single line saying that nothing was lost.
    """
    by_request: dict[str, list[Loss]] = {}
    for loss in losses:
        by_request.setdefault(loss.request_id, []).append(loss)
    count = sum(len(v) for v in by_request.values())
    if not count and not total:
        return "No silent data loss: Azure would have stored every request exactly as sent."
    lines = [
        f"{total if total is not None else count} silent loss(es) in {len(by_request)} request(s) that Azure "
        "would answer 204 (strict mode answers 400 instead):"
    ]
    for request_id, items in by_request.items():
        first = items[0]
        lines.append(f"request {request_id} ({first.rule_id} / {first.stream}): {summarize_losses(items)}")
        for loss in items:
            where = "body" if loss.row is None else f"record {loss.row}"
            if loss.column:
                where += f", column {loss.column!r}"
            lines.append(f"  {where}: {loss.detail}")
    if total is not None and total > count:
        lines.append(f"({total - count} more not recorded: the emulator keeps the first {count})")
    return "\n".join(lines)
