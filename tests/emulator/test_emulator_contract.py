"""The service contract, through the unmodified sync SDK client over loopback HTTP and HTTPS."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.monitor.ingestion import LogsIngestionClient, LogsUploadError
from emulator_helpers import TYPED_RULE_ID, recent, sync_client, upload_kwargs

from sentinel_forwarder import AUDIT_TABLE
from sentinel_forwarder.emulator import DEFAULT_RULE_ID, Emulator, EmulatorCredential

Upload = Callable[..., None]
MakeRow = Callable[..., dict[str, Any]]


def check_error(exc: HttpResponseError, status: int, code: str, message: str | None = None) -> None:
    assert exc.status_code == status
    assert exc.error is not None
    assert exc.error.code == code
    assert exc.response is not None
    assert exc.response.headers["x-ms-error-code"] == code
    if message is not None:
        assert exc.error.message == message


def test_defaults(emu: Emulator) -> None:
    assert emu.rule_id == DEFAULT_RULE_ID == "dcr-00000000000000000000000000000000"
    assert emu.stream_name == AUDIT_TABLE.stream == "Custom-AISentinelAudit_CL"
    assert emu.table == AUDIT_TABLE.name
    assert emu.endpoint.startswith(("http://127.0.0.1:", "https://127.0.0.1:"))
    assert (emu.ca_path is not None) == emu.endpoint.startswith("https://")
    assert emu.rules[DEFAULT_RULE_ID].streams[emu.stream_name].columns == {
        c["name"]: c["type"] for c in AUDIT_TABLE.stream_columns()
    }


def test_upload_lands_rows_in_order(emu: Emulator, upload: Upload, make_row: MakeRow) -> None:
    rows = [make_row() for _ in range(25)]
    upload(rows)
    assert emu.rows(emu.table) == rows
    assert emu.count(emu.table) == 25
    stats = emu.stats()
    assert stats.requests == 1
    assert dict(stats.by_status) == {204: 1}
    assert stats.rows_accepted == 25
    assert 0 < stats.bytes_received < stats.bytes_decompressed  # the SDK gzips
    meta = emu.rows(emu.table, meta=True, limit=1)[0]
    assert meta["_RuleId"] == emu.rule_id
    assert meta["_Stream"] == emu.stream_name
    assert meta["_IngestedAt"].endswith("Z")


def test_large_upload_is_split_by_the_sdk(emu: Emulator, upload: Upload, make_row: MakeRow) -> None:
    rows = [make_row(Summary="x" * 2000) for _ in range(1500)]  # ~3.5 MB of JSON
    upload(rows)
    assert emu.count(emu.table) == 1500
    assert emu.stats().requests >= 3
    assert [r["Id"] for r in emu.rows(emu.table)] == [r["Id"] for r in rows]


# What Azure silently drops or alters is refused in strict mode (the fixtures' mode); the faithful default
# is tested in test_emulator_fidelity.py.


def test_strict_undeclared_column_is_400(emu: Emulator, upload: Upload, make_row: MakeRow) -> None:
    with pytest.raises(HttpResponseError) as info:
        upload([make_row(), make_row(Surprise="not declared", Id="a")])
    check_error(info.value, 400, "UndeclaredColumn")
    assert info.value.error is not None
    assert "Record 1, column 'Surprise'" in info.value.error.message
    assert "strict mode" in info.value.error.message
    assert emu.count(emu.table) == 0
    assert emu.losses() == []


def test_strict_long_string_is_400(emu: Emulator, upload: Upload, make_row: MakeRow) -> None:
    with pytest.raises(HttpResponseError) as info:
        upload([make_row(Summary="x" * 65_537)])
    check_error(info.value, 400, "FieldTooLong")
    upload([make_row(Summary="x" * 65_536)])  # exactly 64 KB is fine
    assert emu.count(emu.table) == 1


@pytest.mark.parametrize("when", [{"days": -2, "minutes": -1}, {"days": 1, "minutes": 1}])
def test_strict_time_generated_out_of_range_is_400(
    emu: Emulator, upload: Upload, make_row: MakeRow, when: dict[str, float]
) -> None:
    with pytest.raises(HttpResponseError) as info:
        upload([make_row(TimeGenerated=recent(**when))])
    check_error(info.value, 400, "TimeGeneratedOutOfRange")
    assert info.value.error is not None
    assert "Record 0, column 'TimeGenerated'" in info.value.error.message


def test_time_generated_inside_the_window_is_stored_as_sent(
    emu: Emulator, upload: Upload, make_row: MakeRow
) -> None:
    rows = [make_row(TimeGenerated=recent(days=-2, minutes=1)), make_row(TimeGenerated=recent(hours=23))]
    upload(rows)
    assert [r["TimeGenerated"] for r in emu.rows(emu.table)] == [r["TimeGenerated"] for r in rows]


def test_all_column_types(emu: Emulator, upload: Upload) -> None:
    row = {
        "TimeGenerated": recent(hours=-3)[:19] + "+02:00",
        "S": "text",
        "I": -(2**31),
        "L": 2**63 - 1,
        "R": 1.5,
        "B": False,
        "D": {"nested": [1, "two", None]},
    }
    upload(
        [row, {"TimeGenerated": recent()[:16] + "Z", "R": 3, "D": "plain", "S": None}],
        rule_id=TYPED_RULE_ID,
        stream="Custom-Typed",
    )
    assert emu.rows("Typed_CL")[0] == row
    assert emu.rows("Extra_CL") == emu.rows("Typed_CL")  # two data flows, two tables
    assert emu.stats().rows_accepted == 2


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("S", 5),
        ("S", {"a": 1}),
        ("I", "5"),
        ("I", 1.5),
        ("I", True),
        ("I", 2**31),
        ("L", 2**63),
        ("L", 1.0),
        ("R", "1.5"),
        ("R", False),
        ("B", "true"),
        ("B", 1),
        ("TimeGenerated", 1714564800),
        ("TimeGenerated", "2024-05-01"),
        ("TimeGenerated", "01/05/2024 12:00"),
        ("TimeGenerated", "2024-13-01T00:00:00Z"),
        ("TimeGenerated", "2024-05-01T12"),
    ],
)
def test_wrong_type_is_rejected_naming_row_and_column(
    emu: Emulator, upload: Upload, column: str, value: Any
) -> None:
    good = {"TimeGenerated": recent(), "S": "ok"}
    with pytest.raises(HttpResponseError) as info:
        upload([good, {**good, column: value}], rule_id=TYPED_RULE_ID, stream="Custom-Typed")
    check_error(info.value, 400, "InvalidColumnValue")
    assert info.value.error is not None
    assert f"Record 1, column '{column}'" in info.value.error.message
    assert emu.count("Typed_CL") == 0  # the whole request is rejected


def test_unknown_rule(emu: Emulator, upload: Upload, make_row: MakeRow) -> None:
    with pytest.raises(ResourceNotFoundError) as info:
        upload([make_row()], rule_id="dcr-ffffffffffffffffffffffffffffffff")
    check_error(
        info.value,
        404,
        "NotFound",
        "Data collection rule with immutable Id 'dcr-ffffffffffffffffffffffffffffffff' not found.",
    )


def test_unknown_stream(emu: Emulator, upload: Upload, make_row: MakeRow) -> None:
    with pytest.raises(ResourceNotFoundError) as info:
        upload([make_row()], stream="Custom-Nope")
    check_error(info.value, 404, "InvalidStream")


def test_on_error_gets_the_failed_rows(emu: Emulator, upload: Upload, make_row: MakeRow) -> None:
    failures: list[LogsUploadError] = []
    rows = [make_row()]
    upload(rows, stream="Custom-Nope", on_error=failures.append)
    assert len(failures) == 1
    assert failures[0].failed_logs == rows
    assert isinstance(failures[0].error, ResourceNotFoundError)


def test_bare_object_is_rejected(emu: Emulator, upload: Upload, make_row: MakeRow) -> None:
    with pytest.raises(HttpResponseError) as info:
        upload(io.BytesIO(json.dumps(make_row()).encode()))
    check_error(info.value, 400, "InvalidPayload")
    assert info.value.error is not None
    assert "JSON array" in info.value.error.message


@pytest.mark.parametrize(
    "body",
    [b"[{", b'[{"Id": NaN}]', b"\xff\xfe[]", b'[{"Id": "\xc3\x28"}]', b""],
    ids=["truncated", "nan", "bom-utf16", "bad-utf8", "empty"],
)
def test_malformed_body_is_rejected(emu: Emulator, upload: Upload, body: bytes) -> None:
    with pytest.raises(HttpResponseError) as info:
        upload(io.BytesIO(body))
    check_error(info.value, 400, "InvalidJson")


def test_array_of_non_objects_is_rejected(emu: Emulator, upload: Upload) -> None:
    with pytest.raises(HttpResponseError) as info:
        upload(io.BytesIO(b'[{"Id": "1"}, 2]'))
    check_error(info.value, 400, "InvalidPayload")
    assert info.value.error is not None
    assert "Record 1" in info.value.error.message


def test_empty_array_is_accepted(emu: Emulator, upload: Upload) -> None:
    upload(io.BytesIO(b"[]"))
    assert dict(emu.stats().by_status) == {204: 1}


def test_oversized_stream_body_is_413(emu: Emulator, upload: Upload, make_row: MakeRow) -> None:
    body = json.dumps([make_row(Summary="y" * 10_000) for _ in range(110)]).encode()
    assert len(body) > 1_048_576
    with pytest.raises(HttpResponseError) as info:
        upload(io.BytesIO(body))
    check_error(
        info.value,
        413,
        "ContentLengthLimitExceeded",
        f"Maximum allowed content length: 1048576 bytes (1 MB). Provided content length: {len(body)} bytes.",
    )


def test_injected_failures_then_sdk_retries(emu: Emulator, make_row: MakeRow) -> None:
    emu.faults.fail_next(2, 503, retry_after=0)
    with sync_client(emu, retry_total=3) as client:
        client.upload(emu.rule_id, emu.stream_name, [make_row()], **upload_kwargs(emu))
    assert dict(emu.stats().by_status) == {503: 2, 204: 1}
    assert emu.count(emu.table) == 1


def test_injected_failure_body_and_headers(emu: Emulator, upload: Upload, make_row: MakeRow) -> None:
    emu.faults.fail_next(1, 429, retry_after=7, code="Throttled", message="slow down")
    with pytest.raises(HttpResponseError) as info:
        upload([make_row()])
    check_error(info.value, 429, "Throttled", "slow down")
    assert info.value.response is not None
    assert info.value.response.headers["Retry-After"] == "7"
    emu.faults.fail_next(1, 500)
    with pytest.raises(HttpResponseError) as info:
        upload([make_row()])
    check_error(info.value, 500, "InternalServerError")
    upload([make_row()])  # the script is used up


def test_rate_limit_answers_429_with_retry_after(emu: Emulator, upload: Upload, make_row: MakeRow) -> None:
    emu.faults.rate_limit(emu.rule_id, requests_per_minute=2)
    upload([make_row()])
    upload([make_row()])
    with pytest.raises(HttpResponseError) as info:
        upload([make_row()])
    check_error(info.value, 429, "TooManyRequests")
    assert info.value.response is not None
    assert 1 <= int(info.value.response.headers["Retry-After"]) <= 60
    upload([{"S": "x"}], rule_id=TYPED_RULE_ID, stream="Custom-Typed")  # other DCRs are not limited
    emu.faults.rate_limit(emu.rule_id)  # lifted
    upload([make_row()])
    assert emu.count(emu.table) == 3


def test_token_from_a_fixed_set() -> None:
    with Emulator(tokens=["good-token"]) as emu:
        with sync_client(emu, credential=EmulatorCredential("bad-token")) as client:
            with pytest.raises(ClientAuthenticationError) as info:
                client.upload(emu.rule_id, emu.stream_name, [{"Id": "1"}], enforce_https=False)
            check_error(info.value, 401, "InvalidAuthenticationToken")
        with sync_client(emu, credential=EmulatorCredential("good-token")) as client:
            client.upload(emu.rule_id, emu.stream_name, [{"Id": "1"}], enforce_https=False)
        assert emu.count(emu.table) == 1


def test_failing_credential_sends_nothing(emu: Emulator) -> None:
    credential = EmulatorCredential(fail=True)
    with sync_client(emu, credential=credential) as client:
        with pytest.raises(ClientAuthenticationError):
            client.upload(emu.rule_id, emu.stream_name, [{"Id": "1"}], **upload_kwargs(emu))
        assert emu.stats().requests == 0
        credential.fail = False
        client.upload(emu.rule_id, emu.stream_name, [{"Id": "1"}], **upload_kwargs(emu))
    assert emu.count(emu.table) == 1


def test_plain_http_needs_enforce_https_false(http_emu: Emulator) -> None:
    with sync_client(http_emu) as client, pytest.raises(ServiceRequestError, match="non-TLS"):
        client.upload(http_emu.rule_id, http_emu.stream_name, [{"Id": "1"}])


def test_https_rejects_an_untrusted_certificate(https_emu: Emulator) -> None:
    client = LogsIngestionClient(https_emu.endpoint, EmulatorCredential(), retry_total=0)
    with client, pytest.raises(ServiceRequestError):
        client.upload(https_emu.rule_id, https_emu.stream_name, [{"Id": "1"}])


def test_localhost_name_is_in_the_certificate(https_emu: Emulator) -> None:
    assert https_emu.ca_path is not None
    endpoint = https_emu.endpoint.replace("127.0.0.1", "localhost")
    with LogsIngestionClient(
        endpoint, EmulatorCredential(), connection_verify=str(https_emu.ca_path)
    ) as client:
        client.upload(https_emu.rule_id, https_emu.stream_name, [{"Id": "1"}])
    assert https_emu.count(https_emu.table) >= 1
