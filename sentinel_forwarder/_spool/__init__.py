"""L3: the durable spool: ``store`` (the SQLite files), ``admin`` (status, dead letters, replay, purge),
``pump`` (``SpoolPump``)."""
