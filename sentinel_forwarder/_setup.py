"""``add_sentinel_forwarder``: wire a forwarder into an application's startup and shutdown.

With a Starlette or FastAPI app the forwarder runs in the app's lifespan; without one it runs on a background
thread with its own event loop (Flask, Django, scripts, worker processes) and drains at interpreter exit.
Starlette is imported only when an app is given.
"""

from __future__ import annotations

__all__ = ["SetupOptions", "StarletteApp", "add_sentinel_forwarder"]

import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict, overload

import anyio
import anyio.to_thread
from azure.core.credentials import TokenCredential

from ._config.build import build_forwarder
from ._config.settings import ForwarderSettings
from ._forwarders.background import BackgroundForwarder
from ._forwarders.buffering import BufferingForwarder, Transform
from ._model.protocol import AuditForwarder

if TYPE_CHECKING:
    from typing_extensions import Unpack

logger = logging.getLogger("sentinel_forwarder")

#: Where the forwarder is kept on a Starlette app: ``request.app.state.sentinel_forwarder``.
STATE_KEY = "sentinel_forwarder"


class StarletteApp(Protocol):
    """What ``add_sentinel_forwarder(app)`` needs of an app: a Starlette or FastAPI application."""

    @property
    def router(self) -> Any: ...

    @property
    def state(self) -> Any: ...


class SetupOptions(TypedDict, total=False):
    """The keyword arguments of :func:`add_sentinel_forwarder`, for its typed overloads."""

    endpoint: str | None
    rule_id: str | None
    stream_name: str | None
    credential: TokenCredential | str | None
    forwarder: AuditForwarder | None
    cloud: str | None
    max_batch_size: int | None
    max_request_rows: int | None
    max_interval: float | None
    capacity: int | None
    max_batches_in_flight: int | None
    drain_timeout: float | None
    retry_timeout: float | None
    min_severity: Any
    connection_verify: bool | str | None
    transform: Transform | None
    drain_on_sigterm: bool | None
    spool: str | None
    spool_max_bytes: int | None
    spool_max_age: float | None
    check_on_start: Literal["off", "log", "raise"] | None
    chain: bool | None
    chain_key: str | None
    heartbeat_interval: float | None
    application: str | None
    environ: Mapping[str, str] | None
    backend: Literal["asyncio", "trio"]


@overload
def add_sentinel_forwarder(app: None = None, **options: Unpack[SetupOptions]) -> BackgroundForwarder: ...


@overload
def add_sentinel_forwarder(app: StarletteApp, **options: Unpack[SetupOptions]) -> BufferingForwarder: ...


