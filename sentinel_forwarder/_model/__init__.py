"""L0: the data model: ``entry`` (``AuditEntry``), ``schema`` (tables and columns), ``protocol``
(``SendResult``, the sink protocol, drop reasons), ``snapshots`` (statistics and health), ``wire`` (encoding
rows for the wire)."""
