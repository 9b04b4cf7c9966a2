"""OpenTelemetry instruments (through opentelemetry-api only) and the reporter that feeds them.

Instruments are created once per meter provider and shared by every forwarder that uses it; each forwarder's
rows carry its ``forwarder.name`` attribute. Attribute dicts are built once. The queue depth is an observable
gauge read from the queues at collection time, so ``forward()`` pays nothing for metrics unless it drops.

Metrics and logging belong to the application (its exporters, handlers, filters): the :class:`Reporter`
runs them after the ledger has counted, and if they fail, the count stands and nothing is raised.
"""

from __future__ import annotations

__all__ = ["METER_NAME", "ForwarderAttributes", "Instruments", "Reporter", "instruments_for"]

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from opentelemetry import metrics

from .._model.entry import Severity
from .._model.protocol import DROP_REASONS, DropReason, SendResult
from .._util.ratelimited import DropLog
from .._util.version import VERSION

logger = logging.getLogger("sentinel_forwarder")
#: Seconds between two "being throttled" warnings.
THROTTLE_LOG_INTERVAL = 60.0

METER_NAME = "sentinel_forwarder"


class _Observed(Protocol):
    """What the queue-depth gauge reads from a forwarder."""

    @property
    def name(self) -> str: ...

    def queue_depth(self) -> int: ...

    def spool_gauges(self) -> tuple[int, int, float, int] | None:
        """(rows, bytes, age in seconds of the oldest row, dead letters) of the spool, if there is one."""
        ...

    def request_rate(self) -> float | None:
        """The request budget's current rate, requests a minute (``None``: no budget)."""
        ...


