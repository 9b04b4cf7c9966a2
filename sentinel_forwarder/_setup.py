"""``add_sentinel_forwarder``: wire a forwarder into an application's startup and shutdown.

With a Starlette or FastAPI app the forwarder runs in the app's lifespan; without one it runs on a background
thread with its own event loop (Flask, Django, scripts, worker processes) and drains at interpreter exit.
Starlette is imported only when an app is given.
"""

from __future__ import annotations

__all__ = ["BackgroundForwarder", "add_sentinel_forwarder"]

import atexit
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

import anyio
import anyio.lowlevel
from azure.core.credentials import TokenCredential

from ._azure import AzureSentinelForwarder
from ._buffering import BufferingForwarder, ForwarderStatistics, Transform
from ._entry import AuditEntry
from ._protocol import AuditForwarder
from ._settings import ForwarderSettings

logger = logging.getLogger("sentinel_forwarder")

#: Where the forwarder is kept on a Starlette app: ``request.app.state.sentinel_forwarder``.
STATE_KEY = "sentinel_forwarder"


class BackgroundForwarder:
    """A :class:`BufferingForwarder` running on its own thread and event loop.

    ``forward()`` is safe from any thread. :meth:`close` (also run at interpreter exit) drains the buffer
    within the forwarder's ``drain_timeout`` and returns the final statistics.

    :param forwarder: the forwarder to run.
    :param backend: the event loop of the thread, ``"asyncio"`` or ``"trio"``.
    """

    def __init__(
        self, forwarder: BufferingForwarder, *, backend: Literal["asyncio", "trio"] = "asyncio"
    ) -> None:
        self.forwarder = forwarder
        self._backend = backend
        self._ready = threading.Event()
        self._done = threading.Event()
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._stop: anyio.Event | None = None
        #: The exception that ended the thread, if it failed.
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sentinel-forwarder", daemon=True)

    def start(self, *, timeout: float = 30.0) -> BackgroundForwarder:
        """Start the thread and wait until the forwarder is open.

        :raises RuntimeError: if it did not open within *timeout* seconds, or opening failed (chained).
        """
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"sentinel-forwarder did not start within {timeout} s")
        if self.error is not None:
            raise RuntimeError("sentinel-forwarder failed to start") from self.error
        atexit.register(self.close)
        return self

    def _run(self) -> None:
        try:
            anyio.run(self._main, backend=self._backend)
        except BaseException as exc:
            self.error = exc
            logger.error("sentinel-forwarder background thread failed", exc_info=exc)
        finally:
            self._ready.set()
            self._done.set()

    async def _main(self) -> None:
        self._token = anyio.lowlevel.current_token()
        self._stop = anyio.Event()
        async with self.forwarder:
            self._ready.set()
            await self._stop.wait()

    def forward(self, entry: AuditEntry) -> bool:
        """Offer *entry*; see :meth:`BufferingForwarder.forward`."""
        return self.forwarder.forward(entry)

    def statistics(self) -> ForwarderStatistics:
        """The forwarder's counters now."""
        return self.forwarder.statistics()

    def close(self, timeout: float | None = None) -> ForwarderStatistics:
        """Drain and stop; idempotent. Waits at most *timeout* seconds (default: ``drain_timeout`` + 10 s).

        Returns the statistics; if the thread did not finish in time, ``queue_depth`` and
        ``batches_in_flight`` show what was still pending.
        """
        with contextlib.suppress(ValueError):
            atexit.unregister(self.close)
        token, stop = self._token, self._stop
        if token is not None and stop is not None and not self._done.is_set():
            with contextlib.suppress(anyio.RunFinishedError):
                token.backend_class.run_sync_soon(stop.set, (), token.native_token)
        wait = self.forwarder.drain_timeout + 10.0 if timeout is None else timeout
        if self._thread.is_alive() and not self._done.wait(wait):
            logger.warning("sentinel-forwarder did not finish draining within %.1f s", wait)
        return self.statistics()


