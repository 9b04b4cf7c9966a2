"""Poison-row isolation: when the service refuses a request of many rows (400), find the rows it refuses.

A chunk holds up to ~2,800 rows; one malformed row in it (say a string where the DCR declares ``int``) makes
the service answer 400 for all of them. Splitting the chunk in halves and posting each half again finds the
refused rows and delivers the rest: one malformed row among *n* costs at most ``2 * ceil(log2(n))`` extra
requests (24 for a full chunk), a few scattered ones a few times that. Two guards bound the cost:

- If both halves of the first split are refused with the same answer as the whole request, the request is
  refused for something no row did (a wrong stream, a malformed body): stop after those two requests.
- A budget of extra requests per chunk (:data:`MAX_EXTRA_REQUESTS`); rows not isolated within it are dropped
  as the whole chunk would have been, and the message says so.
"""

from __future__ import annotations

__all__ = ["MAX_EXTRA_REQUESTS", "isolate_refused"]

from collections import deque
from collections.abc import Callable, Sequence

from ..._model.protocol import SendResult

#: Extra requests one refused chunk may cost to find its refused rows.
MAX_EXTRA_REQUESTS = 64
_NAMED = 5  # refused rows named in the drop message


def _refused(result: SendResult, count: int) -> bool:
    return result.dropped.get("rejected", 0) == count and not result.sent and not result.unconfirmed


def isolate_refused(
    rows: Sequence[bytes],
    ids: Sequence[str],
    post: Callable[[Sequence[bytes]], SendResult],
    refusal: SendResult,
    *,
    budget: int = MAX_EXTRA_REQUESTS,
) -> SendResult:
    """Bisect *rows*, which the service refused together (*refusal*), posting each part with *post*.

    :param rows: the chunk's serialised rows; *ids* their ``Id``\\ s, for the drop message.
    :param post: posts some rows as one request and reports what became of them.
    :param refusal: what posting all of *rows* gave (every row ``rejected``).
    :param budget: extra requests this may make.
    :returns: the outcome of every row, with :attr:`~SendResult.outcomes` in the order of *rows*: delivered
        parts as *post* reported them; refused rows ``rejected``, named by Id with the service's answer
        (also in :attr:`~SendResult.row_errors`, by position).
    """
    left = budget
    # Each part's result, keyed by the part's first row, so the outcome is assembled in row order.
    parts: dict[int, tuple[int, SendResult]] = {}
    refused: list[tuple[int, str]] = []  # (position, the service's answer) of each row found refused
    unresolved: list[tuple[int, int]] = []  # (start, end) of parts not isolated
    whole = False
    # Breadth first: each round splits every group still refused, so the budget is spread over the chunk
    # and clean halves anywhere in it are delivered early.
    groups: deque[tuple[int, int]] = deque([(0, len(rows))])
    top = True
    while groups:
        lo, hi = groups.popleft()
        mid = (lo + hi) // 2
        halves = [(lo, mid), (mid, hi)]
        results: list[SendResult | None] = []
        for a, b in halves:
            if left <= 0:
                results.append(None)
                continue
            left -= 1
            results.append(post(rows[a:b]))
        if top and all(
            r is not None and _refused(r, b - a) and r.error == refusal.error
            for r, (a, b) in zip(results, halves, strict=True)
        ):
            unresolved, whole = (
                [(0, len(rows))],
                True,
            )  # both halves refused like the whole: not a row's fault
            break
        top = False
        for (a, b), result in zip(halves, results, strict=True):
            if result is None:
                unresolved.append((a, b))
            elif not _refused(result, b - a):
                parts[a] = (b, result)
            elif b - a == 1:
                refused.append((a, result.error or "refused"))
            else:
                groups.append((a, b))
    if refused:
        named = "; ".join(f"Id {ids[i]!r}: {answer}" for i, answer in refused[:_NAMED])
        more = f" and {len(refused) - _NAMED} more" if len(refused) > _NAMED else ""
        text = f"the service refused {len(refused)} row(s) of a chunk of {len(rows)} ({named}{more})"
        for i, answer in refused:
            only = SendResult.failed("rejected", 1, text)
            parts[i] = (i + 1, SendResult(0, only.dropped, text, 0, only.errors, None, {0: answer}))
    if unresolved:
        why = (
            "the whole request was refused, not a row of it"
            if whole
            else f"not isolated within {budget} extra requests"
        )
        for a, b in unresolved:
            text = f"{refusal.error} ({b - a} rows: {why})"
            parts[a] = (b, SendResult.failed("rejected", b - a, text))
    outcome = SendResult()
    for start in sorted(parts):
        outcome += parts[start][1]
    return outcome
