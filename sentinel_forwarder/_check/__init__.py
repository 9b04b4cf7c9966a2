"""L6: ``check`` and ``check_on_start``: ``run`` (the steps and their exit codes), ``network`` (DNS, TCP,
TLS), ``query`` (the Logs Query API read-back), ``report`` (the report and its rendering)."""
