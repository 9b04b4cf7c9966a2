"""Fault injection: the controls themselves (with a fake clock) and what SDK clients see."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ServiceResponseError
from emulator_helpers import sync_client, upload_kwargs

from sentinel_forwarder.emulator import Emulator, Faults
from sentinel_forwarder.emulator._faults import Fault

MakeRow = Callable[..., dict[str, Any]]
Upload = Callable[..., None]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the controls ------------------------------------------------------------------------------------------


def test_fail_next_queues_in_order() -> None:
    faults = Faults()
    faults.fail_next(2, 503, retry_after=1)
    faults.fail_next(1, 500, code="Boom", message="m")
    faults.drop_next(1)
    served = [faults.next_request()[1] for _ in range(5)]
    assert served == [
        Fault("drop"),
        Fault("fail", 503, 1, None, None),
        Fault("fail", 503, 1, None, None),
        Fault("fail", 500, None, "Boom", "m"),
        None,
    ]


def test_failure_rate_is_reproducible_with_a_seed() -> None:
    def run() -> list[bool]:
        faults = Faults()
        faults.failure_rate(0.5, 500, seed=7)
        return [faults.next_request()[1] is not None for _ in range(200)]

    first = run()
    assert first == run()
    assert 50 < sum(first) < 150
    faults = Faults()
    faults.failure_rate(1.0)
    assert faults.next_request()[1] == Fault("fail", 503, message="Injected random failure (emulator).")
    faults.failure_rate(0)
    assert faults.next_request()[1] is None


def test_invalid_arguments() -> None:
    faults = Faults()
    for call in (
        lambda: faults.fail_next(1, 204),
        lambda: faults.fail_next(-1, 503),
        lambda: faults.fail_next(1, 503, retry_after=-1),
        lambda: faults.failure_rate(1.5),
        lambda: faults.latency(-0.1),
        lambda: faults.drop_next(-1),
        lambda: faults.rate_limit(requests_per_minute=0),
    ):
        with pytest.raises(ValueError):
            call()


def test_rate_limit_requests_slide_over_a_minute() -> None:
    clock = FakeClock()
    faults = Faults(clock=clock)
    faults.rate_limit("dcr-a", requests_per_minute=2)
    assert faults.admit("dcr-a", 10) is None
    clock.now += 10
    assert faults.admit("dcr-a", 10) is None
    clock.now += 5
    assert faults.admit("dcr-a", 10) == pytest.approx(45.0)  # the first one leaves the window at +60
    assert faults.admit("dcr-b", 10) is None  # no limit for other rules
    clock.now += 45
    assert faults.admit("dcr-a", 10) is None
    assert faults.admit("dcr-a", 10) == pytest.approx(10.0)


def test_rate_limit_bytes() -> None:
    clock = FakeClock()
    faults = Faults(clock=clock)
    faults.rate_limit(bytes_per_minute=1000)  # every rule, each with its own window
    assert faults.admit("dcr-a", 600) is None
    clock.now += 20
    assert faults.admit("dcr-a", 600) == pytest.approx(40.0)
    assert faults.admit("dcr-b", 600) is None
    assert faults.admit("dcr-a", 400) is None
    assert faults.admit("dcr-a", 5000) == 60.0  # can never fit
    faults.rate_limit()  # lifted
    assert faults.admit("dcr-a", 5000) is None


def test_reset_clears_everything() -> None:
    faults = Faults()
    faults.fail_next(3, 503)
    faults.drop_next(3)
    faults.latency(2)
    faults.failure_rate(1)
    faults.rate_limit(requests_per_minute=1)
    faults.reset()
    assert faults.next_request() == (0.0, None)
    assert faults.admit("x", 1) is None
    assert faults.admit("x", 1) is None


# -- through the server --------------------------------------------------------------------------------------


def test_drop_next_is_a_connection_error_for_the_sdk(
    emu: Emulator, upload: Upload, make_row: MakeRow
) -> None:
    emu.faults.drop_next(1)
    with pytest.raises(ServiceResponseError):
        upload([make_row()])
    upload([make_row()])  # the next request goes through
    stats = emu.stats()
    assert stats.connections_dropped == 1
    assert stats.requests == 2
    assert dict(stats.by_status) == {204: 1}
    assert emu.count(emu.table) == 1


def test_sdk_does_not_retry_a_dropped_post(emu: Emulator, make_row: MakeRow) -> None:
    # azure-core retries POST only on 500/503/504 responses, not on read errors: the row is reported lost.
    emu.faults.drop_next(1)
    with sync_client(emu, retry_total=3) as client, pytest.raises(ServiceResponseError):
        client.upload(emu.rule_id, emu.stream_name, [make_row()], **upload_kwargs(emu))
    assert emu.stats().requests == 1


def test_failure_rate_through_the_sdk(emu: Emulator, upload: Upload, make_row: MakeRow) -> None:
    emu.faults.failure_rate(1.0, 500, seed=1)
    with pytest.raises(HttpResponseError) as info:
        upload([make_row()])
    assert info.value.status_code == 500
    emu.faults.failure_rate(0.0)
    upload([make_row()])


def test_latency_lets_concurrent_requests_overlap(emu: Emulator, make_row: MakeRow) -> None:
    emu.faults.latency(0.3)
    workers = 4
    barrier = threading.Barrier(workers, timeout=10)

    def one() -> None:
        with sync_client(emu) as client:
            barrier.wait()
            client.upload(emu.rule_id, emu.stream_name, [make_row()], **upload_kwargs(emu))

    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(one) for _ in range(workers)]:
            future.result(timeout=30)
    assert emu.wait_until_idle()  # each request stops counting once its answer is sent
    stats = emu.stats()
    assert stats.max_in_flight >= 2  # the sleeps overlapped: one request did not hold up the others
    assert stats.in_flight == 0
    assert emu.count(emu.table) == workers


def test_concurrent_clients(emu: Emulator, make_row: MakeRow) -> None:
    clients, batches, size = 6, 15, 20

    def work(number: int) -> list[str]:
        ids = []
        with sync_client(emu) as client:
            for _ in range(batches):
                rows = [make_row(SessionId=f"client-{number}") for _row in range(size)]
                client.upload(emu.rule_id, emu.stream_name, rows, **upload_kwargs(emu))
                ids += [r["Id"] for r in rows]
        return ids

    with ThreadPoolExecutor(clients) as pool:
        sent = list(pool.map(work, range(clients)))
    assert emu.count(emu.table) == clients * batches * size
    landed = emu.rows(emu.table)
    for number, ids in enumerate(sent):
        # Each client's rows arrive in the order it sent them.
        assert [r["Id"] for r in landed if r["SessionId"] == f"client-{number}"] == ids
    assert dict(emu.stats().by_status) == {204: clients * batches}


def test_wait_for_answers_and_rows(emu: Emulator, upload: Upload, make_row: MakeRow) -> None:
    assert not emu.wait_for_answers(1, timeout=0)
    done = threading.Event()

    def background() -> None:
        upload([make_row(), make_row()])
        done.set()

    thread = threading.Thread(target=background)
    thread.start()
    assert emu.wait_for_rows(2, timeout=10)
    assert emu.wait_for_answers(1, timeout=10)
    assert done.wait(10)
    thread.join()


def test_sink_mode_counts_but_stores_nothing(make_row: MakeRow) -> None:
    with Emulator(sink=True) as emu, sync_client(emu) as client:
        client.upload(emu.rule_id, emu.stream_name, [make_row() for _ in range(10)], enforce_https=False)
        with pytest.raises(HttpResponseError):  # still validated
            client.upload(emu.rule_id, emu.stream_name, [make_row(Severity=True)], enforce_https=False)
        assert emu.sink
        assert emu.count(emu.table) == 10
        assert emu.rows(emu.table) == []
        assert emu.stats().rows_accepted == 10
