"""L1: audit rows from logging: ``rows`` (a log record → an audit row), ``handler`` (``AuditLogHandler``).
The public ``sentinel_forwarder.structlog`` and ``sentinel_forwarder.opentelemetry`` build on it."""
