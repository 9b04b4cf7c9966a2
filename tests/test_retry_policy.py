"""IngestionRetryPolicy as pure logic: a scripted next policy, an injected clock, random source and sleep."""

from __future__ import annotations

import io
import ssl
import threading
from collections.abc import Callable
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.core.pipeline import PipelineContext, PipelineRequest, PipelineResponse
from azure.core.rest import HttpRequest

from sentinel_forwarder._sinks.azure.retry import (
    DEADLINE_OPTION,
    RECORD_OPTION,
    IngestionRetryPolicy,
    RetryRecord,
    TokenError,
    UnreachableError,
    parse_retry_after,
)

URL = "https://dce.example.com/dataCollectionRules/dcr-1/streams/Custom-X"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float, cancel: threading.Event) -> bool:
        self.slept.append(seconds)
        self.now += seconds
        return cancel.is_set()


class Answer:
    """A minimal azure-core HTTP response."""

    def __init__(self, status: int, headers: dict[str, str] | None = None, body: str = "") -> None:
        self.status_code = status
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self._body = body

    def text(self) -> str:
        return self._body


class Script:
    """The policy below the retry policy: each attempt takes the next step (an answer or an exception)."""

    def __init__(self, clock: Clock, *steps: Any, took: float = 0.0) -> None:
        self.clock = clock
        self.steps = list(steps)
        self.took = took
        self.options: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        self.options.append(dict(request.context.options))
        self.bodies.append(request.http_request.body.read())
        self.clock.now += self.took
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        return PipelineResponse(request.http_request, step, request.context)


def make_policy(clock: Clock, **kwargs: Any) -> IngestionRetryPolicy:
    options: dict[str, Any] = {
        "max_retries": 10,
        "backoff": 0.5,
        "backoff_max": 30.0,
        "budget": 10.0,
        "connection_timeout": 5.0,
        "read_timeout": 8.0,
        "clock": clock,
        "rng": lambda: 1.0,
        "sleep": clock.sleep,
    }
    options.update(kwargs)
    return IngestionRetryPolicy(**options)


def send(
    policy: IngestionRetryPolicy, script: Script, record: RetryRecord, deadline: float | None = None
) -> Callable[[], PipelineResponse[Any, Any]]:
    policy.next = script  # type: ignore[assignment]
    request = HttpRequest("POST", URL, content=io.BytesIO(b"payload"))
    options: dict[str, Any] = {RECORD_OPTION: record, "timeout": 999}
    if deadline is not None:
        options[DEADLINE_OPTION] = deadline
    context = PipelineContext(None, **options)
    return lambda: policy.send(PipelineRequest(request, context))


def test_success_after_retries_rewinds_the_body_and_backs_off_with_jitter() -> None:
    clock = Clock()
    script = Script(clock, Answer(503), Answer(500), Answer(204))
    record = RetryRecord()
    policy = make_policy(clock, rng=lambda: 0.5)
    response = send(policy, script, record)()
    assert response.http_response.status_code == 204
    assert script.bodies == [b"payload"] * 3
    assert clock.slept == [0.25, 0.5]  # full jitter: rng * 0.5 * 2**(n-1)
    assert record.attempts == 3 and not record.ambiguous
    assert record.last_answer == "HTTP 500"


def test_every_timeout_is_clamped_to_what_is_left_of_the_budget() -> None:
    clock = Clock()
    script = Script(clock, Answer(503), Answer(503), Answer(204), took=3.0)
    policy = make_policy(clock, budget=10.0, backoff=0.25)
    send(policy, script, RetryRecord())()
    reads = [o["read_timeout"] for o in script.options]
    connects = [o["connection_timeout"] for o in script.options]
    assert reads == [8.0, pytest.approx(10 - 3 - 0.25), pytest.approx(10 - 6 - 0.75)]
    assert connects == [5.0, 5.0, pytest.approx(3.25)]
    assert all("timeout" not in o for o in script.options)  # azure-core's own per-call timeout is replaced


def test_a_retry_after_longer_than_what_is_left_ends_the_retries_at_once() -> None:
    # A failure (here a 502) that asks for more than is left: waiting it would only delay the same drop.
    clock = Clock()
    script = Script(clock, Answer(502, {"Retry-After": "60"}), Answer(204))
    record = RetryRecord()
    response = send(make_policy(clock, budget=1.0), script, record)()
    assert response.http_response.status_code == 502
    assert clock.slept == []
    assert record.attempts == 1 and record.throttled is None
    assert "asked to retry after 60 s, more than the 1.0 s left" in (record.stopped or "")


