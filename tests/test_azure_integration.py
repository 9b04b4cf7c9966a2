"""The Azure sink through the real azure-monitor-ingestion SDK to the real emulator over loopback HTTP(S)."""

from __future__ import annotations

from typing import Any

import pytest
from azure_helpers import forward_all, landed_ids, rows, sink_for

from sentinel_forwarder import (
    MAX_REQUEST_BYTES,
    AuditEntry,
    AzureSentinelForwarder,
    Severity,
    verify_chain,
)
from sentinel_forwarder._model.wire import Codec
from sentinel_forwarder.emulator import Emulator, EmulatorCredential

pytestmark = pytest.mark.anyio


async def test_rows_land_as_sent(emu: Emulator) -> None:
    entries = rows(250)
    stats = await forward_all(sink_for(emu), entries)
    assert stats.sent == 250 and not stats.dropped
    landed = emu.rows(emu.table)
    assert sorted(r["Id"] for r in landed) == sorted(e.id for e in entries)
    by_id = {e.id: e.to_row() for e in entries}
    linked = ("Hash", "PreviousHash", "ChainId", "Sequence")  # filled in by the forwarder's chain
    for row in landed:
        assert {k: row[k] for k in by_id[row["Id"]] if k not in linked} == {
            k: v for k, v in by_id[row["Id"]].items() if k not in linked
        }
    report = verify_chain(landed, previous_hash="")
    assert report.ok and report.rows == 250 and report.chains[0].last == 250
    assert emu.stats().by_status == {204: 1}  # the 250 rows waiting at close were coalesced into one request


async def test_https_with_the_emulator_ca(tls_emulator: Emulator) -> None:
    tls_emulator.reset()
    assert tls_emulator.endpoint.startswith("https://")
    stats = await forward_all(sink_for(tls_emulator), rows(20))
    assert stats.sent == 20 == tls_emulator.count(tls_emulator.table)


async def test_throttled_with_retry_after_then_success(emu: Emulator) -> None:
    emu.faults.fail_next(2, 429, retry_after=0.05)
    stats = await forward_all(sink_for(emu), rows(50))
    assert stats.sent == 50 == emu.count(emu.table)
    assert emu.stats().by_status == {429: 2, 204: 1}


async def test_server_error_burst_is_ridden_out(emu: Emulator) -> None:
    emu.faults.fail_next(3, 500)
    emu.faults.fail_next(1, 502)
    stats = await forward_all(sink_for(emu), rows(30))
    assert stats.sent == 30 == emu.count(emu.table)


async def test_dropped_connection_is_retried(emu: Emulator) -> None:
    emu.faults.drop_next(2)
    stats = await forward_all(sink_for(emu), rows(30))
    assert stats.sent == 30 == emu.count(emu.table)


async def test_retries_exhausted_after_the_budget(emu: Emulator) -> None:
    emu.faults.fail_next(1000, 503)
    stats = await forward_all(sink_for(emu, retry_timeout=0.3, max_retries=1000), rows(10))
    assert stats.dropped == {"retries_exhausted": 10}
    assert emu.count(emu.table) == 0
    assert "503" in (stats.last_error or "")


async def test_a_request_refused_as_a_whole_costs_only_its_chunk(emu: Emulator) -> None:
    # The chunk and both of its halves refused alike: the request is at fault, not a row (see test_poison.py)
    emu.faults.fail_next(3, 400, code="InvalidStream", message="bad payload")
    stats = await forward_all(sink_for(emu), rows(200), max_batches_in_flight=1, max_request_rows=100)
    assert stats.sent == 100 == emu.count(emu.table)
    assert stats.dropped == {"rejected": 100}
    assert "(InvalidStream) bad payload" in (stats.last_error or "")
    assert "the whole request was refused" in (stats.last_error or "")
    assert emu.stats().by_status == {400: 3, 204: 1}


async def test_a_passing_refusal_of_one_chunk_is_isolated_away(emu: Emulator) -> None:
    emu.faults.fail_next(1, 400, code="InvalidStream", message="bad payload")
    stats = await forward_all(sink_for(emu), rows(200), max_batches_in_flight=1)
    assert stats.sent == 200 == emu.count(emu.table)  # both halves of the refused chunk got through


async def test_wrong_column_type_is_rejected_by_the_service(emu: Emulator) -> None:
    good = rows(3)
    bad = AuditEntry("typed wrong", extra={"Unknown": 1})  # undeclared columns are ignored, not an error
    # Azure drops the undeclared column silently: a default (Azure-faithful) emulator answers 204 and records
    # the loss; the strict fixture would refuse it.
    with Emulator() as faithful:
        stats = await forward_all(sink_for(faithful), [*good, bad])
        assert stats.sent == 4
        assert [(loss.column, loss.kind) for loss in faithful.losses()] == [("Unknown", "undeclared_column")]


async def test_unauthorized_401(emu: Emulator) -> None:
    with Emulator(tokens={"the-right-token"}) as strict:
        stats = await forward_all(sink_for(strict, credential=EmulatorCredential("a-wrong-token")), rows(5))
        assert stats.dropped == {"unauthorized": 5}
        assert strict.count(strict.table) == 0
    assert "Monitoring Metrics Publisher" in (stats.last_error or "")


