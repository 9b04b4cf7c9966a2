"""Options → a forwarder: the Azure sink and the ``BufferingForwarder`` that *settings* describe."""

from __future__ import annotations

__all__ = ["build_forwarder"]

from azure.core.credentials import TokenCredential

from .._evidence import heartbeat as _heartbeat
from .._forwarders.buffering import BufferingForwarder, Transform
from .._model.protocol import AuditForwarder
from .._sinks.azure.sink import AzureSentinelForwarder
from .settings import ForwarderSettings


def build_forwarder(
    settings: ForwarderSettings,
    credential: TokenCredential | None,
    forwarder: AuditForwarder | None,
    transform: Transform | None,
    *,
    name: str = "default",
) -> BufferingForwarder:
    """The forwarder *settings* describe (or *forwarder*, used as it is if it is a BufferingForwarder)."""
    if isinstance(forwarder, BufferingForwarder):
        return forwarder
    sink: AuditForwarder
    if forwarder is not None:
        sink = forwarder
    else:
        assert settings.endpoint is not None and settings.rule_id is not None
        sink = AzureSentinelForwarder(
            settings.endpoint,
            credential,
            rule_id=settings.rule_id,
            stream_name=settings.stream_name,
            cloud=settings.cloud,  # type: ignore[arg-type]
            retry_timeout=settings.retry_timeout,
            max_concurrent_uploads=max(8, settings.max_batches_in_flight),
            connection_verify=settings.connection_verify,
        )
    return BufferingForwarder(
        sink,
        max_batch_size=settings.max_batch_size,
        max_request_rows=settings.max_request_rows,
        max_interval=settings.max_interval,
        capacity=settings.capacity,
        max_batches_in_flight=settings.max_batches_in_flight,
        max_requests_per_minute=settings.max_requests_per_minute,
        drain_timeout=settings.drain_timeout,
        min_severity=settings.min_severity,
        transform=transform,
        spool=settings.spool,
        spool_max_bytes=settings.spool_max_bytes,
        spool_max_age=settings.spool_max_age,
        name=name,
        chain=settings.chain,
        chain_key=settings.chain_key,
        heartbeat_interval=(
            _heartbeat.DEFAULT_HEARTBEAT_INTERVAL
            if settings.heartbeat_interval is None
            else settings.heartbeat_interval
        ),
        application=settings.application,
    )
