"""How the Azure sink fails, through the real SDK to the real emulator: a true retry budget, the root cause in
the drop message, unconfirmed rows counted as such, crafted rows contained, no thread outliving close."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import textwrap
from typing import Any

import anyio
import pytest
from azure_helpers import forward_all, landed_ids, rows, sink_for

from sentinel_forwarder import MAX_REQUEST_BYTES, AuditEntry, AzureSentinelForwarder
from sentinel_forwarder._model.wire import Codec
from sentinel_forwarder.emulator import Emulator, EmulatorCredential

pytestmark = pytest.mark.anyio

#: A bound on tests whose failure mode is a hang (sleeping a long Retry-After, waiting out a read timeout).
HANG = 30


async def test_a_retry_after_past_the_budget_drops_at_once(emu: Emulator) -> None:
    # A failure (502) that asks for more than the budget has left: waiting would only delay the same drop.
    emu.faults.fail_next(1, 502, retry_after=60)
    with anyio.fail_after(HANG):
        stats = await forward_all(sink_for(emu, retry_timeout=2), rows(5))
    assert stats.dropped == {"retries_exhausted": 5}
    assert emu.stats().requests == 1
    assert "asked to retry after 60 s" in (stats.last_error or "")
    assert "HTTP 502" in (stats.last_error or "")
    assert stats.throttles == 0


async def test_a_throttle_past_the_budget_waits_as_asked_and_lands(emu: Emulator) -> None:
    """retry_timeout bounds failures, not throttling: a 429 asking for more than the budget has left is
    waited out, the rows land, and the forwarder counts the throttle."""
    emu.faults.fail_next(1, 429, retry_after=2)
    with anyio.fail_after(HANG):
        stats = await forward_all(sink_for(emu, retry_timeout=0.5), rows(5))
    assert stats.sent == 5 and stats.dropped == {}
    assert emu.stats().requests == 2
    assert stats.throttles == 1 and stats.throttled_seconds >= 2.0


async def test_read_timeouts_make_rows_unconfirmed_not_dropped(emu: Emulator) -> None:
    """The service stores what it got after our read timed out: those rows must not be counted as lost."""
    emu.faults.latency(2.0)
    with anyio.fail_after(HANG):
        stats = await forward_all(sink_for(emu, retry_timeout=0.5, read_timeout=0.1), rows(5))
    assert stats.unconfirmed == 5
    assert stats.dropped == {} and stats.sent == 0
    assert "whether 5 rows landed is unknown" in (stats.last_error or "")
    assert emu.wait_for_rows(5)  # and indeed they land, after we gave up waiting


async def test_the_read_timeout_is_bounded_by_the_budget(emu: Emulator) -> None:
    emu.faults.latency(60.0)
    with anyio.fail_after(HANG):  # a 60 s read timeout would hang here without the clamp
        stats = await forward_all(sink_for(emu, retry_timeout=0.5, read_timeout=60), rows(3))
    assert stats.unconfirmed == 3


async def test_connection_refused_is_named() -> None:
    sink = AzureSentinelForwarder(
        "http://127.0.0.1:1", EmulatorCredential(), rule_id="dcr-1", retry_timeout=0.3, retry_backoff=0.01
    )
    stats = await forward_all(sink, rows(2))
    assert stats.dropped == {"retries_exhausted": 2}
    assert "connection refused to 127.0.0.1:1" in (stats.last_error or "")


async def test_a_missing_ca_fails_fast_as_unreachable(tls_emulator: Emulator) -> None:
    tls_emulator.reset()
    sink = sink_for(tls_emulator, connection_verify=True, retry_timeout=HANG * 2)
    with anyio.fail_after(HANG):
        stats = await forward_all(sink, rows(2))
    assert stats.dropped == {"unreachable": 2}
    assert "certificate verify failed for 127.0.0.1" in (stats.last_error or "")
    assert "not retried" in (stats.last_error or "")
    assert tls_emulator.stats().requests == 0


async def test_an_unknown_host_fails_fast_as_unreachable() -> None:
    sink = AzureSentinelForwarder(
        "https://no-such-host.invalid", EmulatorCredential(), rule_id="dcr-1", retry_timeout=HANG * 2
    )
    with anyio.fail_after(HANG):
        stats = await forward_all(sink, rows(2))
    assert stats.dropped == {"unreachable": 2}
    assert "name resolution failed for no-such-host.invalid" in (stats.last_error or "")


async def test_plain_http_to_an_https_endpoint_says_so(tls_emulator: Emulator) -> None:
    tls_emulator.reset()
    endpoint = tls_emulator.endpoint.replace("https://", "http://")
    sink = AzureSentinelForwarder(
        endpoint, EmulatorCredential(), rule_id=tls_emulator.rule_id, retry_timeout=0.3, retry_backoff=0.01
    )
    stats = await forward_all(sink, rows(2))
    assert stats.sent == 0
    assert "if the endpoint serves HTTPS, use https://" in (stats.last_error or "")


class FlakyCredential(EmulatorCredential):
    """Raises *error* for the first *failures* token requests, then works."""

    def __init__(self, error: BaseException, failures: int) -> None:
        super().__init__()
        self.error = error
        self.failures = failures

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        if self.failures:
            self.failures -= 1
            raise self.error
        return super().get_token_info(*scopes, options=options)

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise self.error
        return super().get_token(*scopes, **kwargs)


async def test_a_transient_token_failure_is_retried(emu: Emulator) -> None:
    credential = FlakyCredential(OSError("IMDS socket reset"), failures=2)
    stats = await forward_all(sink_for(emu, credential=credential), rows(4))
    assert stats.sent == 4 == emu.count(emu.table)


async def test_a_credential_that_keeps_failing_is_a_credential_error(emu: Emulator) -> None:
    credential = FlakyCredential(OSError("IMDS socket reset"), failures=10_000)
    stats = await forward_all(sink_for(emu, credential=credential, retry_timeout=0.3), rows(4))
    assert stats.dropped == {"credential_error": 4}
    assert "OSError: IMDS socket reset" in (stats.last_error or "")
    assert emu.stats().requests == 0


async def test_an_unavailable_credential_is_not_retried(emu: Emulator) -> None:
    from azure.identity import CredentialUnavailableError

    credential = FlakyCredential(CredentialUnavailableError("no environment configured"), failures=10_000)
    with anyio.fail_after(HANG):
        stats = await forward_all(sink_for(emu, credential=credential, retry_timeout=HANG * 2), rows(2))
    assert stats.dropped == {"credential_error": 2}
    assert credential.failures == 10_000 - 1


async def test_crafted_rows_are_dropped_alone_and_named_right(
    emu: Emulator, codec: Codec, caplog: pytest.LogCaptureFixture
) -> None:
    nested: Any = []
    for _ in range(100_000):
        nested = [nested]
    deep = AuditEntry("deep", extra={"Blob": nested})
    nan = AuditEntry("nan", extra={"Score": math.nan})
    huge = AuditEntry("y" * (MAX_REQUEST_BYTES + 10))
    good = rows(3)
    with caplog.at_level(logging.WARNING, logger="sentinel_forwarder"):
        stats = await forward_all(sink_for(emu), [good[0], deep, huge, nan, *good[1:]])
    assert stats.dropped == {"invalid_row": 2, "too_large": 1}
    assert sorted(landed_ids(emu)) == sorted(e.id for e in good)
    lines = [r.getMessage() for r in caplog.records]
    too_large = [line for line in lines if "reason=too_large" in line]
    assert too_large and huge.id in too_large[0] and nan.id not in too_large[0]
    invalid = [line for line in lines if "reason=invalid_row" in line]
    assert invalid and huge.id not in invalid[0]


CHILD = textwrap.dedent(
    """
    import json, sys
    import anyio
    from sentinel_forwarder import AuditEntry, AzureSentinelForwarder, BufferingForwarder
    from sentinel_forwarder.testing import EmulatorCredential

    endpoint, rule_id, backend = sys.argv[1:4]

    async def main():
        sink = AzureSentinelForwarder(
            endpoint, EmulatorCredential(), rule_id=rule_id, retry_timeout=600, read_timeout=600
        )
        async with BufferingForwarder(sink, drain_timeout=0.2) as fwd:
            for i in range(5):
                fwd.forward(AuditEntry(f"r{i}"))
        s = fwd.statistics()
        print(json.dumps({"unconfirmed": s.unconfirmed, "sent": s.sent, "dropped": dict(s.dropped)}))

    anyio.run(main, backend=backend)
    """
)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_upload_abandoned_at_the_deadline_does_not_keep_the_process_alive(backend: str) -> None:
    with Emulator() as emu:
        emu.faults.latency(600)  # the upload's thread waits on a read that would take 10 minutes
        done = subprocess.run(
            [sys.executable, "-c", CHILD, emu.endpoint, emu.rule_id, backend],
            capture_output=True,
            text=True,
            timeout=HANG * 2,
        )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"unconfirmed": 5, "sent": 0, "dropped": {}}


async def test_408_and_other_retryable_statuses_are_retried(emu: Emulator) -> None:
    for status in (408, 429, 500, 502, 503, 504):
        emu.faults.fail_next(1, status)
    stats = await forward_all(sink_for(emu), rows(10))
    assert stats.sent == 10 == emu.count(emu.table)
    assert emu.stats().by_status == {408: 1, 429: 1, 500: 1, 502: 1, 503: 1, 504: 1, 204: 1}


def test_incompressible_chunks_are_halved_until_they_fit() -> None:
    import os

    from sentinel_forwarder._model.wire import gzip_chunks as _gzip_chunks

    # Random bytes do not compress: one 1,000,000-byte chunk would gzip to a little more than the limit.
    pieces = [os.urandom(99_990) for _ in range(10)]
    chunks = list(_gzip_chunks(pieces, 6))
    assert len(chunks) > 1
    assert sum(count for _, count in chunks) == 10
    assert all(len(body) <= MAX_REQUEST_BYTES for body, _ in chunks)


async def test_the_sink_closes_the_credential_it_created_and_only_that() -> None:
    closed: list[str] = []

    class Tracked(EmulatorCredential):
        def close(self) -> None:
            closed.append("caller's")

    theirs = AzureSentinelForwarder("https://dce.example.com", Tracked(), rule_id="dcr-1")
    async with theirs:
        pass
    assert closed == []  # the caller's credential is the caller's to close

    ours = AzureSentinelForwarder("https://dce.example.com", rule_id="dcr-1")
    async with ours:
        credential = ours._credential
        assert credential is not None
        real_close = credential.close  # type: ignore[attr-defined]

        def close() -> None:
            closed.append("ours")
            real_close()

        credential.close = close  # type: ignore[attr-defined]
    assert closed == ["ours"]


async def test_chunks_after_the_budget_is_spent_are_not_sent(emu: Emulator) -> None:
    emu.faults.latency(5)  # the first chunk's answer outlasts the whole budget
    entries = rows(2500, size=1000)  # ~2.7 MB of JSON: three chunks in one batch
    with anyio.fail_after(HANG):
        stats = await forward_all(sink_for(emu, retry_timeout=0.5), entries, max_batch_size=2500)
    first = stats.unconfirmed
    assert 0 < first < 2500  # the first chunk went out and its answer never came
    assert stats.dropped == {"retries_exhausted": 2500 - first}
    assert "spent on earlier chunks" in (stats.last_error or "")
    assert emu.stats().requests == 1  # the other chunks never went out


async def test_a_throttle_on_one_chunk_is_not_charged_to_the_chunks_after_it(emu: Emulator) -> None:
    """A batch cut into several requests: the first is throttled for longer than the batch's retry budget;
    that wait moves the batch's deadline, so the requests after it are still made and every row lands."""
    emu.faults.fail_next(1, 429, retry_after=2)
    entries = rows(2500, size=1000)  # ~2.7 MB of JSON: three requests
    with anyio.fail_after(HANG):
        stats = await forward_all(sink_for(emu, retry_timeout=1), entries, max_batch_size=2500)
    assert stats.sent == 2500 and stats.dropped == {}
    assert emu.count(emu.table) == 2500 and emu.stats().requests >= 4
