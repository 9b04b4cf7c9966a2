"""Azure-faithful by default: what the service accepts and silently loses or alters, recorded and reported.

Sources for each behaviour are in docs/emulator.md ("Where it differs from the real service") and
/work/shared/reference/logs-ingestion-api.md; the strict-mode twins of these tests are in
test_emulator_contract.py and test_emulator_http.py.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.exceptions import HttpResponseError
from emulator_helpers import TYPED_DCR, TYPED_RULE_ID, audit_row, recent, sync_client

from sentinel_forwarder.emulator import (
    MAX_BODY_BYTES,
    MAX_DECODED_BYTES,
    Emulator,
    Loss,
    format_loss_report,
    read_losses,
)
from sentinel_forwarder.emulator._dcr import parse_datetime
from sentinel_forwarder.emulator._store import list_tables

APP_LOGGER = "sentinel_forwarder.emulator._app"


@pytest.fixture(scope="module")
def faithful_emu() -> Iterator[Emulator]:
    with Emulator(dcrs=[TYPED_DCR]) as emu:
        yield emu


@pytest.fixture
def emu(faithful_emu: Emulator) -> Iterator[Emulator]:
    faithful_emu.reset()
    yield faithful_emu
    faithful_emu.reset()


@pytest.fixture
def http(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.endpoint, timeout=30) as client:
        yield client


def post(
    http: httpx.Client,
    body: Any,
    *,
    rule_id: str | None = None,
    stream: str | None = None,
    gzipped: bool = False,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    rule_id = rule_id or TYPED_RULE_ID
    stream = stream or "Custom-Typed"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    all_headers = {"Authorization": "Bearer t", "Content-Type": "application/json", **(headers or {})}
    if gzipped:
        content = gzip.compress(content)
        all_headers["Content-Encoding"] = "gzip"
    return http.post(
        f"/dataCollectionRules/{rule_id}/streams/{stream}",
        params={"api-version": "2023-01-01"},
        content=content,
        headers=all_headers,
    )


def test_default_mode_is_not_strict(emu: Emulator) -> None:
    assert not emu.strict
    assert emu.cloud == "public"


# -- size: the 1 MiB limit applies to the body as sent -----------------------------------------------------


def test_gzip_body_under_the_limit_that_inflates_past_it_is_accepted(
    emu: Emulator, http: httpx.Client
) -> None:
    # .NET live test UploadOneLogGreaterThan1Mb; otel-arrow PRs #2535/#2388: the check is on the wire bytes.
    rows = [audit_row(Summary=f"{n} " + "z" * 2_000) for n in range(1_500)]
    body = json.dumps(rows).encode()
    assert len(body) > 3 * MAX_BODY_BYTES
    assert len(gzip.compress(body)) < MAX_BODY_BYTES
    assert post(http, body, rule_id=emu.rule_id, stream=emu.stream_name, gzipped=True).status_code == 204
    assert emu.count(emu.table) == 1_500
    assert emu.losses() == []


def test_uncompressed_body_over_the_limit_is_still_413(emu: Emulator, http: httpx.Client) -> None:
    body = b"[" + b" " * MAX_BODY_BYTES + b"]"
    response = post(http, body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "ContentLengthLimitExceeded"


def test_decoded_body_over_the_decoded_limit_is_413(emu: Emulator, http: httpx.Client) -> None:
    # Unverified limit (~50 MiB in otel-arrow's notes); a bomb well past it is refused without holding it.
    decoded = MAX_DECODED_BYTES + MAX_BODY_BYTES
    bomb = b"[" + b" " * (decoded - 2) + b"]"
    response = post(http, bomb, gzipped=True)
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "ContentLengthLimitExceeded"
    assert error["message"] == (
        f"Maximum allowed decoded content length: {MAX_DECODED_BYTES} bytes (50 MB). "
        f"Decoded content length: {decoded} bytes."
    )
    assert emu.stats().bytes_decompressed == 0


# -- silent losses: accepted with 204, recorded -----------------------------------------------------------


def test_bare_object_is_204_lost_and_recorded(
    emu: Emulator, http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    # azure-sdk-for-python #32562, azure-docs #112669.
    with caplog.at_level(logging.WARNING, logger=APP_LOGGER):
        response = post(http, {"TimeGenerated": recent(), "S": "lost"})
    assert response.status_code == 204
    assert emu.count("Typed_CL") == 0
    request_id = response.headers["x-ms-request-id"]
    (loss,) = emu.losses()
    assert loss == Loss(request_id, TYPED_RULE_ID, "Custom-Typed", None, None, "bare_object", loss.detail)
    assert "not an array" in loss.detail
    (warning,) = [r for r in caplog.records if r.name == APP_LOGGER and r.levelno == logging.WARNING]
    assert request_id in warning.getMessage()
    assert "bare JSON object body dropped" in warning.getMessage()


def test_bare_object_through_the_sdk_is_silently_lost(emu: Emulator) -> None:
    with sync_client(emu) as client:
        client.upload(
            emu.rule_id, emu.stream_name, io.BytesIO(json.dumps(audit_row()).encode()), enforce_https=False
        )
    assert emu.count(emu.table) == 0
    assert [loss.kind for loss in emu.losses()] == ["bare_object"]


def test_undeclared_columns_are_dropped_and_recorded(emu: Emulator, http: httpx.Client) -> None:
    # Java SDK record; LiteLLM #32010.
    rows = [{"S": "a", "Extra": 1}, {"S": "b"}, {"S": "c", "Extra": 2, "Other": None}]
    response = post(http, rows)
    assert response.status_code == 204
    assert emu.rows("Typed_CL") == [{"S": "a"}, {"S": "b"}, {"S": "c"}]
    losses = emu.losses()
    assert [(x.row, x.column, x.kind) for x in losses] == [
        (0, "Extra", "undeclared_column"),
        (2, "Extra", "undeclared_column"),
        (2, "Other", "undeclared_column"),
    ]
    assert {x.request_id for x in losses} == {response.headers["x-ms-request-id"]}
    assert emu.stats().silent_losses == 3
    assert emu.stats().rows_accepted == 3


def test_integer_and_object_in_a_string_column_are_stored_as_text(emu: Emulator, http: httpx.Client) -> None:
    # Python, JS and .NET SDK recordings: 204. How the service renders them is unverified: compact JSON text.
    response = post(http, [{"S": 5}, {"S": {"a": [1, "x"]}}, {"S": "plain"}])
    assert response.status_code == 204
    assert [r["S"] for r in emu.rows("Typed_CL")] == ["5", '{"a":[1,"x"]}', "plain"]
    assert [(x.row, x.column, x.kind) for x in emu.losses()] == [(0, "S", "coerced"), (1, "S", "coerced")]


@pytest.mark.parametrize("value", [1.5, True, [1, 2]])
def test_other_types_in_a_string_column_are_still_400(emu: Emulator, http: httpx.Client, value: Any) -> None:
    # Undocumented: the emulator stays loud rather than guess a conversion.
    response = post(http, [{"S": value}])
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidColumnValue"


def test_time_generated_out_of_range_is_replaced_by_the_receive_time(
    emu: Emulator, http: httpx.Client
) -> None:
    # Learn, log-standard-columns: more than 2 days old or more than 1 day ahead → the time it was received.
    old, ahead, fine = recent(days=-2, minutes=-5), recent(days=1, minutes=5), recent(days=-1)
    before = datetime.now(timezone.utc)
    response = post(http, [{"TimeGenerated": old}, {"TimeGenerated": ahead}, {"TimeGenerated": fine}])
    after = datetime.now(timezone.utc)
    assert response.status_code == 204
    stored = [r["TimeGenerated"] for r in emu.rows("Typed_CL")]
    assert stored[2] == fine
    for value in stored[:2]:
        assert before <= parse_datetime(value) <= after
    losses = emu.losses()
    assert [(x.row, x.column, x.kind) for x in losses] == [
        (0, "TimeGenerated", "time_replaced"),
        (1, "TimeGenerated", "time_replaced"),
    ]
    assert old in losses[0].detail and "more than 2 days before" in losses[0].detail
    assert "more than 1 day after" in losses[1].detail


def test_space_separated_datetime_is_accepted(emu: Emulator, http: httpx.Client) -> None:
    # The docs' own request example sends "2023-11-14 15:10:02".
    value = recent(hours=-1)[:19].replace("T", " ")
    assert post(http, [{"TimeGenerated": value}]).status_code == 204
    assert emu.rows("Typed_CL") == [{"TimeGenerated": value}]
    assert emu.losses() == []


def test_long_strings_are_truncated_on_a_character_boundary_and_recorded(
    emu: Emulator, http: httpx.Client
) -> None:
    summary = "ab" + "€" * 30_000  # 90,002 UTF-8 bytes
    assert post(http, [{"S": summary}]).status_code == 204
    stored = emu.rows("Typed_CL")[0]["S"]
    # 2 + 3 * 21844 = 65,534 bytes: the character that would straddle 65,536 is dropped whole.
    assert len(stored.encode("utf-8")) == 65_534
    assert summary.startswith(stored)
    (loss,) = emu.losses()
    assert (loss.row, loss.column, loss.kind) == (0, "S", "truncated")
    assert "90002" in loss.detail


# -- showing the losses -------------------------------------------------------------------------------------


def test_one_warning_line_per_request_that_lost_data(
    emu: Emulator, http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=APP_LOGGER):
        first = post(http, [{"S": "a", "X": 1}, {"S": 2, "Y": 3}])
        assert post(http, [{"S": "clean"}]).status_code == 204
        second = post(http, [{"S": "b", "X": 1}])
    warnings = [
        r.getMessage() for r in caplog.records if r.name == APP_LOGGER and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 2
    assert first.headers["x-ms-request-id"] in warnings[0]
    assert "2 undeclared column value(s) dropped (X, Y)" in warnings[0]
    assert "1 value(s) coerced to string (S)" in warnings[0]
    assert second.headers["x-ms-request-id"] in warnings[1]


def test_admin_endpoint_lists_losses(emu: Emulator, http: httpx.Client) -> None:
    response = post(http, [{"S": "a", "X": 1}, {"S": "b", "X": 2}])
    answer = http.get("/_emulator/losses").json()
    assert answer["total"] == 2
    assert answer["losses"][0] == {
        "request_id": response.headers["x-ms-request-id"],
        "rule_id": TYPED_RULE_ID,
        "stream": "Custom-Typed",
        "row": 0,
        "column": "X",
        "kind": "undeclared_column",
        "detail": "column not declared in stream 'Custom-Typed': dropped",
    }
    assert len(http.get("/_emulator/losses", params={"limit": 1}).json()["losses"]) == 1
    assert http.get("/_emulator/stats").json()["silent_losses"] == 2
    assert http.post("/_emulator/reset", headers={"Content-Type": "application/json"}).status_code == 204
    assert http.get("/_emulator/losses").json() == {"total": 0, "losses": []}
    assert emu.losses() == []


def test_loss_report(emu: Emulator, http: httpx.Client) -> None:
    assert emu.loss_report().startswith("No silent data loss")
    response = post(http, [{"S": "a", "X": 1}])
    report = emu.loss_report()
    assert report.splitlines() == [
        "1 silent loss(es) in 1 request(s) that Azure would answer 204 (strict mode answers 400 instead):",
        f"request {response.headers['x-ms-request-id']} ({TYPED_RULE_ID} / Custom-Typed): "
        "1 undeclared column value(s) dropped (X)",
        "  record 0, column 'X': column not declared in stream 'Custom-Typed': dropped",
    ]


def test_losses_persist_in_the_database_file(tmp_path: Path) -> None:
    db = tmp_path / "emulator.sqlite"
    with Emulator(db=db, dcrs=[TYPED_DCR]) as emu, httpx.Client(base_url=emu.endpoint) as http:
        assert post(http, [{"S": 1}]).status_code == 204
        recorded = emu.losses()
    assert read_losses(db) == recorded
    assert [x.kind for x in recorded] == ["coerced"]
    assert "_EmulatorLosses" not in list_tables(db)  # not a table of rows
    assert format_loss_report(read_losses(db)).startswith("1 silent loss(es)")


def test_loss_recording_is_bounded(
    monkeypatch: pytest.MonkeyPatch, emu: Emulator, http: httpx.Client
) -> None:
    monkeypatch.setattr("sentinel_forwarder.emulator._store.MAX_RECORDED_LOSSES", 3)
    post(http, [{"S": "a", "X": n} for n in range(5)])
    assert len(emu.losses()) == 3
    assert emu.stats().silent_losses == 5
    assert "(2 more not recorded" in emu.loss_report()


# -- strict mode refuses each of them ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"S": "bare"}, "InvalidPayload"),
        ([{"S": "a", "X": 1}], "UndeclaredColumn"),
        ([{"S": 5}], "InvalidColumnValue"),
        ([{"S": {"a": 1}}], "InvalidColumnValue"),
        ([{"S": "x" * 70_000}], "FieldTooLong"),
        ([{"TimeGenerated": "2020-01-01T00:00:00Z"}], "TimeGeneratedOutOfRange"),
    ],
    ids=["bare-object", "undeclared", "int-in-string", "object-in-string", "too-long", "old-time"],
)
def test_strict_mode_answers_400_for_each_silent_loss(body: Any, code: str) -> None:
    with Emulator(dcrs=[TYPED_DCR], strict=True) as strict, httpx.Client(base_url=strict.endpoint) as http:
        response = post(http, body)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == code
        assert "strict mode" in error["message"]
        assert strict.count("Typed_CL") == 0
        assert strict.losses() == []


def sdk_rows() -> list[dict[str, Any]]:
    """12,000 rows of about 110 bytes: the SDK's first chunk is ~9,500 rows and over 1 MiB as JSON."""
    return [{"TimeGenerated": recent(), "S": f"row {n:05d} " + "x" * 40, "I": n} for n in range(12_000)]


