"""The one fork policy: what a forked child does with the forwarders it inherited.

Each object that holds locks, threads or connections resets itself in a forked child through
:func:`reinit_at_fork`, registered beside its ``__init__`` (OpenTelemetry's per-instance ``_at_fork_reinit``,
through a weak method, so a forwarder that is gone is not kept alive). What restarts is decided here:

- a forwarder never started in the parent stays unstarted (the child starts it, or not, as the parent would);
- a forwarder that ran in the parent starts again in the child, on a thread of the child's own (its
  :func:`runner_of`, or a new one), at the child's first row; the parent's buffered rows stay the parent's;
- a forwarder closed in the parent stays closed (rows offered in the child are dropped as ``closed``).

(``Lifecycle.after_fork`` in ``lifecycle.py`` says it per state.)

Objects of the parent's run (a spool's SQLite connections) are kept referenced in the child
(:func:`keep_inherited`) and never closed there: closing would run SQLite's clean-up against files the parent
is using.
"""

from __future__ import annotations

__all__ = ["keep_inherited", "reinit_at_fork", "remember_runner", "runner_of"]

import os
import weakref
from typing import Any, Protocol

#: What a forked child keeps from its parent's runs, unclosed, for the rest of its life.
_inherited: list[object] = []


class _Resettable(Protocol):
    def _at_fork_reinit(self) -> None: ...


def reinit_at_fork(obj: _Resettable) -> None:
    """Call ``obj._at_fork_reinit()`` in every forked child while *obj* is alive."""
    if not hasattr(os, "register_at_fork"):  # not POSIX: no fork
        return
    method = weakref.WeakMethod(obj._at_fork_reinit)

    def reinit() -> None:
        bound = method()
        if bound is not None:
            bound()

    os.register_at_fork(after_in_child=reinit)


def keep_inherited(obj: object) -> None:
    """Keep *obj* (of the parent's run) referenced, never closed, in this forked child."""
    _inherited.append(obj)


#: The thread runner of each forwarder that has one, so a forked child restarts the same runner.
_runners: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def remember_runner(forwarder: object, runner: object) -> None:
    """*runner* runs *forwarder* on a thread: a forked child restarts it there."""
    _runners[forwarder] = runner


def runner_of(forwarder: object) -> Any:
    """The runner remembered for *forwarder*, or ``None``."""
    return _runners.get(forwarder)
