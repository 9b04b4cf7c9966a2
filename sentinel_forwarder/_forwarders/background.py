"""``BackgroundForwarder``: a :class:`BufferingForwarder` on its own daemon thread and event loop.

For code without an event loop of its own (Flask, Django, scripts, worker processes), and for every
forwarder in a forked child (see ``BufferingForwarder``'s fork handling). It drains when closed, at
interpreter exit, when a ``multiprocessing`` child ends (those leave through ``os._exit``, so ``atexit``
never runs there), and, if asked, on SIGTERM.
"""

from __future__ import annotations

__all__ = ["BackgroundForwarder"]

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.from_thread
import anyio.lowlevel

from .._model.entry import AuditEntry
from .._model.snapshots import ForwarderHealth, ForwarderStatistics
from . import fork

if TYPE_CHECKING:  # the forwarder's module imports this one: a forked child may need a new runner
    from .buffering import BufferingForwarder

logger = logging.getLogger("sentinel_forwarder")

#: multiprocessing runs finalizers of this priority or more when a child ends, before it joins threads.
_MP_EXIT_PRIORITY = 100


def _finalize_in_child(runner: BackgroundForwarder) -> None:
    from multiprocessing import util

    util.Finalize(runner, runner.close, exitpriority=_MP_EXIT_PRIORITY)


