"""The one retry story of the Azure sink: an azure-core ``RetryPolicy`` subclass, read top to bottom.

``retry_timeout`` is a hard bound on one batch's failures. Every attempt's connect and read timeouts are
clamped to what is left of it; so is every backoff sleep, and a failure's ``Retry-After`` longer than what is
left ends the retries at once (sleeping it would only delay the same drop). Throttling is not a failure: the
wait a 429 (or a 503 with ``Retry-After``) asks for is added to the deadline and not counted as a retry, up to
:data:`THROTTLE_PATIENCE` per request, and the record says the service throttled, so the forwarder pauses its
other new requests too (``_core/throttle.py``). Backoff has full jitter, so a throttled fleet does not
retry in lock-step. Errors that cannot heal (certificate verification, TLS, an unknown host name, a credential
with nothing to use) end the retries at once; transient token failures are retried within the budget like any
other transient error. What the sink needs to report a drop precisely travels back in a :class:`RetryRecord`:
the root cause of the last failure, the service's last answer, why retrying stopped, and whether any attempt
reached the service without an answer coming back (then the rows' fate is unknown: *unconfirmed*).

azure-core's own ``RetryPolicy.send`` does none of this: it sleeps a ``Retry-After`` in full past the budget,
bounds only the connect timeout by the budget, has no jitter, and its ``parse_retry_after`` raises
``ValueError`` for ``Retry-After: soon``.
"""

from __future__ import annotations

__all__ = [
    "DEADLINE_OPTION",
    "RECORD_OPTION",
    "RETRY_STATUSES",
    "THROTTLE_PATIENCE",
    "IngestionRetryPolicy",
    "RetryRecord",
    "TokenError",
    "TokenPolicy",
    "UnreachableError",
    "describe_response",
    "root_cause",
]

import contextlib
import errno
import http.client
import json
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import (
    ClientAuthenticationError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
)
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import BearerTokenCredentialPolicy, RetryPolicy

#: Statuses worth another attempt: timeout, throttling, and the service's transient failures.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Context options the sink passes to ``upload()``; the policy takes them out before the transport.
RECORD_OPTION = "sentinel_forwarder_record"
DEADLINE_OPTION = "sentinel_forwarder_deadline"
_MIN_TIMEOUT = 0.001  # a socket timeout of 0 would mean non-blocking
#: A retry is made only if at least this long (or a tenth of the budget, if less) is left for it.
_MIN_ATTEMPT = 0.5
#: Waiting the service asks for when it throttles is not charged to the retry budget (``retry_timeout``
#: bounds failures, not throttling) nor counted as a retry, up to this many seconds per request: a service
#: that throttles longer than that ends the retries like a failure.
THROTTLE_PATIENCE = 120.0


@dataclass
class RetryRecord:
    """What happened to one request across its attempts; filled in by :class:`IngestionRetryPolicy`."""

    #: Set by the caller to stop retrying (the batch was abandoned); wakes a backoff sleep.
    cancel: threading.Event = field(default_factory=threading.Event)
    attempts: int = 0
    #: An attempt's request reached the service but its answer was lost: the rows may have landed.
    ambiguous: bool = False
    #: The root cause of the last transport or token failure, e.g. ``connection refused to 127.0.0.1:1``.
    cause: str | None = None
    #: The service's last retryable answer, e.g. ``HTTP 503 (ServerBusy) try later``.
    last_answer: str | None = None
    #: Why retrying stopped before the service said yes, e.g. the budget was spent.
    stopped: str | None = None
    #: The service throttled an attempt (429, or 503 with ``Retry-After``): the longest wait it asked for
    #: (0.0 if it did not say); ``None``: never throttled.
    throttled: float | None = None
    #: Seconds spent waiting as the service asked when it throttled (not charged to the retry budget).
    throttled_wait: float = 0.0
    #: Told at once when the service throttles an attempt, with the wait it asked for (``None``: unsaid), so
    #: the forwarder pauses its other new requests now, not when this request is done. Its failures are
    #: ignored.
    on_throttle: Callable[[float | None], None] | None = None

    def explain(self) -> str:
        """Everything known about the failure, in one line for the drop log."""
        answer = self.last_answer and f"the service last answered {self.last_answer}"
        text = "; ".join(p for p in (self.cause, answer) if p) or "no answer"
        if self.stopped:
            text += f"; {self.stopped}"
        return f"{text} ({self.attempts} attempt{'' if self.attempts == 1 else 's'})"


class UnreachableError(ServiceRequestError):
    """The endpoint cannot be reached in a way that retrying cannot fix (TLS, certificate, host name)."""


