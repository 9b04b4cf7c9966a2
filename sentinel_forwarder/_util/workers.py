"""Daemon worker threads for the sink's blocking uploads, awaited from asyncio or trio.

``anyio.to_thread`` would do, except that on asyncio its worker threads are not daemons: a call abandoned at
the drain deadline (a ``Retry-After: 60`` being waited out, a token request hanging) then keeps the process
alive after close. These threads are daemons, and a call can be told to stop through its ``cancel`` event.
"""

from __future__ import annotations

__all__ = ["DaemonWorkers"]

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.lowlevel

logger = logging.getLogger("sentinel_forwarder.azure")
_T = TypeVar("_T")
_STOP = None


class DaemonWorkers:
    """A fixed set of daemon threads running blocking calls; started by :meth:`start` or on first use.

    :param size: threads, so at most this many calls run at once; more wait their turn.
    :param name: the threads' name.
    """

    def __init__(self, size: int, *, name: str) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, not {size}")
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._inline = False  # no thread could be started: run calls on the caller's thread

    async def run(self, fn: Callable[..., _T], *args: Any, cancel: threading.Event) -> _T:
        """Run ``fn(*args)`` on a worker thread and return its result (or raise its exception).

        If the awaiting task is cancelled, *cancel* is set and the call is abandoned: it goes on in its thread
        until it notices *cancel* or ends, and its outcome is discarded.

        :raises RuntimeError: after :meth:`close`.
        """
        token = anyio.lowlevel.current_token()
        done = anyio.Event()
        outcome: list[tuple[bool, Any]] = []

        def job() -> None:
            try:
                outcome.append((True, fn(*args)))
            except BaseException as exc:  # handed to the awaiting task, which decides
                outcome.append((False, exc))
            finally:
                with contextlib.suppress(anyio.RunFinishedError, RuntimeError):  # the loop is gone
                    token.backend_class.run_sync_soon(done.set, (), token.native_token)

        self._submit(job)
        try:
            await done.wait()
        except BaseException:
            cancel.set()
            raise
        ok, value = outcome[0]
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    def start(self) -> None:
        """Start the threads now (idempotent): at interpreter exit, CPython 3.12 refuses new threads.

        If not even one thread can be started (the interpreter is shutting down), calls run on the caller's
        thread instead: blocking its loop while the last rows go out beats losing them.

        :raises RuntimeError: after :meth:`close`.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker threads are closed")
            if self._started:
                return
            self._started = True
            for i in range(self._size):
                try:
                    threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True).start()
                except RuntimeError:  # "can't create new thread at interpreter shutdown"
                    self._inline = i == 0
                    logger.debug("sentinel-forwarder: %d upload threads of %d started", i, self._size)
                    break

    def _submit(self, job: Callable[[], None]) -> None:
        self.start()
        if self._inline:
            job()
        else:
            self._jobs.put(job)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not _STOP:
            job()

    def close(self) -> None:
        """Let idle threads end; a thread busy with an abandoned call ends when the call does. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
        if started:
            for _ in range(self._size):
                self._jobs.put(_STOP)