class BackgroundForwarder:
    """A :class:`BufferingForwarder` running on its own daemon thread and event loop.

    ``forward()`` is safe from any thread and never blocks. :meth:`close` (also run at interpreter exit, and
    when a ``multiprocessing`` child ends) drains the buffer within the forwarder's ``drain_timeout`` and
    returns the final statistics. In a forked child the thread is started again, lazily, on the first
    ``forward()`` (the parent's buffered rows stay the parent's).

    :param forwarder: the forwarder to run.
    :param backend: the event loop of the thread, ``"asyncio"`` or ``"trio"``.
    :param drain_on_sigterm: on SIGTERM (main thread only), drain first, then let the previous handler, or the
        default action, run. Off by default: it delays the signal's effect by up to ``drain_timeout``.
    """

    def __init__(
        self,
        forwarder: BufferingForwarder,
        *,
        backend: Literal["asyncio", "trio"] = "asyncio",
        drain_on_sigterm: bool = False,
    ) -> None:
        self.forwarder = forwarder
        self._backend = backend
        self._drain_on_sigterm = drain_on_sigterm
        self._previous_sigterm: Any = None
        self._sigterm_drain: threading.Thread | None = None
        self._sigterm_drained = False
        self._fresh_thread()
        fork.remember_runner(forwarder, self)  # in a forked child, the forwarder restarts this runner
        fork.reinit_at_fork(self)

    def _at_fork_reinit(self) -> None:
        """In a forked child: forget the parent's thread and loop (the fork policy restarts it)."""
        self._fresh_thread()

    def _fresh_thread(self) -> None:
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
        self._register_exits()
        if self._drain_on_sigterm:
            self._install_sigterm()
        return self

    def start_in_fork_child(self) -> None:
        """Start in a forked child, without waiting: called when the child's first row arrives."""
        self._thread.start()
        self._register_exits()

    def _register_exits(self) -> None:
        atexit.register(self.close)
        if "multiprocessing" in sys.modules:
            # A fork-started multiprocessing child ends through os._exit (no atexit), after running its
            # finalizers. Its forwarder starts here on its first row, after the child's bootstrap (which
            # clears inherited finalizers), so a finalizer registered now stays. (A spawn child ends
            # through sys.exit: atexit runs there.)
            from multiprocessing import parent_process

            if parent_process() is not None:
                _finalize_in_child(self)

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            logger.warning("sentinel-forwarder: drain_on_sigterm needs the main thread; not installed")
            return
        self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        # The main thread was interrupted anywhere, perhaps holding a lock the drain needs: do not wait
        # here. A helper thread drains, then sends SIGTERM again; that second delivery passes it on.
        if self._sigterm_drained:
            self._pass_sigterm_on(signum, frame)
        elif self._sigterm_drain is None:
            self._sigterm_drain = threading.Thread(target=self._drain_then_resignal, daemon=True)
            try:
                self._sigterm_drain.start()
            except RuntimeError:  # no new thread at interpreter shutdown: pass it on undrained
                self._sigterm_drained = True
                self._pass_sigterm_on(signum, frame)

    def _drain_then_resignal(self) -> None:
        try:
            self.close()
        finally:
            self._sigterm_drained = True
            os.kill(os.getpid(), signal.SIGTERM)

    def _pass_sigterm_on(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous_sigterm
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:  # the default action: end the process, as if we were not here
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

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

    def _wait_ready(self, timeout: float | None) -> None:
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._ready.wait(timeout)

    def forward(self, entry: AuditEntry) -> bool:
        """Offer *entry*; see :meth:`BufferingForwarder.forward`."""
        return self.forwarder.forward(entry)

    def forward_durable(self, entry: AuditEntry, *, timeout: float | None = 5.0) -> bool:
        """Offer *entry* and block until it is committed to the spool, at most *timeout* seconds; see
        :meth:`BufferingForwarder.forward_durable`. Not on the forwarder's own thread.

        :returns: ``True`` once the row is on disk (or was filtered out); ``False`` if it was dropped or
            *timeout* passed first.
        :raises RuntimeError: without a spool, or on the forwarder's own thread.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("forward_durable() blocks; on the forwarder's own loop await it instead")
        done = threading.Event()
        outcome: list[bool] = []

        def settle(ok: bool) -> None:
            outcome.append(ok)
            done.set()

        answer = self.forwarder.offer_durable(entry, settle)
        if answer is not None:
            return answer
        done.wait(timeout)
        return bool(outcome and outcome[0])

    def statistics(self) -> ForwarderStatistics:
        """The forwarder's counters now."""
        return self.forwarder.statistics()

    def health(self) -> ForwarderHealth:
        """The forwarder's :meth:`~BufferingForwarder.health`; the pump is alive only while the thread is."""
        health = self.forwarder.health()
        if health.pump_alive and not self._thread.is_alive():
            return replace(health, pump_alive=False)
        return health

    def flush(self, timeout: float | None = None) -> int:
        """Deliver what is buffered now, without closing; wait at most *timeout* seconds.

        For jobs that end, Celery tasks and tests. Blocks the calling thread, so it may not be called on the
        forwarder's own thread (use ``await forwarder.forwarder.flush()`` there).

        :returns: how many of the rows buffered at the call are still pending (0: every one was delivered or
            counted).
        :raises RuntimeError: if called on the forwarder's own thread.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("flush() blocks; on the forwarder's own loop use 'await forwarder.flush()'")
        self._wait_ready(timeout)
        token = self._token
        if token is None or self._done.is_set():
            return self.forwarder.queue_depth()
        try:
            return anyio.from_thread.run(self.forwarder.flush, timeout, token=token)
        except anyio.RunFinishedError:
            return self.forwarder.queue_depth()

    def close(self, timeout: float | None = None) -> ForwarderStatistics:
        """Drain and stop; idempotent. Waits at most *timeout* seconds (default: ``drain_timeout`` + 10 s).

        Returns the statistics; if the thread did not finish in time, ``queue_depth`` and
        ``batches_in_flight`` show what was still pending. Called on the forwarder's own thread (from a
        transform, say), it only starts the close and returns at once: waiting there would stall the very
        loop that drains.
        """
        with contextlib.suppress(ValueError):
            atexit.unregister(self.close)
        wait = self.forwarder.drain_timeout + 10.0 if timeout is None else timeout
        self._wait_ready(wait)  # started a moment ago (in a forked child): let it open first
        token, stop = self._token, self._stop
        if token is not None and stop is not None and not self._done.is_set():
            if threading.current_thread() is self._thread:
                stop.set()
                return self.statistics()
            with contextlib.suppress(anyio.RunFinishedError, RuntimeError):
                token.backend_class.run_sync_soon(stop.set, (), token.native_token)
        if self._thread.is_alive() and not self._done.wait(wait):
            logger.warning("sentinel-forwarder did not finish draining within %.1f s", wait)
        return self.statistics()
