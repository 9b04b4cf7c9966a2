"""L1: tamper evidence: ``chain`` (linking rows into a hash chain), ``verify`` (the verifier), ``heartbeat``
(``Evidence``: the chain and the heartbeats of one run, given callables, never the forwarder)."""
