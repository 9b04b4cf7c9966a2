"""The Logs Query API on the emulator: KQL over what landed, through Microsoft's own LogsQueryClient (sync and
async) over HTTPS, and Emulator.query().

Sources: the response shape and column types are what azure-monitor-query parses
(``LogsTable._from_generated``, ``native_col_type``) and the REST spec's ``ColumnDataType``; the error shape
is the one in azure-monitor-query's TROUBLESHOOTING.md ("The request had some invalid properties",
``BadArgumentError`` with nested ``innererror``); TenantId is the workspace id and Type the table name (Learn:
log-standard-columns).
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from azure.core.exceptions import HttpResponseError
from azure.monitor.query import LogsQueryClient, LogsQueryStatus
from emulator_helpers import TYPED_RULE_ID, recent, sync_client, upload_kwargs

from sentinel_forwarder.emulator import (
    AsyncEmulatorCredential,
    Emulator,
    EmulatorCredential,
    EmulatorJwtCredential,
    QueryError,
)

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="duckdb-kql (KQL queries, the rule runner) needs Python 3.11+"
)

MakeRow = Callable[..., dict[str, Any]]
TABLE = "AISentinelAudit_CL"


@pytest.fixture
def https(https_emu: Emulator) -> Iterator[Emulator]:
    https_emu.reset()
    yield https_emu
    https_emu.reset()


def query_client(emu: Emulator, **kwargs: Any) -> LogsQueryClient:
    """The unmodified LogsQueryClient for *emu*: its endpoint, the query audience, the emulator's CA."""
    credential = kwargs.pop("credential", None) or EmulatorCredential()
    return LogsQueryClient(
        credential,
        endpoint=emu.endpoint,
        audience=emu.query_audience,
        connection_verify=str(emu.ca_path),
        retry_total=0,
        **kwargs,
    )


def upload(
    emu: Emulator, rows: list[dict[str, Any]], *, rule_id: str | None = None, stream: str | None = None
) -> None:
    with sync_client(emu) as client:
        client.upload(rule_id or emu.rule_id, stream or emu.stream_name, rows, **upload_kwargs(emu))


def test_logs_query_client_reads_back_what_landed_over_https(https: Emulator, make_row: MakeRow) -> None:
    rows = [make_row(SessionId="s-1", Severity="High"), make_row(SessionId="s-2", Severity="Low")]
    upload(https, rows)
    with query_client(https) as client:
        result = client.query_workspace(
            https.workspace_id,
            f"{TABLE} | where SessionId == 's-1' | project TimeGenerated, Id, Severity, TenantId, Type",
            timespan=timedelta(hours=2),
        )
    assert result.status == LogsQueryStatus.SUCCESS
    (table,) = result.tables
    assert table.name == "PrimaryResult"
    assert table.columns == ["TimeGenerated", "Id", "Severity", "TenantId", "Type"]
    assert table.columns_types == ["datetime", "string", "string", "string", "string"]
    (row,) = table.rows
    assert row["Id"] == rows[0]["Id"]
    assert row["TenantId"] == https.workspace_id and row["Type"] == TABLE
    # The SDK turned the datetime text into a datetime: the wire format is one it parses.
    assert isinstance(row["TimeGenerated"], datetime)
    sent = datetime.fromisoformat(rows[0]["TimeGenerated"].replace("Z", "+00:00"))
    assert row["TimeGenerated"] == sent


def test_every_column_type_round_trips(https: Emulator) -> None:
    row = {
        "TimeGenerated": recent(minutes=-5),
        "S": "text",
        "I": 7,
        "L": 2**40,
        "R": 1.5,
        "B": True,
        "D": {"k": [1, 2]},
    }
    upload(https, [row], rule_id=TYPED_RULE_ID, stream="Custom-Typed")
    with query_client(https) as client:
        result = client.query_workspace(
            https.workspace_id,
            "Typed_CL | extend Age = now() - TimeGenerated | project S, I, L, R, B, D, Age",
            timespan=None,
        )
    (table,) = result.tables
    assert table.columns_types == ["string", "int", "long", "real", "bool", "dynamic", "timespan"]
    (got,) = table.rows
    assert list(got)[:5] == ["text", 7, 2**40, 1.5, True]
    # Log Analytics sends dynamic values as JSON text, and the SDK hands them over as such.
    assert got["D"] == '{"k":[1,2]}'
    assert isinstance(got["Age"], str) and got["Age"].startswith("00:0")
    assert https.query("Typed_CL | project D, B")[0] == {"D": {"k": [1, 2]}, "B": True}