class TokenError(ClientAuthenticationError):
    """No access token could be acquired; ``transient`` says whether another try may succeed."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message=message)
        self.transient = transient


@dataclass(frozen=True)
class _Cause:
    text: str
    permanent: bool = False


def _wrapped(exc: BaseException) -> Iterator[BaseException]:
    """*exc* and every exception it wraps (azure-core, requests and urllib3 each wrap the one below)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        nested = [getattr(e, a, None) for a in ("inner_exception", "reason", "__cause__", "__context__")]
        nested += list(getattr(e, "args", ()))
        todo += [n for n in nested if isinstance(n, BaseException)]


def root_cause(exc: BaseException, url: str) -> _Cause:
    """Name the real reason a request failed, and whether it can heal by itself.

    :param exc: what the transport raised.
    :param url: the request's URL, for the host and port in the message.
    """
    parts = urlsplit(url)
    host = parts.hostname or "?"
    where = f"{host}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    chain = list(_wrapped(exc))
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            return _Cause(f"certificate verify failed for {host}: {e.verify_message or e.reason}", True)
    for e in chain:
        if isinstance(e, ssl.SSLError):
            hint = " (does the endpoint speak HTTPS?)" if "WRONG_VERSION_NUMBER" in str(e).upper() else ""
            return _Cause(f"TLS handshake with {where} failed: {e.reason or e}{hint}", True)
    for e in chain:
        if isinstance(e, socket.gaierror):
            # EAI_AGAIN is a temporary DNS failure; any other answer (no such name) will not heal
            permanent = e.errno != socket.EAI_AGAIN
            return _Cause(f"name resolution failed for {host}: {e.strerror or e}", permanent)
        if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED:
            return _Cause(f"connection refused to {where}")
        if isinstance(e, TimeoutError) or "timed out" in str(e).lower():
            return _Cause(f"no answer from {where} in time ({_first_line(e)})")
        if isinstance(e, (http.client.RemoteDisconnected, ConnectionResetError)):
            hint = " (if the endpoint serves HTTPS, use https://)" if parts.scheme == "http" else ""
            return _Cause(f"the connection to {where} was closed without an answer{hint}")
    return _Cause(f"{type(exc).__name__}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__


def describe_response(response: Any) -> str:
    """``HTTP 503 (ServerBusy) message`` from an azure-core HTTP response, for the log."""
    text = f"HTTP {response.status_code}"
    try:
        error = json.loads(response.text())["error"]
        text += f" ({error['code']}) {error['message']}"
    except (ValueError, KeyError, TypeError):
        pass
    return text


def parse_retry_after(headers: Any, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds the service asked to wait, or ``None`` if it did not say (or said something unreadable).

    Reads ``retry-after-ms``, ``x-ms-retry-after-ms`` (milliseconds) and ``Retry-After`` (seconds or an HTTP
    date), as azure-core does; never raises.
    """
    for name, scale in (("retry-after-ms", 0.001), ("x-ms-retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - now()
            except (TypeError, ValueError, IndexError, OverflowError):
                continue
        if seconds == seconds and seconds != float("inf"):  # not NaN, not infinite
            return max(seconds, 0.0)
    return None


class TokenPolicy(BearerTokenCredentialPolicy):  # type: ignore[type-arg]
    """azure-core's bearer token policy; a failure to get a token becomes a :class:`TokenError`.

    A credential may raise anything (``OSError`` from a socket, a ``ValueError`` from a parser); the retry
    policy above it must see one kind of error, with a readable cause and whether it may heal.
    """

    def on_request(self, request: PipelineRequest[Any]) -> None:
        try:
            super().on_request(request)
        except ServiceRequestError:
            raise  # https enforcement: not a token problem
        except Exception as exc:
            from azure.identity import CredentialUnavailableError

            transient = not isinstance(exc, CredentialUnavailableError)
            raise TokenError(
                f"no access token: {type(exc).__name__}: {_first_line(exc)}", transient=transient
            ) from exc


class IngestionRetryPolicy(RetryPolicy):  # type: ignore[type-arg]
    """Retries the ingestion POST within a hard time budget.

    The POST body is a replayable byte stream, so every attempt may be retried; after a connection dropped
    mid-response the service may have stored the rows, and a retry can store them twice (rows carry a unique
    ``Id`` to de-duplicate on). azure-core retries a POST only on 500/503/504 or with ``Retry-After``; this
    policy also retries 408, 429, 502, timeouts and dropped connections.

    :param max_retries: attempts after the first.
    :param backoff: seconds; without ``Retry-After`` the n-th retry waits a random time in
        ``[0, min(backoff_max, backoff * 2**(n-1))]`` (full jitter).
    :param backoff_max: the cap of one backoff, seconds.
    :param budget: seconds one request may take in all, when the caller gives no deadline.
    :param connection_timeout: seconds to connect, at most; clamped to what is left of the budget.
    :param read_timeout: seconds to wait for an answer, at most; clamped likewise.
    :param clock: a monotonic clock; *rng* gives floats in [0, 1); *sleep* waits, returns ``True`` if woken by
        the record's ``cancel`` event. All three are injectable for tests.
    """

    def __init__(
        self,
        *,
        max_retries: int,
        backoff: float,
        backoff_max: float,
        budget: float,
        connection_timeout: float,
        read_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        sleep: Callable[[float, threading.Event], bool] | None = None,
    ) -> None:
        super().__init__(retry_total=max_retries, retry_backoff_factor=backoff, retry_backoff_max=backoff_max)
        self._max_retries = max_retries
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._budget = budget
        self._connection_timeout = connection_timeout
        self._read_timeout = read_timeout
        self._clock = clock
        self._rng = rng
        self._sleep = sleep or (lambda seconds, cancel: cancel.wait(seconds))
        self._min_attempt = min(_MIN_ATTEMPT, budget / 10)

    def backoff_for(self, retry: int) -> float:
        """Seconds before retry number *retry* (1-based) when the service did not say: full jitter."""
        return float(self._rng() * min(self._backoff_max, self._backoff * 2 ** (retry - 1)))

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        options = request.context.options
        record: RetryRecord = options.pop(RECORD_OPTION, None) or RetryRecord()
        deadline: float = options.pop(DEADLINE_OPTION, None) or self._clock() + self._budget
        options.pop("timeout", None)  # the deadline replaces azure-core's per-call timeout
        url = request.http_request.url
        positions: dict[str, Any] = {}
        self._configure_positions(request, positions)  # azure-core's: where the body stream starts
        throttled_attempts = 0
        while True:
            left = deadline - self._clock()
            if left <= 0:
                raise ServiceRequestTimeoutError("the retry budget was spent before this request was sent")
            options["connection_timeout"] = max(min(self._connection_timeout, left), _MIN_TIMEOUT)
            options["read_timeout"] = max(min(self._read_timeout, left), _MIN_TIMEOUT)
            record.attempts += 1
            response: PipelineResponse[Any, Any] | None = None
            error: Exception | None = None
            try:
                response = self.next.send(request)
            except TokenError as exc:
                record.cause = exc.message
                if not exc.transient:
                    raise
                error = exc
            except ServiceRequestError as exc:  # nothing reached the service
                cause = root_cause(exc, url)
                record.cause = cause.text
                if cause.permanent:
                    raise UnreachableError(cause.text, error=exc) from exc
                error = exc
            except ServiceResponseError as exc:  # the request went out, its answer did not come back
                record.ambiguous = True
                record.cause = root_cause(exc, url).text
                error = exc
            if response is not None:
                if response.http_response.status_code not in RETRY_STATUSES:
                    return response
                record.last_answer = describe_response(response.http_response)
            asked = parse_retry_after(response.http_response.headers) if response is not None else None
            status = response.http_response.status_code if response is not None else None
            if status == 429 or (status == 503 and asked is not None):
                # Throttled: the service said when. That wait is not a failure: neither a retry nor budget.
                wait = self.backoff_for(throttled_attempts + 1) if asked is None else asked
                record.throttled = max(record.throttled or 0.0, asked or 0.0)
                if record.on_throttle is not None:
                    # The forwarder's bookkeeping must not fail this request.
                    with contextlib.suppress(Exception):
                        record.on_throttle(asked)
                if record.throttled_wait + wait > THROTTLE_PATIENCE:
                    record.stopped = (
                        f"the service kept throttling for more than {THROTTLE_PATIENCE:g} s "
                        f"({record.throttled_wait:.1f} s waited)"
                    )
                    break
                record.throttled_wait += wait
                deadline += wait
                throttled_attempts += 1
            else:
                retry = record.attempts - throttled_attempts
                if retry > self._max_retries:
                    record.stopped = f"gave up after {self._max_retries} retries"
                    break
                wait = self.backoff_for(retry) if asked is None else asked
                left = deadline - self._clock()
                # An attempt needs time to be worth making: one cut to a few milliseconds would only time
                # out (and, once sent, leave its rows unconfirmed instead of plainly not delivered).
                if wait + self._min_attempt > left:
                    left = max(left, 0)
                    record.stopped = (
                        f"the service asked to retry after {asked:g} s, more than the {left:.1f} s left of "
                        "the retry budget"
                        if asked is not None
                        else f"the next retry (in {wait:.2g} s) would not fit in the {left:.2g} s left of "
                        "the retry budget"
                    )
                    break
            if (wait > 0 and self._sleep(wait, record.cancel)) or record.cancel.is_set():
                record.stopped = "the batch was abandoned"
                break
            if positions["body_position"] is not None:  # replay the same bytes
                request.http_request.body.seek(positions["body_position"])
        if error is not None:
            raise error
        assert response is not None
        return response
