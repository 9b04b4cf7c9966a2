"""The admin endpoints refuse what a web page could send them: foreign ``Host`` headers (DNS rebinding) and
cross-site "simple" writes (CSRF: ``text/plain`` or form bodies, no ``Content-Type``)."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from sentinel_forwarder.emulator import Emulator

MakeRow = Callable[..., dict[str, Any]]
JSON = {"Content-Type": "application/json"}
FAIL_NEXT = json.dumps({"fail_next": {"n": 1, "status": 503}})


def _ssl_context(emu: Emulator) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=str(emu.ca_path)) if emu.ca_path else None


@pytest.fixture
def http(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.endpoint, verify=_ssl_context(emu) or True, timeout=30) as client:
        yield client


def ingest(http: httpx.Client, emu: Emulator, rows: list[dict[str, Any]], **headers: str) -> httpx.Response:
    return http.post(
        f"/dataCollectionRules/{emu.rule_id}/streams/{emu.stream_name}",
        params={"api-version": "2023-01-01"},
        headers={"Authorization": "Bearer t", "Content-Type": "application/json", **headers},
        content=json.dumps(rows),
    )


def check(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["x-ms-error-code"] == code
    assert response.json()["error"]["code"] == code


def raw_request(emu: Emulator, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send *request* as is over a fresh connection; the status and the JSON body of the answer."""
    sock = socket.create_connection((emu.host, emu.port), timeout=10)
    context = _ssl_context(emu)
    with context.wrap_socket(sock, server_hostname=emu.host) if context else sock as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def foreign_hosts(port: int) -> list[str]:
    return [
        "evil.example",
        f"evil.example:{port}",
        "127.0.0.1.evil.example",
        f"127.0.0.1.evil.example:{port}",
        "localhost.evil.example",
        f"localhost.evil.example:{port}",
        f"localhost@evil.example:{port}",
        f"user@localhost:{port}",
        f"localhost:{port}.evil.example",
        f"127.0.0.1:{port}junk",
        "localhost.",
        "[::1].evil.example",
        "0.0.0.0",
        "192.0.2.10",
    ]


# -- Host header --------------------------------------------------------------------------------------------


def test_foreign_host_cannot_read(emu: Emulator, http: httpx.Client, make_row: MakeRow) -> None:
    assert ingest(http, emu, [make_row(Id="secret-row")]).status_code == 204
    for host in foreign_hosts(emu.port):
        for path in ("/_emulator/stats", "/_emulator/info", f"/_emulator/rows/{emu.table}"):
            response = http.get(path, headers={"Host": host})
            check(response, 403, "HostNotAllowed")
            assert "secret-row" not in response.text
        assert http.head("/_emulator/stats", headers={"Host": host}).status_code == 403


def test_foreign_host_cannot_write(emu: Emulator, http: httpx.Client, make_row: MakeRow) -> None:
    assert ingest(http, emu, [make_row()]).status_code == 204
    for host in foreign_hosts(emu.port):
        headers = {"Host": host, **JSON}
        check(http.post("/_emulator/faults", headers=headers, content=FAIL_NEXT), 403, "HostNotAllowed")
        check(http.post("/_emulator/reset", headers=headers, content=b"{}"), 403, "HostNotAllowed")
    assert emu.count(emu.table) == 1  # not reset
    assert ingest(http, emu, [make_row()]).status_code == 204  # no fault injected


def test_host_error_names_the_problem(emu: Emulator, http: httpx.Client) -> None:
    response = http.get("/_emulator/stats", headers={"Host": "evil.example"})
    check(response, 403, "HostNotAllowed")
    assert "Host" in response.json()["error"]["message"]
    assert "evil.example" in response.json()["error"]["message"]


def test_missing_host_is_refused(emu: Emulator) -> None:
    # HTTP/1.1 requires Host (the server answers 400 before the app); HTTP/1.0 may omit it.
    status, body = raw_request(emu, b"GET /_emulator/stats HTTP/1.0\r\n\r\n")
    assert status == 403
    assert body["error"]["code"] == "HostNotAllowed"
    request = b"POST /_emulator/reset HTTP/1.0\r\n"
    request += b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    status, body = raw_request(emu, request)
    assert status == 403
    assert body["error"]["code"] == "HostNotAllowed"


LOOPBACK_HOSTS = ["localhost:{port}", "LocalHost:{port}", "127.0.0.1:{port}", "127.0.0.1",
                  "127.8.9.10:{port}", "[::1]:{port}", "[::1]", "::1", "localhost"]  # fmt: skip


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_loopback_hosts_are_accepted(emu: Emulator, http: httpx.Client, make_row: MakeRow, host: str) -> None:
    headers = {"Host": host.format(port=emu.port)}
    assert http.get("/_emulator/stats", headers=headers).status_code == 200
    response = http.post("/_emulator/faults", headers={**headers, **JSON}, content=FAIL_NEXT)
    assert response.status_code == 204, response.text
    check(ingest(http, emu, [make_row()]), 503, "ServiceUnavailable")
    assert ingest(http, emu, [make_row()]).status_code == 204
    assert http.post("/_emulator/reset", headers={**headers, **JSON}).status_code == 204
    assert emu.count(emu.table) == 0


# -- Content-Type of admin writes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        "application/json-seq",
        "text/json",
    ],
)
def test_non_json_writes_are_refused(
    emu: Emulator, http: httpx.Client, make_row: MakeRow, content_type: str | None
) -> None:
    assert ingest(http, emu, [make_row()]).status_code == 204
    headers = {} if content_type is None else {"Content-Type": content_type}
    check(http.post("/_emulator/faults", headers=headers, content=FAIL_NEXT), 415, "UnsupportedMediaType")
    check(http.post("/_emulator/reset", headers=headers), 415, "UnsupportedMediaType")
    assert emu.count(emu.table) == 1  # not reset
    assert ingest(http, emu, [make_row()]).status_code == 204  # no fault injected


def test_form_post_is_refused(emu: Emulator, http: httpx.Client, make_row: MakeRow) -> None:
    # What an HTML <form method=post> sends, with the JSON smuggled into a field name.
    response = http.post("/_emulator/faults", data={FAIL_NEXT: ""})
    assert response.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    check(response, 415, "UnsupportedMediaType")
    assert ingest(http, emu, [make_row()]).status_code == 204


def test_json_with_parameters_is_accepted(emu: Emulator, http: httpx.Client, make_row: MakeRow) -> None:
    headers = {"Content-Type": "Application/JSON ; charset=UTF-8"}
    assert http.post("/_emulator/faults", headers=headers, content=FAIL_NEXT).status_code == 204
    check(ingest(http, emu, [make_row()]), 503, "ServiceUnavailable")
    assert http.post("/_emulator/reset", headers=headers).status_code == 204


def test_reads_need_no_content_type(emu: Emulator, http: httpx.Client) -> None:
    assert "content-type" not in http.build_request("GET", "/_emulator/stats").headers
    assert http.get("/_emulator/stats").status_code == 200


# -- the ingestion endpoint is not guarded ------------------------------------------------------------------


def test_ingestion_accepts_any_host(emu: Emulator, http: httpx.Client, make_row: MakeRow) -> None:
    for host in ["evil.example", f"myworkspace.eastus-1.ingest.monitor.azure.com:{emu.port}"]:
        assert ingest(http, emu, [make_row()], Host=host).status_code == 204
    assert emu.count(emu.table) == 2
    # and keeps its own Content-Type answer
    check(ingest(http, emu, [make_row()], **{"Content-Type": "text/plain"}), 415, "UnsupportedMediaType")
