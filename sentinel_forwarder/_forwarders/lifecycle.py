"""The lifecycle of a :class:`~sentinel_forwarder.BufferingForwarder`, one state at a time."""

from __future__ import annotations

__all__ = ["Lifecycle"]

import enum


class Lifecycle(enum.Enum):
    """Where a forwarder is in its one run. It only moves down this list (a forked child aside)."""

    #: Created, not started: ``forward()`` buffers rows; the pump takes them when it starts.
    NEW = "new"
    #: A forked child's copy of a forwarder that ran in the parent: it starts on a thread of the child's own
    #: at the child's first row (then it is ``NEW`` for a moment, and ``OPEN``).
    FORKED = "forked"
    #: Started: the sink is open (or opening) and the pump runs.
    OPEN = "open"
    #: Draining within ``drain_timeout``: ``forward()`` drops rows as ``closed``.
    CLOSING = "closing"
    #: Done (or never started and closed): every row is counted; ``forward()`` drops rows as ``closed``.
    CLOSED = "closed"

    def after_fork(self) -> Lifecycle:
        """The state a forwarder in this state in the parent has in a forked child (the fork policy)."""
        if self in (Lifecycle.NEW, Lifecycle.CLOSED):
            return self  # unstarted stays unstarted; closed stays closed
        return Lifecycle.FORKED  # it ran in the parent: it restarts in the child at the first row