def test_stock_sdk_upload_of_12000_rows_loses_nothing(emu: Emulator) -> None:
    """The stock SDK's upload() of 12,000 small rows: Azure (and the default emulator) take every chunk.

    Its chunker sums json.dumps() of each row and ignores the separators, so its JSON chunks come out a little
    over 1 MiB (1,067,594 bytes for these rows); the gzipped bodies are far below it. A strict emulator
    refuses those chunks as over the documented uncompressed limit, which proves the chunks really are
    larger than 1 MiB decoded, so the default emulator's acceptance is the as-sent check at work.
    """
    rows = sdk_rows()
    with sync_client(emu) as client:
        client.upload(TYPED_RULE_ID, "Custom-Typed", rows, enforce_https=False)
    assert emu.count("Typed_CL") == 12_000
    assert [r["S"] for r in emu.rows("Typed_CL")] == [r["S"] for r in rows]
    assert emu.losses() == []

    failed: list[Any] = []
    with Emulator(dcrs=[TYPED_DCR], strict=True) as strict, sync_client(strict) as client:
        client.upload(
            TYPED_RULE_ID,
            "Custom-Typed",
            rows,
            enforce_https=False,
            on_error=lambda e: failed.extend(e.failed_logs),
        )
        assert failed
        assert strict.count("Typed_CL") + len(failed) == 12_000