def add_sentinel_forwarder(
    app: Any = None,
    *,
    endpoint: str | None = None,
    rule_id: str | None = None,
    stream_name: str | None = None,
    credential: TokenCredential | str | None = None,
    forwarder: AuditForwarder | None = None,
    cloud: str | None = None,
    max_batch_size: int | None = None,
    max_request_rows: int | None = None,
    max_interval: float | None = None,
    capacity: int | None = None,
    max_batches_in_flight: int | None = None,
    drain_timeout: float | None = None,
    retry_timeout: float | None = None,
    min_severity: Any = None,
    connection_verify: bool | str | None = None,
    transform: Transform | None = None,
    drain_on_sigterm: bool | None = None,
    spool: str | None = None,
    spool_max_bytes: int | None = None,
    spool_max_age: float | None = None,
    check_on_start: Literal["off", "log", "raise"] | None = None,
    chain: bool | None = None,
    chain_key: str | None = None,
    heartbeat_interval: float | None = None,
    application: str | None = None,
    environ: Mapping[str, str] | None = None,
    backend: Literal["asyncio", "trio"] = "asyncio",
) -> BackgroundForwarder | BufferingForwarder:
    """Start forwarding audit records with the application.

    Each setting left ``None`` comes from ``SENTINEL_FORWARDER_<NAME>`` in the environment (e.g.
    ``SENTINEL_FORWARDER_ENDPOINT``, ``SENTINEL_FORWARDER_RULE_ID``), else its default
    (docs/configuration.md).

    - With a Starlette/FastAPI *app*: the forwarder opens in the app's lifespan, drains at shutdown, and is
      reachable as ``request.app.state.sentinel_forwarder``. Returns the :class:`BufferingForwarder` of the
      first lifespan; a later lifespan of the same app (a second test client) gets a fresh one, built from
      the same settings, in ``app.state``.
    - Without: starts a :class:`BackgroundForwarder` thread that drains at interpreter exit (and when a
      ``multiprocessing`` child ends), and returns it. In a forked child it starts again on first use.

    :param forwarder: a ready-made forwarder. A :class:`BufferingForwarder` is used as it is (its own batching
        options win); any other :class:`AuditForwarder` (your own sink) is wrapped in one built from the
        settings. Endpoint and rule id are then not needed.
    :param credential: for the Azure sink: an azure-core ``TokenCredential``, or the name of one
        (``SENTINEL_FORWARDER_CREDENTIAL``: ``default``, ``managed-identity``, ``workload-identity``,
        ``environment``, ``azure-cli`` or ``emulator``, docs/configuration.md); ``None`` means the
        environment variable, else ``DefaultAzureCredential``.
    :param transform: see :class:`BufferingForwarder`.
    :param environ: read settings from this mapping instead of ``os.environ``.
    :param drain_on_sigterm: no-app mode: on SIGTERM, drain, then let the previous handler or the default
        action run (docs/deployment.md). Off by default.
    :param spool: a directory for the durable spool (docs/durability.md); ``spool_max_bytes`` and
        ``spool_max_age`` bound it. An unusable directory fails at startup.
    :param check_on_start: ``off`` (default), ``log`` or ``raise``: probe the service as the forwarder opens
        (an empty request, nothing written; docs/configuration.md#check-on-start). ``raise`` raises
        :class:`ConfigurationError` for what will not heal (wrong endpoint, certificate, 401, 404); a 403
        (a role still propagating) and transient failures are logged.
    :param chain: link the rows sent into a hash chain (on by default); ``chain_key`` makes the hashes
        HMAC-SHA256 (docs/tamper-evidence.md).
    :param heartbeat_interval: seconds between heartbeat rows (60 by default; 0: none); ``application``
        names the application in them.
    :param backend: the background thread's event loop (no-app mode).
    :raises ConfigurationError: at startup, naming a missing or malformed setting.
    """
    settings = ForwarderSettings.resolve(  # None means "not given": environment, then default
        environ,
        require_endpoint=forwarder is None,
        endpoint=endpoint,
        rule_id=rule_id,
        stream_name=stream_name,
        cloud=cloud,
        max_batch_size=max_batch_size,
        max_request_rows=max_request_rows,
        max_interval=max_interval,
        capacity=capacity,
        max_batches_in_flight=max_batches_in_flight,
        drain_timeout=drain_timeout,
        retry_timeout=retry_timeout,
        min_severity=min_severity,
        connection_verify=connection_verify,
        drain_on_sigterm=drain_on_sigterm,
        spool=spool,
        spool_max_bytes=spool_max_bytes,
        spool_max_age=spool_max_age,
        check_on_start=check_on_start,
        chain=chain,
        chain_key=chain_key,
        heartbeat_interval=heartbeat_interval,
        application=application,
        credential=credential if isinstance(credential, str) else None,
    )
    token_credential = None if isinstance(credential, str) else credential
    if token_credential is None and forwarder is None:
        from ._config.credentials import make_credential

        token_credential = make_credential(
            settings.credential, cloud=settings.cloud, environ=os.environ if environ is None else environ
        )
    buffered = build_forwarder(settings, token_credential, forwarder, transform)
    probe: Callable[[], object] | None = None
    if settings.check_on_start != "off" and forwarder is None:
        from ._check.run import check_on_start as run_probe

        probe = functools.partial(run_probe, settings, token_credential, environ=environ)
    if app is None:
        if probe is not None:
            probe()
        return BackgroundForwarder(
            buffered, backend=backend, drain_on_sigterm=settings.drain_on_sigterm
        ).start()
    # A forwarder is one-shot; a later lifespan needs a new one, which only settings can make.
    rebuild = None
    if forwarder is None:
        rebuild = functools.partial(build_forwarder, settings, token_credential, None, transform)
    _attach(app, buffered, rebuild, probe)
    return buffered


def _attach(
    app: Any,
    first: BufferingForwarder,
    rebuild: Callable[[], BufferingForwarder] | None,
    probe: Callable[[], object] | None = None,
) -> None:
    """Run a forwarder inside each lifespan of a Starlette app, around the app's own lifespan."""
    router = getattr(app, "router", None)
    if router is None or not hasattr(router, "lifespan_context"):
        raise TypeError(
            f"add_sentinel_forwarder(app) needs a Starlette or FastAPI app, not {type(app).__name__}; "
            "for other frameworks call add_sentinel_forwarder() without an app"
        )
    inner = router.lifespan_context
    setattr(app.state, STATE_KEY, first)
    unused = [first]

    @contextlib.asynccontextmanager
    async def lifespan(the_app: Any) -> AsyncIterator[Any]:
        if unused:
            forwarder = unused.pop()
        elif rebuild is not None:
            forwarder = rebuild()
        else:
            raise RuntimeError(
                "this app's forwarder= was used by an earlier lifespan, and a forwarder runs once: for an "
                "app that starts more than once, let add_sentinel_forwarder build the forwarder from settings"
            )
        setattr(app.state, STATE_KEY, forwarder)
        if probe is not None:  # check_on_start: blocking network calls, off the event loop
            await anyio.to_thread.run_sync(probe)
        async with forwarder, inner(the_app) as state:
            yield state

    router.lifespan_context = lifespan
