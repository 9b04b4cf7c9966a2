"""L4: the forwarders: ``buffering`` (the public façade), ``background`` (its own thread and loop), ``fork``
(the one fork policy), ``lifecycle`` (the lifecycle enum)."""