@pytest.mark.parametrize(
    ("throttle", "asked"),
    [(Answer(429, {"Retry-After": "60"}), 60.0), (Answer(503, {"Retry-After": "45"}), 45.0)],
    ids=["429", "503 with Retry-After"],
)
def test_throttling_waits_as_asked_without_spending_the_budget_or_the_retries(
    throttle: Answer, asked: float
) -> None:
    """retry_timeout bounds failures, not throttling: the wait the service asks for is added to the deadline
    and is not a retry; the record says the service throttled, for the forwarder's gate."""
    clock = Clock()
    script = Script(clock, throttle, throttle, Answer(204))
    record = RetryRecord()
    response = send(make_policy(clock, budget=1.0, max_retries=0), script, record)()
    assert response.http_response.status_code == 204
    assert clock.slept == [asked, asked]
    assert record.throttled == asked and record.throttled_wait == 2 * asked and record.stopped is None


def test_the_record_says_a_throttle_at_once() -> None:
    clock = Clock()
    heard: list[tuple[float | None, int]] = []
    script = Script(clock, Answer(429, {"Retry-After": "7"}), Answer(429), Answer(204))
    record = RetryRecord()
    record.on_throttle = lambda asked: heard.append((asked, len(clock.slept)))
    send(make_policy(clock), script, record)()
    assert heard == [(7.0, 0), (None, 1)]  # before each wait, not after the request is done


def test_a_failing_throttle_listener_does_not_fail_the_request() -> None:
    clock = Clock()
    script = Script(clock, Answer(429, {"Retry-After": "1"}), Answer(204))
    record = RetryRecord()
    record.on_throttle = lambda asked: 1 / 0  # type: ignore[func-returns-value]
    assert send(make_policy(clock), script, record)().http_response.status_code == 204


def test_a_429_without_retry_after_backs_off_and_says_it_was_throttled() -> None:
    clock = Clock()
    script = Script(clock, Answer(429), Answer(204))
    record = RetryRecord()
    send(make_policy(clock, budget=1.0, max_retries=0, backoff=0.5), script, record)()
    assert clock.slept == [0.5] and record.throttled == 0.0


def test_a_503_without_retry_after_is_a_failure_not_a_throttle() -> None:
    clock = Clock()
    script = Script(clock, Answer(503), Answer(204))
    record = RetryRecord()
    response = send(make_policy(clock, max_retries=0), script, record)()
    assert response.http_response.status_code == 503 and record.throttled is None


def test_a_service_that_throttles_past_the_patience_ends_the_retries() -> None:
    from sentinel_forwarder._sinks.azure.retry import THROTTLE_PATIENCE

    clock = Clock()
    long = Answer(429, {"Retry-After": str(int(THROTTLE_PATIENCE / 2) + 1)})
    script = Script(clock, long, long, Answer(204))
    record = RetryRecord()
    response = send(make_policy(clock), script, record)()
    assert response.http_response.status_code == 429
    assert len(clock.slept) == 1 and "kept throttling" in (record.stopped or "")


def test_a_retry_after_within_the_budget_is_honoured() -> None:
    clock = Clock()
    script = Script(clock, Answer(429, {"Retry-After": "2"}), Answer(204))
    send(make_policy(clock), script, RetryRecord())()
    assert clock.slept == [2.0]


@pytest.mark.parametrize("value", ["soon", "", "nan", "inf", "-5"])
def test_an_unreadable_retry_after_falls_back_to_backoff(value: str) -> None:
    clock = Clock()
    script = Script(clock, Answer(429, {"Retry-After": value}), Answer(204))
    send(make_policy(clock, backoff=0.5), script, RetryRecord())()
    assert clock.slept == ([0.5] if value != "-5" else [])  # a negative wait means "now"


def test_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"x-ms-retry-after-ms": "20"}) == 0.02
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=lambda: 1445412470.0) == 10
    assert parse_retry_after({}) is None


def test_backoff_sleep_is_clamped_by_ending_the_retries() -> None:
    clock = Clock()
    script = Script(clock, *[Answer(503)] * 20)
    record = RetryRecord()
    response = send(make_policy(clock, budget=5.0, backoff=1.0), script, record)()
    assert response.http_response.status_code == 503
    assert sum(clock.slept) < 5.0  # never past the deadline
    assert clock.slept == [1.0, 2.0]  # the next one (4 s) would cross it
    assert record.stopped == "the next retry (in 4 s) would not fit in the 2 s left of the retry budget"


