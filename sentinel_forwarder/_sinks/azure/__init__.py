"""The Azure Monitor Logs Ingestion sink: ``sink`` (``AzureSentinelForwarder``), ``clouds`` (what differs per
cloud), ``retry`` (the azure-core retry policy), ``poison`` (isolating refused rows), ``transport``,
``endpoint`` (parsing and checking the endpoint)."""
