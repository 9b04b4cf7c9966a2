"""Tell the test when each worker is ready (an event to wait on, not a sleep)."""


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    print(f"WORKER READY {worker.pid}", flush=True)
