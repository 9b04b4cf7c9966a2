"""Raw HTTP (httpx): headers the SDK always gets right, size limits, gzip bombs, the admin endpoints."""

from __future__ import annotations

import gzip
import json
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from sentinel_forwarder.emulator import MAX_BODY_BYTES, Emulator

MakeRow = Callable[..., dict[str, Any]]
TOO_LARGE = "Maximum allowed content length: 1048576 bytes (1 MB). Provided content length: {} bytes."


@pytest.fixture
def http(emu: Emulator) -> Iterator[httpx.Client]:
    verify: Any = ssl.create_default_context(cafile=str(emu.ca_path)) if emu.ca_path else True
    with httpx.Client(base_url=emu.endpoint, verify=verify, timeout=30) as client:
        yield client


def post(
    http: httpx.Client,
    emu: Emulator,
    content: Any,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    all_headers = {"Authorization": "Bearer t", "Content-Type": "application/json", **(headers or {})}
    return http.post(
        f"/dataCollectionRules/{emu.rule_id}/streams/{emu.stream_name}",
        params={"api-version": "2023-01-01"} if params is None else params,
        headers={k: v for k, v in all_headers.items() if v},
        content=content,
    )


def check(response: httpx.Response, status: int, code: str, message: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["x-ms-error-code"] == code
    error = response.json()["error"]
    assert error["code"] == code
    if message is not None:
        assert error["message"] == message


def test_success_is_204_without_body(emu: Emulator, http: httpx.Client, make_row: MakeRow) -> None:
    response = post(http, emu, json.dumps([make_row()]))
    assert response.status_code == 204
    assert response.content == b""
    assert emu.count(emu.table) == 1


def test_gzip_body(emu: Emulator, http: httpx.Client, make_row: MakeRow) -> None:
    raw = json.dumps([make_row(), make_row()]).encode()
    response = post(http, emu, gzip.compress(raw), headers={"Content-Encoding": "gzip"})
    assert response.status_code == 204
    stats = emu.stats()
    assert stats.bytes_decompressed == len(raw)
    assert stats.bytes_received == len(gzip.compress(raw))


@pytest.mark.parametrize("authorization", ["", "Bearer", "Token abc", "Basic dXNlcjpwYXNz", "t"])
def test_missing_bearer_token_is_401(emu: Emulator, http: httpx.Client, authorization: str) -> None:
    response = post(http, emu, b"[]", headers={"Authorization": authorization})
    check(response, 401, "InvalidAuthenticationToken")
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_api_version_is_required(emu: Emulator, http: httpx.Client) -> None:
    check(post(http, emu, b"[]", params={}), 400, "MissingApiVersionParameter")
    check(post(http, emu, b"[]", params={"api-version": "1999-01-01"}), 400, "UnsupportedApiVersion")


@pytest.mark.parametrize("content_type", ["", "text/plain", "application/x-www-form-urlencoded"])
def test_content_type_must_be_json(emu: Emulator, http: httpx.Client, content_type: str) -> None:
    check(post(http, emu, b"[]", headers={"Content-Type": content_type}), 415, "UnsupportedMediaType")


def test_content_type_parameters_are_fine(emu: Emulator, http: httpx.Client) -> None:
    response = post(http, emu, b"[]", headers={"Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 204


def test_unknown_content_encoding(emu: Emulator, http: httpx.Client) -> None:
    response = post(http, emu, b"[]", headers={"Content-Encoding": "br"})
    check(response, 415, "UnsupportedContentEncoding")


@pytest.mark.parametrize(
    "body",
    [b"not gzip", gzip.compress(b"[]")[:-4], gzip.compress(b"[]") + b"junk"],
    ids=["garbage", "truncated", "trailing"],
)
def test_broken_gzip_is_400(emu: Emulator, http: httpx.Client, body: bytes) -> None:
    check(post(http, emu, body, headers={"Content-Encoding": "gzip"}), 400, "InvalidContentEncoding")


def exact_body(size: int, make_row: MakeRow) -> bytes:
    """A JSON array of rows padded with whitespace to exactly *size* bytes."""
    row = make_row(Summary="z" * 1000)
    body = json.dumps([row] * ((size - 2000) // len(json.dumps(row)))).encode()
    return body[:-1] + b" " * (size - len(body)) + b"]"


def test_exactly_one_mebibyte_is_accepted(emu: Emulator, http: httpx.Client, make_row: MakeRow) -> None:
    body = exact_body(MAX_BODY_BYTES, make_row)
    assert len(body) == MAX_BODY_BYTES
    assert post(http, emu, body).status_code == 204
    # Also as gzip: the decoded size is exactly at the limit.
    assert post(http, emu, gzip.compress(body), headers={"Content-Encoding": "gzip"}).status_code == 204


def test_one_byte_over_is_413(emu: Emulator, http: httpx.Client, make_row: MakeRow) -> None:
    body = exact_body(MAX_BODY_BYTES + 1, make_row)
    check(post(http, emu, body), 413, "ContentLengthLimitExceeded", TOO_LARGE.format(MAX_BODY_BYTES + 1))
    assert emu.count(emu.table) == 0


def test_strict_decoded_size_over_the_limit_is_413(
    emu: Emulator, http: httpx.Client, make_row: MakeRow
) -> None:
    # Strict mode holds the decoded body to the documented 1 MB too (Azure only checks the bytes as sent).
    body = exact_body(MAX_BODY_BYTES + 1, make_row)
    response = post(http, emu, gzip.compress(body), headers={"Content-Encoding": "gzip"})
    check(response, 413, "ContentLengthLimitExceeded")
    message = response.json()["error"]["message"]
    assert message.startswith(TOO_LARGE.format(MAX_BODY_BYTES + 1))
    assert "gzip-decoded" in message and "strict mode" in message


def test_gzip_bomb_is_413_without_exhausting_memory(emu: Emulator, http: httpx.Client) -> None:
    decoded = 48 * MAX_BODY_BYTES
    bomb = gzip.compress(b"[" + b" " * (decoded - 2) + b"]", compresslevel=9)
    assert len(bomb) < 100_000
    response = post(http, emu, bomb, headers={"Content-Encoding": "gzip"})
    check(response, 413, "ContentLengthLimitExceeded")
    assert response.json()["error"]["message"].startswith(TOO_LARGE.format(decoded))
    assert emu.stats().bytes_decompressed == 0


def test_huge_declared_content_length_is_413(emu: Emulator, http: httpx.Client) -> None:
    size = 5 * MAX_BODY_BYTES
    check(post(http, emu, b" " * size), 413, "ContentLengthLimitExceeded", TOO_LARGE.format(size))


def test_chunked_oversized_body_is_413(emu: Emulator, http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(40):
            yield b" " * 65_536
        yield b"]"

    response = post(http, emu, chunks())
    check(response, 413, "ContentLengthLimitExceeded", TOO_LARGE.format(40 * 65_536 + 2))
    # A chunked body far beyond what the emulator drains: it stops reading and still answers 413.
    stats_before = emu.stats().bytes_received

    def endless() -> Iterator[bytes]:
        for _ in range(1024):
            yield b" " * 65_536

    try:
        response = post(http, emu, endless())
    except httpx.TransportError:
        pass  # the emulator closed the connection while the client was still sending: also fine
    else:
        check(response, 413, "ContentLengthLimitExceeded")
    assert emu.stats().bytes_received - stats_before < 20 * MAX_BODY_BYTES


def test_unknown_path_and_method(emu: Emulator, http: httpx.Client) -> None:
    check(http.get("/nothing/here"), 404, "NotFound")
    check(http.get(f"/dataCollectionRules/{emu.rule_id}/streams/{emu.stream_name}"), 405, "MethodNotAllowed")


# -- admin endpoints -----------------------------------------------------------------------------------------


def test_admin_faults_stats_rows_reset(emu: Emulator, http: httpx.Client, make_row: MakeRow) -> None:
    spec = {"fail_next": {"n": 1, "status": 503, "retry_after": 2}, "latency": {"seconds": 0}}
    assert http.post("/_emulator/faults", json=spec).status_code == 204
    response = post(http, emu, json.dumps([make_row()]))
    check(response, 503, "ServiceUnavailable")
    assert response.headers["Retry-After"] == "2"
    assert post(http, emu, json.dumps([make_row(Id="x")])).status_code == 204

    stats = http.get("/_emulator/stats").json()
    assert stats["requests"] == 2
    assert stats["by_status"] == {"204": 1, "503": 1}
    assert stats["rows_accepted"] == 1
    assert http.get(f"/_emulator/rows/{emu.table}").json()[0]["Id"] == "x"
    check(http.get("/_emulator/rows/Nope_CL"), 404, "NotFound")
    info = http.get("/_emulator/info").json()
    assert {"immutable_id": emu.rule_id, "name": "sentinel-forwarder-emulator",
            "streams": {emu.stream_name: [emu.table]}} in info["rules"]  # fmt: skip

    assert http.post("/_emulator/faults", json={"drop_next": {"n": 1}}).status_code == 204
    with pytest.raises(httpx.RemoteProtocolError):
        post(http, emu, b"[]")
    assert http.post("/_emulator/faults", json={"rate_limit": {"requests_per_minute": 1}}).status_code == 204
    assert post(http, emu, b"[]").status_code == 204
    check(post(http, emu, b"[]"), 429, "TooManyRequests")

    assert http.post("/_emulator/reset", json={}).status_code == 204
    assert emu.count(emu.table) == 0
    assert emu.stats().requests == 0
    assert post(http, emu, b"[]").status_code == 204  # rate limit gone


@pytest.mark.parametrize(
    "spec",
    [
        [],
        {"explode": {}},
        {"fail_next": {"n": 1}},
        {"fail_next": {"n": 1, "status": 200}},
        {"failure_rate": {"rate": 2}},
        {"latency": {"seconds": -1}},
        {"latency": 5},
    ],
)
def test_admin_rejects_bad_fault_specs(emu: Emulator, http: httpx.Client, spec: Any) -> None:
    check(http.post("/_emulator/faults", json=spec), 400, "InvalidFaultSpec")


def test_admin_endpoints_can_be_turned_off() -> None:
    with Emulator(admin=False) as emu, httpx.Client(base_url=emu.endpoint) as http:
        assert http.get("/_emulator/stats").status_code == 404


def test_non_loopback_host_is_refused() -> None:
    with pytest.raises(ValueError, match="allow_remote"):
        Emulator(host="0.0.0.0")
    with pytest.raises(ValueError, match="allow_remote"):
        Emulator(host="192.0.2.10")
