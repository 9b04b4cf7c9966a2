"""Check a configuration end to end before traffic comes: ``sentinel-forwarder check``, ``check_on_start``.

In order, stopping at the first failure: the endpoint's form (a Data Collection Endpoint or a Direct DCR's
host; the cloud is read from the host), DNS, TCP, TLS (socket and ssl, so the real cause shows), a token
(which credential answered; audience, tenant and object id read from it without verifying it, the token
itself never shown), then an ingestion probe through the sink's own azure-core pipeline: an empty JSON array,
which the service answers 2xx and stores nothing from (and, if asked, one marked probe row). Each failure
belongs to a class with its own exit status (:data:`EXIT_CODES`) and says what to do.

.. code-block:: python

    report = run_check(ForwarderSettings.resolve())
    if not report.ok:
        print(report.failure, report.steps[-1].detail, report.steps[-1].hint)
"""

from __future__ import annotations

__all__ = [
    "EXIT_CODES",
    "PROBE_DETECTOR",
    "CheckReport",
    "CheckStep",
    "Stop",
    "check_on_start",
    "probe_failure",
    "run_check",
]

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError

from .._config.settings import ConfigurationError, ForwarderSettings
from .._model.entry import AuditEntry, Severity
from .._model.schema import AUDIT_TABLE
from .._sinks.azure.clouds import AUTHORITY_HOSTS, CLOUD_AUDIENCES
from .._sinks.azure.retry import TokenError, UnreachableError
from .._sinks.azure.sink import AzureSentinelForwarder, _message
from .._util.jwt import token_claims
from .network import endpoint_step, network_steps
from .report import EXIT_CODES, CheckReport, CheckStep, Stop, fail

logger = logging.getLogger("sentinel_forwarder.check")

#: Failure classes that do not heal by themselves: ``check_on_start="raise"`` raises for them. A 403 may
#: (a new role assignment takes up to 30 minutes), and so may a refused connection, a failing token
#: service or a busy one; those are logged at WARNING.
PERMANENT_FAILURES = frozenset({"configuration", "endpoint", "dns", "tls", "unauthorized", "not_found"})
#: The ``DetectorId`` of the probe row (``--probe-row``): find it with ``where DetectorId == ...``.
PROBE_DETECTOR = "sentinel-forwarder-check"
#: The role that allows ingestion.
_ROLE = "Monitoring Metrics Publisher"