def test_the_caller_deadline_bounds_every_chunk_of_a_batch() -> None:
    clock = Clock()
    script = Script(clock, Answer(503), Answer(204))
    record = RetryRecord()
    response = send(make_policy(clock, budget=100.0), script, record, deadline=clock.now + 0.4)()
    assert response.http_response.status_code == 503  # a 0.5 s backoff does not fit in 0.4 s
    assert script.options[0]["read_timeout"] == pytest.approx(0.4)
    with pytest.raises(ServiceRequestError, match="budget was spent"):
        send(make_policy(clock), Script(clock, Answer(204)), RetryRecord(), deadline=clock.now)()


def test_max_retries_is_respected() -> None:
    clock = Clock()
    script = Script(clock, *[Answer(502)] * 5)
    record = RetryRecord()
    send(make_policy(clock, max_retries=2, backoff=0.0), script, record)()
    assert record.attempts == 3
    assert "after 2 retries" in (record.stopped or "")


def test_a_lost_answer_marks_the_request_ambiguous() -> None:
    clock = Clock()
    lost = ServiceResponseError("read timed out", error=TimeoutError("The read operation timed out"))
    script = Script(clock, lost, Answer(503), *[Answer(503)] * 3)
    record = RetryRecord()
    send(make_policy(clock, max_retries=1, backoff=0.0), script, record)()
    assert record.ambiguous
    assert "no answer from dce.example.com:443 in time" in (record.cause or "")


def test_connection_refused_is_retried_and_named() -> None:
    clock = Clock()
    refused = ServiceRequestError("refused", error=ConnectionRefusedError(111, "Connection refused"))
    script = Script(clock, refused, Answer(204))
    record = RetryRecord()
    assert send(make_policy(clock), script, record)().http_response.status_code == 204
    assert record.cause == "connection refused to dce.example.com:443"
    assert not record.ambiguous


def test_a_certificate_error_fails_fast() -> None:
    clock = Clock()
    cert = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cert.verify_message = "unable to get local issuer certificate"
    script = Script(clock, ServiceRequestError("ssl", error=cert), Answer(204))
    record = RetryRecord()
    with pytest.raises(UnreachableError, match=r"certificate verify failed for dce\.example\.com"):
        send(make_policy(clock), script, record)()
    assert record.attempts == 1 and clock.slept == []


def test_an_unknown_host_fails_fast_but_a_dns_hiccup_is_retried() -> None:
    import socket

    clock = Clock()
    unknown = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    with pytest.raises(UnreachableError, match=r"name resolution failed for dce\.example\.com"):
        send(make_policy(clock), Script(clock, ServiceRequestError("dns", error=unknown)), RetryRecord())()
    hiccup = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    script = Script(clock, ServiceRequestError("dns", error=hiccup), Answer(204))
    assert send(make_policy(clock), script, RetryRecord())().http_response.status_code == 204


def test_transient_token_failures_are_retried_within_the_budget() -> None:
    clock = Clock()
    script = Script(clock, TokenError("no access token: OSError: boom", transient=True), Answer(204))
    record = RetryRecord()
    assert send(make_policy(clock), script, record)().http_response.status_code == 204
    assert record.attempts == 2
    permanent = TokenError("no access token: nothing configured", transient=False)
    with pytest.raises(TokenError):
        send(make_policy(clock), Script(clock, permanent, Answer(204)), RetryRecord())()


def test_cancel_stops_a_backoff() -> None:
    clock = Clock()
    record = RetryRecord()
    record.cancel.set()
    script = Script(clock, Answer(503), Answer(204))
    assert send(make_policy(clock), script, record)().http_response.status_code == 503
    assert record.stopped == "the batch was abandoned"


def test_full_jitter_by_default_spreads_a_fleet() -> None:
    policy = IngestionRetryPolicy(
        max_retries=3, backoff=1.0, backoff_max=30.0, budget=60.0, connection_timeout=1, read_timeout=1
    )
    waits = {round(policy.backoff_for(3), 6) for _ in range(50)}
    assert len(waits) > 40 and all(0 <= w <= 4.0 for w in waits)


def test_no_retry_is_made_with_too_little_time_left_for_it() -> None:
    clock = Clock()
    script = Script(clock, Answer(503), Answer(204), took=9.3)  # 0.7 s of a 10 s budget left after it
    record = RetryRecord()
    response = send(make_policy(clock, backoff=0.5), script, record)()
    assert response.http_response.status_code == 503  # a 0.5 s wait would leave 0.2 s for the attempt
    assert record.attempts == 1
