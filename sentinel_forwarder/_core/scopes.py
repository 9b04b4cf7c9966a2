"""Shielded work and the abort at the drain deadline.

The pump, each delivery and each heartbeat run inside a shielded scope, so cancelling the code around the
forwarder still lets the drain deliver; when the drain deadline passes the forwarder aborts them all at once,
including work started but not yet running.
"""

from __future__ import annotations

__all__ = ["WorkScopes"]

import contextlib
from collections.abc import Iterator

import anyio


class WorkScopes:
    """The shielded scopes of one run; :meth:`abort` cancels every one, now and later."""

    def __init__(self) -> None:
        self._scopes: set[anyio.CancelScope] = set()
        #: Whether :meth:`abort` was called: a scope opened from now on starts cancelled.
        self.aborted = False

    @contextlib.contextmanager
    def shielded(self) -> Iterator[anyio.CancelScope]:
        """A scope that outside cancellation cannot reach, but :meth:`abort` can."""
        scope = anyio.CancelScope(shield=True)
        if self.aborted:
            scope.cancel()
        self._scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._scopes.discard(scope)

    def abort(self) -> None:
        """Cancel the pump and every delivery in flight, including deliveries started but not yet running."""
        self.aborted = True
        for scope in list(self._scopes):
            scope.cancel()
