"""L2: sinks: ``azure/`` (the Logs Ingestion sink) and ``recording`` (an in-memory sink for tests)."""