class Instruments:
    """The library's instruments on one meter provider."""

    def __init__(self, meter_provider: metrics.MeterProvider | None) -> None:
        meter = metrics.get_meter(METER_NAME, VERSION, meter_provider=meter_provider)
        self.dropped = meter.create_counter(
            "audit.forward.dropped", unit="{row}", description="Audit rows dropped, by reason."
        )
        self.sent = meter.create_counter(
            "audit.forward.sent", unit="{row}", description="Audit rows accepted by the sink (delivered)."
        )
        self.unconfirmed = meter.create_counter(
            "audit.forward.unconfirmed",
            unit="{row}",
            description="Audit rows sent whose landing is unknown (answer lost, in flight at the deadline).",
        )
        self.batches = meter.create_counter(
            "audit.forward.batches",
            unit="{batch}",
            description="Batches handed to the sink, by outcome (success, partial, failure).",
        )
        self.duration = meter.create_histogram(
            "audit.forward.batch.duration",
            unit="s",
            description="Time to deliver one batch, retries included.",
        )
        self.throttled = meter.create_counter(
            "audit.forward.throttled",
            unit="s",
            description="Seconds new requests were paused because the service throttled (429, 503).",
        )
        self._observed: weakref.WeakSet[_Observed] = weakref.WeakSet()
        meter.create_observable_gauge(
            "audit.forward.request_rate",
            callbacks=[self._observe_rate],
            unit="{request}/min",
            description="The request budget's current rate (lowered after a throttle, raised back slowly).",
        )
        meter.create_observable_gauge(
            "audit.forward.queue.depth",
            callbacks=[self._observe_depth],
            unit="{row}",
            description="Rows waiting in the forwarder's buffer.",
        )
        for index, (name, unit, text) in enumerate(
            (
                ("audit.spool.rows", "{row}", "Rows waiting in the spool (on disk), delivery pending."),
                ("audit.spool.bytes", "By", "Bytes of the rows waiting in the spool (their JSON)."),
                ("audit.spool.oldest_age", "s", "Age of the oldest row waiting in the spool."),
                ("audit.spool.dead_letters", "{row}", "Rows the service refused, kept in the spool."),
            )
        ):
            meter.create_observable_gauge(
                name, callbacks=[self._spool_callback(index)], unit=unit, description=text
            )

    def observe(self, forwarder: _Observed) -> None:
        """Report *forwarder*'s queue depth until it is garbage-collected or :meth:`forget` is called."""
        self._observed.add(forwarder)

    def forget(self, forwarder: _Observed) -> None:
        self._observed.discard(forwarder)

    def _spool_callback(
        self, index: int
    ) -> Callable[[metrics.CallbackOptions], Iterable[metrics.Observation]]:
        def observe(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            found = []
            for f in list(self._observed):
                gauges = f.spool_gauges()
                if gauges is not None:
                    found.append(metrics.Observation(gauges[index], {"forwarder.name": f.name}))
            return found

        return observe

    def _observe_rate(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        found = []
        for f in list(self._observed):
            rate = f.request_rate()
            if rate is not None:
                found.append(metrics.Observation(rate, {"forwarder.name": f.name}))
        return found

    def _observe_depth(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        return [
            metrics.Observation(f.queue_depth(), {"forwarder.name": f.name}) for f in list(self._observed)
        ]


_registry: dict[int, Instruments] = {}
_registry_lock = threading.Lock()


def _new_registry_lock() -> None:  # a lock another thread held at fork time stays held in the child
    global _registry_lock
    _registry_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_registry_lock)


def instruments_for(meter_provider: metrics.MeterProvider | None) -> Instruments:
    """The shared :class:`Instruments` of *meter_provider* (``None``: the global provider)."""
    key = id(meter_provider) if meter_provider is not None else 0
    with _registry_lock:
        inst = _registry.get(key)
        if inst is None:
            inst = _registry[key] = Instruments(meter_provider)
        return inst


class ForwarderAttributes:
    """Attribute dicts of one forwarder, built once."""

    def __init__(self, name: str) -> None:
        self.base: Mapping[str, str] = {"forwarder.name": name}
        self.by_reason: Mapping[DropReason, Mapping[str, str]] = {
            r: {"forwarder.name": name, "reason": r} for r in DROP_REASONS
        }
        self.by_outcome: Mapping[str, Mapping[str, str]] = {
            o: {"forwarder.name": name, "outcome": o} for o in ("success", "partial", "failure")
        }


class Reporter:
    """Metrics and the drop log for one forwarder's counts: called by the ledger once a count is taken.

    :param instruments: the shared instruments of the meter provider.
    :param name: the ``forwarder.name`` attribute.
    :param drop_log: where drops and unconfirmed rows are logged (rate-limited).
    """

    def __init__(
        self,
        instruments: Instruments,
        name: str,
        drop_log: DropLog,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.instruments = instruments
        self.attributes = ForwarderAttributes(name)
        self.drop_log = drop_log
        self._clock = clock
        self._throttle_logged = float("-inf")
        self._throttles_held = 0

    def throttled(self, seconds: float, rate: float | None) -> None:
        """The service throttled a delivery: the metric, and a WARNING at most once a minute."""
        with contextlib.suppress(Exception):
            self.instruments.throttled.add(seconds, self.attributes.base)
        now = self._clock()
        self._throttles_held += 1
        if now - self._throttle_logged < THROTTLE_LOG_INTERVAL:
            return
        self._throttle_logged, held, self._throttles_held = now, self._throttles_held, 0
        budget = "" if rate is None else f"; this instance's request rate is lowered to {rate:.0f}/min"
        with contextlib.suppress(Exception):  # the application's handlers and filters
            logger.warning(
                "sentinel-forwarder is being throttled by the service (%d time%s since the last such "
                "line): new requests pause for %.1f s, rows wait and are coalesced into fuller requests%s",
                held,
                "" if held == 1 else "s",
                seconds,
                budget,
            )

    def dropped(self, reason: DropReason, count: int, detail: str | None, severity: Severity | None) -> None:
        with contextlib.suppress(Exception):
            attrs = self.attributes.by_reason[reason]
            if severity is not None:
                attrs = {**attrs, "severity": severity.label}
            self.instruments.dropped.add(count, attrs)
            self.drop_log.record(reason, count, detail)

    def unconfirmed(self, count: int, detail: str | None) -> None:
        with contextlib.suppress(Exception):
            self.instruments.unconfirmed.add(count, self.attributes.base)
            self.drop_log.record("unconfirmed", count, detail)

    def result(self, result: SendResult, elapsed: float) -> None:
        """Metrics and logs for a counted delivery."""
        dropped = {r: n for r, n in result.dropped.items() if n}
        if result.unconfirmed:
            self.unconfirmed(result.unconfirmed, result.error)
        for reason, n in dropped.items():
            self.dropped(reason, n, result.error_for(reason), None)
        with contextlib.suppress(Exception):
            inst, attrs = self.instruments, self.attributes
            if result.sent:
                inst.sent.add(result.sent, attrs.base)
            failed = dropped or result.unconfirmed
            outcome = "success" if not failed else ("partial" if result.sent else "failure")
            inst.batches.add(1, attrs.by_outcome[outcome])
            inst.duration.record(elapsed, attrs.base)