def test_timespan_keeps_the_rows_inside_it(https: Emulator, make_row: MakeRow) -> None:
    old, new = make_row(TimeGenerated=recent(hours=-3)), make_row(TimeGenerated=recent(minutes=-10))
    upload(https, [old, new])
    kql = f"{TABLE} | project Id"
    with query_client(https) as client:
        recent_only = client.query_workspace(https.workspace_id, kql, timespan=timedelta(hours=1))
        everything = client.query_workspace(https.workspace_id, kql, timespan=timedelta(days=1))
        now = datetime.now(timezone.utc)
        window = client.query_workspace(
            https.workspace_id, kql, timespan=(now - timedelta(hours=4), now - timedelta(hours=2))
        )
    assert [r["Id"] for r in recent_only.tables[0].rows] == [new["Id"]]
    assert sorted(r["Id"] for r in everything.tables[0].rows) == sorted([old["Id"], new["Id"]])
    assert [r["Id"] for r in window.tables[0].rows] == [old["Id"]]
    assert [r["Id"] for r in https.query(kql, timespan="PT1H")] == [new["Id"]]
    assert len(https.query(kql)) == 2


def test_unsupported_kql_is_a_400_naming_the_construct(https: Emulator) -> None:
    with query_client(https) as client, pytest.raises(HttpResponseError) as caught:
        client.query_workspace(https.workspace_id, f"{TABLE} | evaluate bag_unpack(D)", timespan=None)
    assert caught.value.status_code == 400
    assert "EvaluateOperator" in str(caught.value)
    body = caught.value.response.json()
    assert body["error"]["code"] == "BadArgumentError"
    assert body["error"]["innererror"]["code"] == "UnsupportedConstruct"
    assert body["error"]["innererror"]["innererror"]["code"] == "EvaluateOperator"
    with pytest.raises(QueryError, match="EvaluateOperator") as python:
        https.query(f"{TABLE} | evaluate bag_unpack(D)")
    assert python.value.code == "UnsupportedConstruct"


@pytest.mark.parametrize(
    ("kql", "inner", "innermost"),
    [
        (f"{TABLE} | wher x", "SyntaxError", "SYN0002"),
        ("NoSuchTable_CL | take 1", "SemanticError", "SEM0100"),
        (f"{TABLE} | where NoSuchColumn == 1", "SemanticError", "SEM0100"),
    ],
)
def test_bad_queries_answer_the_service_error_shape(
    https: Emulator, kql: str, inner: str, innermost: str
) -> None:
    with query_client(https) as client, pytest.raises(HttpResponseError) as caught:
        client.query_workspace(https.workspace_id, kql, timespan=None)
    assert caught.value.status_code == 400
    error = caught.value.response.json()["error"]
    assert error["message"] == "The request had some invalid properties"
    assert (error["code"], error["innererror"]["code"], error["innererror"]["innererror"]["code"]) == (
        "BadArgumentError",
        inner,
        innermost,
    )
    assert error["correlationId"] == caught.value.response.headers["x-ms-request-id"]


