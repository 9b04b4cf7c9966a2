"""When a batch is due, and how large a request is (the options every pump and the delivery path read)."""

from __future__ import annotations

__all__ = ["Batching"]

from dataclasses import dataclass


@dataclass(frozen=True)
class Batching:
    """When a batch is due and how much one delivery takes (validated by the forwarder)."""

    #: A batch is due as soon as this many rows wait.
    max_batch_size: int
    #: Seconds from a batch's first row until it is handed over even if not full.
    max_interval: float
    #: Rows one delivery may take when more than a batch is waiting.
    max_request_rows: int
    #: Deliveries at once.
    max_in_flight: int
    #: Rows the buffer holds.
    capacity: int

    @property
    def large(self) -> int:
        """Rows that make a request large enough to go without waiting for the request budget while the
        service has not throttled: a quarter of ``max_request_rows`` (1,250 by default, ~0.7 MB of JSON with
        the hash chain: under 2 requests per MB), and never fewer than ``max_batch_size``."""
        return max(self.max_request_rows // 4, self.max_batch_size)
