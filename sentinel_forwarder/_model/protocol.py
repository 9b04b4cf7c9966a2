"""The one async interface every sink and wrapper implements, and what a send reports."""

from __future__ import annotations

__all__ = ["DROP_REASONS", "AuditForwarder", "AuditSink", "DropReason", "RowOutcome", "SendResult"]

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType, TracebackType
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from .entry import AuditEntry

#: Why a row was not delivered. A closed set: every drop is counted under exactly one of these.
DropReason = Literal[
    "queue_full",  # the buffer was at capacity when the row was offered (the new row is dropped)
    "closed",  # offered after the forwarder was closed
    "shutdown_timeout",  # still queued or in flight when the drain deadline passed
    "transform_error",  # the user's transform raised for this row
    "invalid_row",  # the row cannot be serialised to JSON (e.g. an extra value of an unsupported type)
    "too_large",  # the row alone exceeds the 1 MB request limit, or the service answered 413
    "rejected",  # the service answered 400 (or another non-retryable 4xx)
    "unauthorized",  # 401/403: token refused or the identity lacks Monitoring Metrics Publisher on the DCR
    "not_found",  # 404: unknown DCR immutable id or stream name
    "credential_error",  # no access token could be acquired
    "retries_exhausted",  # 429/5xx/connection errors/timeouts outlasted the retry budget
    "unreachable",  # the endpoint cannot be reached and retrying cannot help (TLS, certificate, host name)
    "sink_error",  # the sink raised, or reported fewer rows than it was given
    "shed",  # the spool was full: the row made room for rows of higher severity (or newer ones)
    "expired",  # the row waited in the spool longer than spool_max_age
]
DROP_REASONS: tuple[DropReason, ...] = (
    "queue_full",
    "closed",
    "shutdown_timeout",
    "transform_error",
    "invalid_row",
    "too_large",
    "rejected",
    "unauthorized",
    "not_found",
    "credential_error",
    "retries_exhausted",
    "unreachable",
    "sink_error",
    "shed",
    "expired",
)
#: What became of one row: delivered, unknown, or dropped for a reason.
RowOutcome = Literal["sent", "unconfirmed"] | DropReason

_NO_DROPS: Mapping[DropReason, int] = MappingProxyType({})
_NO_ERRORS: Mapping[DropReason, str] = MappingProxyType({})
_NO_ROW_ERRORS: Mapping[int, str] = MappingProxyType({})