def run_check(
    settings: ForwarderSettings,
    *,
    credential: TokenCredential | None = None,
    environ: Mapping[str, str] | None = None,
    probe_row: bool = False,
    workspace_id: str | None = None,
    query_endpoint: str | None = None,
    wait: float = 600.0,
    timeout: float = 10.0,
    on_start: Callable[[str], None] | None = None,
    on_step: Callable[[CheckStep], None] | None = None,
) -> CheckReport:
    """Check *settings* step by step; stop at the first failure.

    :param settings: resolved settings with ``endpoint`` and ``rule_id``.
    :param credential: the credential to check; ``None``: the one ``settings.credential`` names (for
        ``default``, a ``DefaultAzureCredential`` made and closed here).
    :param environ: where ``AZURE_*`` variables are read for the credential (``os.environ`` by default).
    :param probe_row: after the empty probe, send one marked row (``DetectorId`` :data:`PROBE_DETECTOR`).
    :param workspace_id: with it, send the probe row and poll the Logs Query API (``azure-monitor-query``)
        until it is queryable, at most *wait* seconds; the step reports the ingestion latency.
    :param query_endpoint: the Logs Query API (default: the cloud's; the emulator's own for a loopback
        ingestion endpoint).
    :param timeout: seconds for each network step (connect, handshake, probe, each query); the token's
        timeouts are the credential's own.
    :param on_start: called with a step's name as it begins (a progress display).
    :param on_step: called with each step as it ends.
    """
    assert settings.endpoint is not None and settings.rule_id is not None
    steps: list[CheckStep] = []

    def record(step: CheckStep) -> None:
        steps.append(step)
        if on_step is not None:
            on_step(step)

    def begin(name: str) -> None:
        if on_start is not None:
            on_start(name)

    env = os.environ if environ is None else environ
    made: Any = None
    try:
        begin("endpoint")
        record(endpoint_step(settings))
        network_steps(settings, timeout, begin, record)
        begin("token")
        if credential is None:
            credential = made = _credential_for(settings, env)
        token_step, claims = _token_step(credential, settings.cloud)
        record(token_step)
        begin("probe")
        record(_probe_step(settings, credential, claims, timeout, entries=()))
        if probe_row or workspace_id:
            begin("probe_row")
            row_step = _probe_row_step(settings, credential, claims, timeout)
            sent_at = time.monotonic()
            record(row_step)
            if workspace_id:
                from .query import query_step

                begin("query")
                step = query_step(
                    settings,
                    credential,
                    row_step.data["id"],
                    sent_at,
                    workspace_id=workspace_id,
                    query_endpoint=query_endpoint,
                    wait=wait,
                    timeout=timeout,
                    on_start=begin,
                )
                record(step)
    except Stop as stop:
        record(stop.step)
    finally:
        if made is not None:
            close = getattr(made, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    close()
    return CheckReport(tuple(steps))


# -- token -------------------------------------------------------------------------------------------------


def _credential_for(settings: ForwarderSettings, environ: Mapping[str, str]) -> TokenCredential:
    from .._config.credentials import make_credential

    credential = make_credential(settings.credential, cloud=settings.cloud, environ=environ)
    if credential is None:  # "default": the sink would make this one
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential(authority=AUTHORITY_HOSTS[settings.cloud])
    return credential


def _token_step(credential: TokenCredential, cloud: str) -> tuple[CheckStep, Mapping[str, Any]]:
    scope = CLOUD_AUDIENCES[cloud]
    name = type(credential).__name__
    try:
        token = credential.get_token(scope)
    except Exception as exc:
        text = str(getattr(exc, "message", None) or exc).strip() or type(exc).__name__
        raise fail(
            "token",
            "token",
            f"{name} got no token for {scope}: {text}",
            "see docs/configuration.md#credentials: SENTINEL_FORWARDER_CREDENTIAL names the credential "
            "(managed-identity, workload-identity, environment, azure-cli, ...)",
            credential=name,
        ) from None
    answered = getattr(credential, "_successful_credential", None)  # a chain: the one that answered
    if answered is not None:
        name = f"{name} ({type(answered).__name__})"
    claims = token_claims(token.token) or {}
    data: dict[str, Any] = {"credential": name, "scope": scope}
    if not claims:
        data["jwt"] = False
        step = CheckStep(
            "token", True, f"{name} gave an opaque token (not a JWT: no claims to show)", data=data
        )
        return step, {}
    shown: dict[str, Any] = {
        k: claims[k] for k in ("aud", "tid", "oid", "appid", "azp", "idtyp", "upn", "exp") if k in claims
    }
    data.update(jwt=True, claims=shown)
    expected = scope.removesuffix("/.default")
    audiences = claims.get("aud")
    values = audiences if isinstance(audiences, list) else [audiences]
    if not any(isinstance(v, str) and v.rstrip("/") == expected for v in values):
        raise fail(
            "token",
            "unauthorized",
            f"{name}'s token is for audience {audiences!r}, not {expected}: the service would answer "
            "401 InvalidAudience",
            f"request tokens for the scope {scope} (the cloud setting decides it)",
            **data,
        )
    exp = claims.get("exp")
    if isinstance(exp, (int, float)) and exp < time.time():
        raise fail(
            "token", "unauthorized", f"{name}'s token expired at {_utc(exp)}", "check the clock", **data
        )
    who = f"object id {claims.get('oid', '?')}, tenant {claims.get('tid', '?')}"
    detail = f"{name}: audience {expected}, {who}"
    if isinstance(exp, (int, float)):
        detail += f", expires {_utc(exp)}"
    return CheckStep("token", True, detail, data=data), shown


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- the probe ---------------------------------------------------------------------------------------------


def _sink(settings: ForwarderSettings, credential: TokenCredential, timeout: float) -> AzureSentinelForwarder:
    assert settings.endpoint is not None and settings.rule_id is not None
    return AzureSentinelForwarder(
        settings.endpoint,
        credential,
        rule_id=settings.rule_id,
        stream_name=settings.stream_name,
        cloud=settings.cloud,  # type: ignore[arg-type]
        retry_timeout=timeout,
        max_retries=0,
        max_concurrent_uploads=1,
        connection_timeout=timeout,
        read_timeout=timeout,
        connection_verify=settings.connection_verify,
    )


def _post(
    settings: ForwarderSettings, credential: TokenCredential, timeout: float, entries: Sequence[AuditEntry]
) -> BaseException | None:
    """Post *entries* once; the SDK's error, or ``None`` for a 2xx."""
    sink = _sink(settings, credential, timeout)
    sink.open()
    try:
        sink.probe(entries)
    except AzureError as exc:
        return exc
    finally:
        sink.close()
    return None


def probe_failure(
    exc: BaseException, settings: ForwarderSettings, claims: Mapping[str, Any], name: str = "probe"
) -> CheckStep:
    """The failed step for the SDK error *exc* of a probe: its class, what the service said, what to do."""
    rule_id, stream = settings.rule_id, settings.stream_name
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        status = exc.status_code
        said = f"HTTP {status} {_message(exc)}"
        data: dict[str, Any] = {"status": status, "code": getattr(exc.error, "code", None)}
        if status == 401:
            return CheckStep(
                name,
                False,
                f"the service refused the token: {said}",
                "the token's audience must be the ingestion audience of the endpoint's cloud "
                "(SENTINEL_FORWARDER_CLOUD), from the tenant of the DCR",
                "unauthorized",
                data,
            )
        if status == 403:
            command = role_assignment_command(claims.get("oid"), rule_id or "", claims.get("idtyp"))
            data["command"] = command
            return CheckStep(
                name,
                False,
                f"the identity may not ingest into {rule_id}: {said}",
                f"give it the {_ROLE} role on the DCR (a new assignment can take up to 30 minutes to "
                f"apply):\n  {command}",
                "forbidden",
                data,
            )
        if status == 404:
            return CheckStep(
                name,
                False,
                f"no DCR {rule_id} with stream {stream} at {settings.endpoint}: {said}",
                "check the DCR immutable id (az monitor data-collection rule show --name <dcr> "
                "--resource-group <group> --query immutableId), that the stream is declared in it, and "
                "that the endpoint is the one the DCR is associated with",
                "not_found",
                data,
            )
        return CheckStep(name, False, f"the service answered {said}", None, "service", data)
    text = exc.message if isinstance(exc, (UnreachableError, TokenError)) else _message(exc)  # type: ignore[arg-type]
    return CheckStep(name, False, f"no answer: {text}", None, "service", {})


def role_assignment_command(object_id: Any, rule_id: str, identity_type: Any = None) -> str:
    """The ``az role assignment create`` command that gives *object_id* the ingestion role on the DCR."""
    principal = "User" if identity_type == "user" else "ServicePrincipal"
    who = object_id if isinstance(object_id, str) and object_id else "<object id>"
    scope = f"$(az monitor data-collection rule list --query \"[?immutableId=='{rule_id}'].id\" -o tsv)"
    return (
        f"az role assignment create --assignee-object-id {who} --assignee-principal-type {principal} "
        f'--role "{_ROLE}" --scope "{scope}"'
    )


def _probe_step(
    settings: ForwarderSettings,
    credential: TokenCredential,
    claims: Mapping[str, Any],
    timeout: float,
    *,
    entries: Sequence[AuditEntry],
) -> CheckStep:
    error = _post(settings, credential, timeout, entries)
    if error is not None:
        raise Stop(probe_failure(error, settings, claims))
    return CheckStep(
        "probe",
        True,
        f"{settings.rule_id} accepts {settings.stream_name}: an empty request was answered 2xx "
        "(nothing was written)",
    )


def _probe_row_step(
    settings: ForwarderSettings, credential: TokenCredential, claims: Mapping[str, Any], timeout: float
) -> CheckStep:
    row = AuditEntry(
        "sentinel-forwarder check: probe row",
        severity=Severity.NONE,
        detector_id=PROBE_DETECTOR,
        session_id=f"{PROBE_DETECTOR}-{uuid.uuid4().hex[:12]}",
    )
    error = _post(settings, credential, timeout, [row])
    if error is not None:
        raise Stop(probe_failure(error, settings, claims, "probe_row"))
    query = f'{AUDIT_TABLE.name} | where DetectorId == "{PROBE_DETECTOR}" and Id == "{row.id}"'
    return CheckStep(
        "probe_row",
        True,
        f"one probe row sent, Id {row.id}",
        f"it is queryable after the ingestion latency (typically 20 s to 3 min): {query}",
        data={"id": row.id, "time": row.timestamp.isoformat(), "query": query},
    )


# -- check_on_start ----------------------------------------------------------------------------------------


def check_on_start(
    settings: ForwarderSettings,
    credential: TokenCredential | None,
    *,
    environ: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> CheckReport | None:
    """What ``check_on_start`` runs as the forwarder opens: every step of :func:`run_check` but the probe row.

    A failure that will not heal by itself (:data:`PERMANENT_FAILURES`: a wrong endpoint or cloud, a name
    that does not resolve, a certificate, a refused token, an unknown DCR or stream) raises with ``raise``
    and is logged at ERROR with ``log``; any other failure (a 403 while a role propagates, a refused
    connection, a busy service) is logged at WARNING, and the forwarder starts: its rows wait and retry.

    :returns: the report, or ``None`` when ``settings.check_on_start`` is ``off`` or there is no endpoint.
    :raises ConfigurationError: with ``raise``, for a failure that will not heal, naming the step and what
        to do.
    """
    if settings.check_on_start == "off" or settings.endpoint is None or settings.rule_id is None:
        return None
    report = run_check(settings, credential=credential, environ=environ, timeout=timeout)
    if report.ok:
        logger.info(
            "sentinel-forwarder check_on_start: %s accepts %s", settings.rule_id, settings.stream_name
        )
        return report
    step = report.steps[-1]
    permanent = report.failure in PERMANENT_FAILURES and not step.data.get("temporary")
    message = f"sentinel-forwarder check_on_start: {step.name} failed ({report.failure}): {step.detail}"
    if step.hint:
        message += f"; {step.hint}"
    if permanent and settings.check_on_start == "raise":
        raise ConfigurationError(message)
    logger.log(logging.ERROR if permanent else logging.WARNING, "%s", message)
    return report
