"""``check --workspace-id``: poll the Logs Query API until the probe row is queryable; report the latency.

Needs ``azure-monitor-query`` (the ``query`` extra). The real service shows a row 20 s to 3 min after it was
accepted (Learn: data-ingestion-time); the local emulator at once.
"""

from __future__ import annotations

__all__ = ["query_step"]

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError

from .._config.settings import ForwarderSettings
from .._model.schema import AUDIT_TABLE
from .._sinks.azure.clouds import QUERY_AUDIENCES
from .._sinks.azure.endpoint import parse_endpoint
from .._sinks.azure.sink import _message
from .report import CheckStep, Stop

#: Seconds between polls: quick at first, then every 10 s.
_POLLS = (1.0, 2.0, 3.0, 5.0, 10.0)


def query_step(
    settings: ForwarderSettings,
    credential: TokenCredential,
    row_id: str,
    sent_at: float,
    *,
    workspace_id: str,
    query_endpoint: str | None,
    wait: float,
    timeout: float,
    on_start: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> CheckStep:
    """Poll for the probe row *row_id* (sent at *sent_at* on *clock*) until it is queryable or *wait* passes.

    :param query_endpoint: the Logs Query API; ``None``: the cloud's, or the ingestion endpoint itself when
        that is a loopback host (the local emulator serves both).
    :raises Stop: (failure class ``query``) if the row is not queryable in time or the query is refused.
    """
    try:
        from azure.monitor.query import LogsQueryClient, LogsQueryStatus
    except ImportError:
        raise Stop(
            CheckStep(
                "query",
                False,
                "--workspace-id needs azure-monitor-query",
                "pip install 'sentinel-forwarder[query]'",
                "configuration",
            )
        ) from None
    assert settings.endpoint is not None
    audience = QUERY_AUDIENCES[settings.cloud]
    if query_endpoint is None:
        query_endpoint = settings.endpoint if parse_endpoint(settings.endpoint).is_loopback else audience
    client = LogsQueryClient(
        credential,
        endpoint=query_endpoint,
        audience=audience,
        connection_verify=settings.connection_verify,
        connection_timeout=timeout,
        read_timeout=timeout,
    )
    query = f'{AUDIT_TABLE.name} | where Id == "{row_id}" | project Id'
    data: dict[str, Any] = {"workspace_id": workspace_id, "endpoint": query_endpoint, "query": query}
    options: dict[str, Any] = {"enforce_https": False} if query_endpoint.startswith("http://") else {}
    polls = 0
    with client:
        while True:
            elapsed = clock() - sent_at
            on_start(f"query: waiting for the probe row ({elapsed:.0f} s)")
            polls += 1
            try:
                result = client.query_workspace(workspace_id, query, timespan=timedelta(hours=1), **options)
            except HttpResponseError as exc:
                raise Stop(_refused(exc, workspace_id, data)) from None
            except AzureError as exc:  # no answer
                detail = f"the Logs Query API at {query_endpoint} did not answer: {_message(exc)}"
                raise Stop(CheckStep("query", False, detail, None, "query", data)) from None
            found = result.status == LogsQueryStatus.SUCCESS and any(t.rows for t in result.tables)
            if found:
                latency = clock() - sent_at
                data.update(latency=round(latency, 3), polls=polls)
                return CheckStep(
                    "query",
                    True,
                    f"the probe row is queryable in {workspace_id}, {latency:.1f} s after it was sent",
                    data=data,
                )
            left = sent_at + wait - clock()
            if left <= 0:
                data.update(polls=polls)
                raise Stop(
                    CheckStep(
                        "query",
                        False,
                        f"the probe row was not queryable in {workspace_id} within {wait:g} s "
                        f"({polls} queries)",
                        "ingestion can take longer (rarely past 5 minutes): query it later; check that the "
                        "DCR's destination is this workspace, and the DCR's metrics (Logs Transformation "
                        "Errors per Min)",
                        "query",
                        data,
                    )
                )
            sleep(min(_POLLS[min(polls - 1, len(_POLLS) - 1)], left))


def _refused(exc: HttpResponseError, workspace_id: str, data: dict[str, Any]) -> CheckStep:
    status = exc.status_code
    data = {**data, "status": status}
    hint = None
    if status == 403:
        hint = "reading needs the Log Analytics Reader role on the workspace (ingesting does not)"
    elif status == 404:
        hint = (
            "the workspace id is the workspace's customerId: az monitor log-analytics workspace show "
            "--resource-group <group> --workspace-name <workspace> --query customerId -o tsv"
        )
    detail = f"the Logs Query API refused the query on {workspace_id}: HTTP {status} {_message(exc)}"
    return CheckStep("query", False, detail, hint, "query", data)