@dataclass(frozen=True)
class SendResult:
    """What became of a batch: rows delivered, rows dropped (by reason), rows whose fate is unknown.

    A sink reports service errors here instead of raising; ``sent + sum(dropped.values()) + unconfirmed``
    equals the number of rows it was given.
    """

    sent: int = 0
    dropped: Mapping[DropReason, int] = field(default_factory=lambda: _NO_DROPS)
    #: The last error message (the service's own where there was one), for logs. Never holds secrets.
    error: str | None = None
    #: Rows that may or may not have landed: their request reached the service but no answer came back
    #: (a read timeout, a connection dropped mid-response) and no later attempt settled it.
    unconfirmed: int = 0
    #: The last error message per drop reason, so a log line for one reason names its own row.
    errors: Mapping[DropReason, str] = field(default_factory=lambda: _NO_ERRORS)
    #: What became of each row, in the order the rows were given, when they fared differently (``None``
    #: when every row fared alike, or when the sink does not say). A spool needs it to keep the right rows.
    outcomes: tuple[RowOutcome, ...] | None = None
    #: The service's answer for single rows, by their position in the batch (refused rows), where known.
    row_errors: Mapping[int, str] = field(default_factory=lambda: _NO_ROW_ERRORS)
    #: The service throttled this delivery (HTTP 429, or 503 with ``Retry-After``): the seconds it asked the
    #: client to wait (0.0 if it did not say), whatever became of the rows. The forwarder then pauses all
    #: new requests and lowers its request rate; ``None``: not throttled.
    retry_after: float | None = None

    @property
    def total(self) -> int:
        """Rows accounted for: sent plus dropped plus unconfirmed."""
        return self.sent + sum(self.dropped.values()) + self.unconfirmed

    @classmethod
    def failed(cls, reason: DropReason, count: int, error: str | None = None) -> SendResult:
        """All *count* rows dropped for one reason."""
        return cls(
            0,
            MappingProxyType({reason: count}) if count else _NO_DROPS,
            error,
            errors=MappingProxyType({reason: error}) if error else _NO_ERRORS,
        )

    @classmethod
    def uncertain(cls, count: int, error: str | None = None) -> SendResult:
        """All *count* rows unconfirmed: sent, but whether they landed is not known."""
        return cls(unconfirmed=count, error=error)

    @staticmethod
    def reconcile(answer: Any, count: int) -> SendResult:
        """Make a sink's *result* account for exactly *count* rows; what it got wrong is ``sink_error``.

        Over-reporting is capped (sent first, then drops, then unconfirmed); unknown reasons, negative
        numbers and missing rows become ``sink_error``; a result that is not a :class:`SendResult` makes all
        rows ``sink_error``; per-row outcomes that do not add up to the counts are discarded (a spool then
        treats the batch as a whole).
        """
        if not isinstance(answer, SendResult):
            return SendResult.failed(
                "sink_error", count, f"the sink returned {type(answer).__name__}, not a SendResult"
            )
        result: SendResult = answer
        known = all(r in DROP_REASONS and n >= 0 for r, n in result.dropped.items())
        if result.retry_after is not None and not (
            isinstance(result.retry_after, (int, float)) and result.retry_after >= 0
        ):
            result = replace(result, retry_after=0.0)  # throttled, but the sink's number is unusable
        if known and result.total == count and result.sent >= 0 and result.unconfirmed >= 0:
            if result.outcomes is not None and not result._outcomes_agree():
                return replace(result, outcomes=None)
            return result
        left = count

        def take(n: int) -> int:
            nonlocal left
            n = min(max(n, 0), left)
            left -= n
            return n

        sent = take(result.sent)
        dropped: dict[DropReason, int] = {}
        for reason, n in result.dropped.items():
            if reason in DROP_REASONS and (n := take(n)):
                dropped[reason] = n
        unconfirmed = take(result.unconfirmed)
        message = f"the sink accounted for {result.total} of {count} rows"
        errors = dict(result.errors)
        if left:
            dropped["sink_error"] = dropped.get("sink_error", 0) + left
            errors["sink_error"] = message
        return SendResult(
            sent,
            MappingProxyType(dropped),
            result.error or message,
            unconfirmed,
            errors,
            retry_after=result.retry_after,
        )

    def _outcomes_agree(self) -> bool:
        """Whether the per-row outcomes add up to the counts."""
        outcomes = self.outcomes or ()
        counts: Counter[str] = Counter(outcomes)
        expected: Counter[str] = Counter({r: n for r, n in self.dropped.items() if n})
        if self.sent:
            expected["sent"] = self.sent
        if self.unconfirmed:
            expected["unconfirmed"] = self.unconfirmed
        return len(outcomes) == self.total and counts == expected

    def error_for(self, reason: DropReason) -> str | None:
        """The message that explains the rows dropped for *reason*."""
        return self.errors.get(reason) or self.error

    def row_outcomes(self) -> tuple[RowOutcome, ...] | None:
        """Each row's outcome, in order: :attr:`outcomes`, or the one outcome every row shares; ``None`` if
        rows fared differently and the sink did not say which."""
        if self.outcomes is not None:
            return self.outcomes
        kinds: list[tuple[RowOutcome, int]] = [(r, n) for r, n in self.dropped.items() if n]
        if self.sent:
            kinds.append(("sent", self.sent))
        if self.unconfirmed:
            kinds.append(("unconfirmed", self.unconfirmed))
        if len(kinds) > 1:
            return None
        return (kinds[0][0],) * kinds[0][1] if kinds else ()

    def __add__(self, other: SendResult) -> SendResult:
        """The result of *self*'s rows followed by *other*'s (counts add up; per-row outcomes concatenate)."""
        dropped = dict(self.dropped)
        for reason, n in other.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + n
        outcomes: tuple[RowOutcome, ...] | None = None
        mine, theirs = self.row_outcomes(), other.row_outcomes()
        if (mine is not None and theirs is not None and len(set(mine[:1] + theirs[:1])) > 1) or (
            self.outcomes is not None or other.outcomes is not None
        ):
            outcomes = None if mine is None or theirs is None else mine + theirs
        row_errors = self.row_errors
        if other.row_errors:
            shift = self.total
            row_errors = MappingProxyType(
                {**self.row_errors, **{shift + i: m for i, m in other.row_errors.items()}}
            )
        waits = [w for w in (self.retry_after, other.retry_after) if w is not None]
        return SendResult(
            self.sent + other.sent,
            MappingProxyType(dropped),
            other.error or self.error,
            self.unconfirmed + other.unconfirmed,
            MappingProxyType({**self.errors, **other.errors}),
            outcomes,
            row_errors,
            max(waits) if waits else None,
        )


_F = TypeVar("_F", bound="AuditForwarder")


@runtime_checkable
class AuditForwarder(Protocol):
    """Anything that takes batches of audit entries: a sink (Azure, a file, another SIEM) or a wrapper.

    Use it with ``async with``: entering opens it (connections, background tasks), leaving drains and closes.
    """

    async def __aenter__(self: _F) -> _F: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None: ...

    async def send_batch(self, entries: Sequence[AuditEntry], /) -> SendResult:
        """Deliver *entries*; report what was sent and what was dropped, by reason.

        Raises only for misconfiguration or bugs; service errors are reported in the result.
        """
        ...

    async def aclose(self) -> None:
        """Release resources. Idempotent."""
        ...


class AuditSink:
    """Convenience base for sinks: ``async with`` support on top of :meth:`send_batch` and :meth:`aclose`.

    Subclasses implement :meth:`send_batch` and, if they hold resources, :meth:`aclose`::

        class JsonLinesSink(AuditSink):
            def __init__(self, path): self._file = open(path, "a")
            async def send_batch(self, entries):
                for e in entries:
                    self._file.write(json.dumps(e.to_row()) + "\\n")
                return SendResult(sent=len(entries))
            async def aclose(self): self._file.close()
    """

    async def __aenter__(self: _S) -> _S:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def send_batch(self, entries: Sequence[AuditEntry], /) -> SendResult:
        """Deliver *entries*; see :class:`AuditForwarder`."""
        raise NotImplementedError

    async def send_encoded(self, entries: Sequence[AuditEntry], rows: Sequence[bytes], /) -> SendResult:
        """Deliver *entries*, given also as the JSON rows the spool stored for them (``rows[i]`` is the
        wire form of ``entries[i]``). A sink that posts JSON can post these instead of serialising again;
        by default, :meth:`send_batch`."""
        return await self.send_batch(entries)

    async def aclose(self) -> None:
        """Release resources. Idempotent. The default holds none."""


_S = TypeVar("_S", bound=AuditSink)
