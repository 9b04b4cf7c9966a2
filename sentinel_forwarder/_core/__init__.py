"""The engine: the parts every pump shares (buffer, ledger, stages, delivery, scopes, metrics) and the
:class:`~sentinel_forwarder._core.pump.Pump` protocol with the memory pump. See docs/architecture.md."""