def _build(
    settings: ForwarderSettings,
    credential: TokenCredential | None,
    forwarder: AuditForwarder | None,
    transform: Transform | None,
) -> BufferingForwarder:
    if isinstance(forwarder, BufferingForwarder):
        return forwarder
    sink: AuditForwarder
    if forwarder is not None:
        sink = forwarder
    else:
        assert settings.endpoint is not None and settings.rule_id is not None
        sink = AzureSentinelForwarder(
            settings.endpoint,
            credential,
            rule_id=settings.rule_id,
            stream_name=settings.stream_name,
            cloud=settings.cloud,  # type: ignore[arg-type]
            retry_timeout=settings.retry_timeout,
            max_concurrent_uploads=max(8, settings.max_batches_in_flight),
            connection_verify=settings.connection_verify,
        )
    return BufferingForwarder(
        sink,
        max_batch_size=settings.max_batch_size,
        max_interval=settings.max_interval,
        capacity=settings.capacity,
        max_batches_in_flight=settings.max_batches_in_flight,
        drain_timeout=settings.drain_timeout,
        min_severity=settings.min_severity,
        transform=transform,
    )


def add_sentinel_forwarder(
    app: Any = None,
    *,
    endpoint: str | None = None,
    rule_id: str | None = None,
    stream_name: str | None = None,
    credential: TokenCredential | None = None,
    forwarder: AuditForwarder | None = None,
    cloud: str | None = None,
    max_batch_size: int | None = None,
    max_interval: float | None = None,
    capacity: int | None = None,
    max_batches_in_flight: int | None = None,
    drain_timeout: float | None = None,
    retry_timeout: float | None = None,
    min_severity: Any = None,
    connection_verify: bool | str | None = None,
    transform: Transform | None = None,
    environ: Mapping[str, str] | None = None,
    backend: Literal["asyncio", "trio"] = "asyncio",
) -> Any:
    """Start forwarding audit records with the application.

    Each setting left ``None`` comes from ``SENTINEL_FORWARDER_<NAME>`` in the environment (e.g.
    ``SENTINEL_FORWARDER_ENDPOINT``, ``SENTINEL_FORWARDER_RULE_ID``), else its default
    (docs/configuration.md).

    - With a Starlette/FastAPI *app*: the forwarder opens in the app's lifespan, drains at shutdown, and is
      reachable as ``request.app.state.sentinel_forwarder``. Returns the :class:`BufferingForwarder`.
    - Without: starts a :class:`BackgroundForwarder` thread that drains at interpreter exit, and returns it.

    :param forwarder: a ready-made forwarder. A :class:`BufferingForwarder` is used as it is (its own batching
        options win); any other :class:`AuditForwarder` (your own sink) is wrapped in one built from the
        settings. Endpoint and rule id are then not needed.
    :param credential: for the Azure sink; ``None`` means ``DefaultAzureCredential``.
    :param transform: see :class:`BufferingForwarder`.
    :param environ: read settings from this mapping instead of ``os.environ``.
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
        max_interval=max_interval,
        capacity=capacity,
        max_batches_in_flight=max_batches_in_flight,
        drain_timeout=drain_timeout,
        retry_timeout=retry_timeout,
        min_severity=min_severity,
        connection_verify=connection_verify,
    )
    buffered = _build(settings, credential, forwarder, transform)
    if app is None:
        return BackgroundForwarder(buffered, backend=backend).start()
    _attach(app, buffered)
    return buffered


def _attach(app: Any, forwarder: BufferingForwarder) -> None:
    """Run *forwarder* inside a Starlette app's lifespan, around the app's own lifespan."""
    router = getattr(app, "router", None)
    if router is None or not hasattr(router, "lifespan_context"):
        raise TypeError(
            f"add_sentinel_forwarder(app) needs a Starlette or FastAPI app, not {type(app).__name__}; "
            "for other frameworks call add_sentinel_forwarder() without an app"
        )
    inner = router.lifespan_context
    setattr(app.state, STATE_KEY, forwarder)

    @contextlib.asynccontextmanager
    async def lifespan(the_app: Any) -> AsyncIterator[Any]:
        async with forwarder, inner(the_app) as state:
            yield state

    router.lifespan_context = lifespan
