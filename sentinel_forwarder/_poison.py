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

from ._protocol import SendResult

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
    :returns: the outcome of every row: delivered parts as *post* reported them; refused rows ``rejected``,
        named by Id with the service's answer.
    """
    left = budget
    outcome = SendResult()
    refused: list[tuple[str, str]] = []  # (Id, the service's answer) of each row found refused
    unresolved = 0
    whole = False
    # Breadth first: each round splits every group still refused, so the budget is spread over the chunk
    # and clean halves anywhere in it are delivered early.
    groups: deque[tuple[Sequence[bytes], Sequence[str]]] = deque([(rows, ids)])
    top = True
    while groups:
        part, part_ids = groups.popleft()
        half = len(part) // 2
        halves = [(part[:half], part_ids[:half]), (part[half:], part_ids[half:])]
        results: list[SendResult | None] = []
        for rows_of_half, _ in halves:
            if left <= 0:
                results.append(None)
                continue
            left -= 1
            results.append(post(rows_of_half))
        if top and all(
            r is not None and _refused(r, len(h[0])) and r.error == refusal.error
            for r, h in zip(results, halves, strict=True)
        ):
            unresolved, whole = len(rows), True  # both halves refused like the whole: not a row's fault
            break
        top = False
        for (rows_of_half, ids_of_half), result in zip(halves, results, strict=True):
            if result is None:
                unresolved += len(rows_of_half)
            elif not _refused(result, len(rows_of_half)):
                outcome += result
            elif len(rows_of_half) == 1:
                refused.append((ids_of_half[0], result.error or "refused"))
            else:
                groups.append((rows_of_half, ids_of_half))
    if refused:
        named = "; ".join(f"Id {row_id!r}: {answer}" for row_id, answer in refused[:_NAMED])
        more = f" and {len(refused) - _NAMED} more" if len(refused) > _NAMED else ""
        text = f"the service refused {len(refused)} row(s) of a chunk of {len(rows)} ({named}{more})"
        outcome += SendResult.failed("rejected", len(refused), text)
    if unresolved:
        why = (
            "the whole request was refused, not a row of it"
            if whole
            else f"not isolated within {budget} extra requests"
        )
        outcome += SendResult.failed("rejected", unresolved, f"{refusal.error} ({unresolved} rows: {why})")
    return outcome