def test_query_tokens_need_the_query_audience(https: Emulator) -> None:
    right = EmulatorJwtCredential()
    with query_client(https, credential=right) as client:
        assert (
            client.query_workspace(https.workspace_id, f"{TABLE} | count", timespan=None).tables[0].rows[0][0]
            == 0
        )
    # A token for the ingestion audience is not one for the query API.
    wrong = EmulatorJwtCredential(audience="https://monitor.azure.com")
    with query_client(https, credential=wrong) as client, pytest.raises(HttpResponseError) as caught:
        client.query_workspace(https.workspace_id, f"{TABLE} | count", timespan=None)
    # The SDK turns the ClientAuthenticationError into an HttpResponseError (process_error).
    assert caught.value.status_code == 401
    assert caught.value.response.json()["error"]["code"] == "InvalidAudience"
    assert "https://api.loganalytics.io/.default" in str(caught.value)


def test_missing_token_unknown_workspace_and_bad_bodies(https: Emulator) -> None:
    url = f"{https.endpoint}/v1/workspaces/{https.workspace_id}/query"
    auth = {"Authorization": "Bearer opaque"}
    with httpx.Client(verify=ssl.create_default_context(cafile=str(https.ca_path))) as http:
        assert http.post(url, json={"query": f"{TABLE} | count"}).status_code == 401
        other = http.post(
            url.replace(https.workspace_id, "11111111-2222-3333-4444-555555555555"), json={}, headers=auth
        )
        assert (other.status_code, other.json()["error"]["code"]) == (404, "WorkspaceNotFoundError")
        assert http.post(url, content=b"{", headers=auth).status_code == 400
        assert http.post(url, json={"timespan": "PT1H"}, headers=auth).status_code == 400
        bad_span = http.post(url, json={"query": f"{TABLE} | count", "timespan": "P1Y"}, headers=auth)
        assert bad_span.status_code == 400
        assert bad_span.json()["error"]["innererror"]["code"] == "InvalidTimespan"
        # GET with the query in the URL, as the service also serves it.
        got = http.get(url, params={"query": f"{TABLE} | count", "timespan": "PT1H"}, headers=auth)
        assert got.status_code == 200 and got.json()["tables"][0]["rows"] == [[0]]


@pytest.mark.anyio
async def test_async_logs_query_client(https: Emulator, make_row: MakeRow, anyio_backend: str) -> None:
    from azure.monitor.query.aio import LogsQueryClient as AsyncLogsQueryClient

    upload(https, [make_row(SessionId="async")])
    kwargs: dict[str, Any] = {"connection_verify": str(https.ca_path)}
    if anyio_backend == "trio":
        from azure.core.pipeline.transport import TrioRequestsTransport

        kwargs = {"transport": TrioRequestsTransport(connection_verify=str(https.ca_path))}
    async with AsyncLogsQueryClient(
        AsyncEmulatorCredential(),
        endpoint=https.endpoint,
        audience=https.query_audience,
        retry_total=0,
        **kwargs,
    ) as client:
        result = await client.query_workspace(
            https.workspace_id, f"{TABLE} | summarize n = count() by SessionId", timespan=timedelta(hours=2)
        )
    assert [list(r) for r in result.tables[0].rows] == [["async", 1]]


def test_python_query_as_of_a_moment_and_sink_mode(https: Emulator, make_row: MakeRow) -> None:
    upload(https, [make_row(TimeGenerated=recent(minutes=-30))])
    kql = f"{TABLE} | where TimeGenerated > ago(20m) | count"
    assert https.query(kql) == [{"Count": 0}]
    assert https.query(kql, now=datetime.now(timezone.utc) - timedelta(minutes=15)) == [{"Count": 1}]
    with Emulator(sink=True) as sink:
        upload(sink, [make_row()])
        assert sink.query(f"{TABLE} | count") == [{"Count": 0}]


def test_without_duckdb_kql_a_query_answers_why(https: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """duckdb-kql needs Python 3.11+; on 3.10 the emulator extra installs without it, and a query (or the
    rule runner) says so instead of failing with an ImportError."""
    monkeypatch.setitem(sys.modules, "duckdb_kql", None)  # import fails
    with pytest.raises(QueryError) as info:
        https.query(f"{TABLE} | count")
    assert info.value.detail["code"] == "KqlEngineMissing" and "Python 3.11" in info.value.message