async def test_forbidden_403(emu: Emulator) -> None:
    emu.faults.fail_next(1, 403)
    stats = await forward_all(sink_for(emu), rows(5))
    assert stats.dropped == {"unauthorized": 5}
    assert "Monitoring Metrics Publisher" in (stats.last_error or "")


async def test_unknown_dcr_is_not_found(emu: Emulator) -> None:
    stats = await forward_all(sink_for(emu, rule_id="dcr-ffffffffffffffffffffffffffffffff"), rows(5))
    assert stats.dropped == {"not_found": 5}
    assert "dcr-ffffffffffffffffffffffffffffffff" in (stats.last_error or "")


async def test_unknown_stream_is_not_found(emu: Emulator) -> None:
    stats = await forward_all(sink_for(emu, stream_name="Custom-Nothing_CL"), rows(5))
    assert stats.dropped == {"not_found": 5}


async def test_413_from_the_service_is_too_large(emu: Emulator) -> None:
    emu.faults.fail_next(1, 413)
    stats = await forward_all(sink_for(emu), rows(5))
    assert stats.dropped == {"too_large": 5}


async def test_token_failure_is_its_own_reason(emu: Emulator) -> None:
    stats = await forward_all(sink_for(emu, credential=EmulatorCredential(fail=True)), rows(5))
    assert stats.dropped == {"credential_error": 5}
    assert emu.stats().requests == 0


async def test_oversized_row_is_dropped_alone(emu: Emulator, codec: Codec) -> None:
    entries = rows(3)
    huge = AuditEntry("y" * (MAX_REQUEST_BYTES + 10), severity=Severity.LOW)
    stats = await forward_all(sink_for(emu), [entries[0], huge, *entries[1:]])
    assert stats.dropped == {"too_large": 1}
    assert huge.id in (stats.last_error or "")
    assert sorted(landed_ids(emu)) == sorted(e.id for e in entries)


async def test_unserialisable_row_is_dropped_alone(emu: Emulator, codec: Codec) -> None:
    entries = rows(3)
    odd = AuditEntry("odd", extra={"Blob": object()})
    stats = await forward_all(sink_for(emu), [*entries, odd])
    assert stats.dropped == {"invalid_row": 1}
    assert sorted(landed_ids(emu)) == sorted(e.id for e in entries)


async def test_big_batch_is_cut_into_chunks_under_the_limit(emu: Emulator, codec: Codec) -> None:
    entries = rows(2500, size=1000)  # ~2.7 MB of JSON in one batch
    stats = await forward_all(sink_for(emu), entries, max_batch_size=2500)
    assert stats.sent == 2500 == emu.count(emu.table)
    s = emu.stats()
    assert s.requests >= 3
    assert s.bytes_decompressed <= s.requests * MAX_REQUEST_BYTES


def test_plain_http_is_refused_off_loopback() -> None:
    with pytest.raises(ValueError, match="https"):
        AzureSentinelForwarder("http://example.com", EmulatorCredential(), rule_id="dcr-1")
    AzureSentinelForwarder("http://127.0.0.1:9", EmulatorCredential(), rule_id="dcr-1")
    AzureSentinelForwarder("http://[::1]:9", EmulatorCredential(), rule_id="dcr-1")


def test_secrets_stay_out_of_reprs() -> None:
    cred = EmulatorCredential("super-secret-token")
    sink = AzureSentinelForwarder("https://dce.example.com", cred, rule_id="dcr-1")
    assert "super-secret-token" not in repr(cred)
    assert "super-secret-token" not in repr(sink)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="cloud"):
        AzureSentinelForwarder("https://x.example.com", rule_id="dcr-1", cloud="mars")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rule_id"):
        AzureSentinelForwarder("https://x.example.com", rule_id="")
    with pytest.raises(ValueError, match="not an http"):
        AzureSentinelForwarder("dce.example.com", rule_id="dcr-1")


class ScopeRecordingCredential(EmulatorCredential):
    """Records the scopes azure-core's bearer policy asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.scopes.append(scopes)
        return super().get_token(*scopes, **kwargs)

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        self.scopes.append(scopes)
        return super().get_token_info(*scopes, options=options)


@pytest.mark.parametrize(
    ("cloud", "scope"),
    [
        ("public", "https://monitor.azure.com/.default"),
        ("usgov", "https://monitor.azure.us/.default"),
        ("china", "https://monitor.azure.cn/.default"),
    ],
)
async def test_token_audience_follows_the_cloud(emu: Emulator, cloud: str, scope: str) -> None:
    credential = ScopeRecordingCredential()
    stats = await forward_all(sink_for(emu, credential=credential, cloud=cloud), rows(3))
    assert stats.sent == 3
    assert credential.scopes and all(s == (scope,) for s in credential.scopes)


async def test_sending_before_open_is_a_clear_error() -> None:
    sink = AzureSentinelForwarder("http://127.0.0.1:9", EmulatorCredential(), rule_id="dcr-1")
    with pytest.raises(RuntimeError, match="not open"):
        await sink.send_batch(rows(1))