def test_sdk_upload_of_a_bad_value_still_raises(emu: Emulator) -> None:
    with sync_client(emu) as client, pytest.raises(HttpResponseError) as info:
        client.upload(TYPED_RULE_ID, "Custom-Typed", [{"I": "five"}], enforce_https=False)
    assert info.value.status_code == 400


def test_request_ids_of_losses_are_uuids(emu: Emulator, http: httpx.Client) -> None:
    post(http, [{"S": 1}])
    (loss,) = emu.losses()
    assert uuid.UUID(loss.request_id)


@pytest.mark.anyio
async def test_stock_async_sdk_upload_of_12000_rows_loses_nothing(emu: Emulator, anyio_backend: str) -> None:
    from azure.monitor.ingestion import LogsUploadError
    from azure.monitor.ingestion.aio import LogsIngestionClient as AsyncLogsIngestionClient

    from sentinel_forwarder.emulator import AsyncEmulatorCredential

    kwargs: dict[str, Any] = {"retry_total": 0}
    if anyio_backend == "trio":
        from azure.core.pipeline.transport import TrioRequestsTransport

        kwargs["transport"] = TrioRequestsTransport()
    failed: list[Any] = []

    async def on_error(error: LogsUploadError) -> None:
        failed.extend(error.failed_logs)

    rows = sdk_rows()
    async with AsyncLogsIngestionClient(emu.endpoint, AsyncEmulatorCredential(), **kwargs) as client:
        await client.upload(TYPED_RULE_ID, "Custom-Typed", rows, enforce_https=False, on_error=on_error)
    assert failed == []
    assert emu.count("Typed_CL") == 12_000
    assert emu.stats().requests == 2
