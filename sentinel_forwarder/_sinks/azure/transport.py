"""The HTTP transport under the SDK's pipeline: azure-core's ``RequestsTransport`` on a session set up once.

requests consults the environment on every request when a session trusts it (``trust_env``): proxy variables
for the URL, ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, and ``~/.netrc``. That cost ≈ 15 % of an upload's
client CPU (docs/benchmarks.md). The sink posts to one endpoint, so the proxies and the CA bundle are
resolved here, once, as requests would resolve them, and the session stops looking. ``~/.netrc`` is not
read: its basic credentials would replace the bearer token.
"""

from __future__ import annotations

__all__ = ["ingestion_transport"]

import os
from typing import Any

from azure.core.pipeline.transport import RequestsTransport


def ingestion_transport(
    endpoint: str,
    *,
    pool_size: int,
    connection_timeout: float,
    read_timeout: float,
    verify: bool | str,
) -> RequestsTransport:
    """A transport for posts to *endpoint*: *pool_size* pooled connections, proxies and CA bundle from the
    environment read now, no look-ups per request."""
    import requests

    session = requests.Session()
    session.proxies.update(requests.utils.get_environ_proxies(endpoint))
    if verify is True:
        verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    session.trust_env = False
    adapter: Any = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return RequestsTransport(
        session=session,
        session_owner=True,
        connection_timeout=connection_timeout,
        read_timeout=read_timeout,
        connection_verify=verify,
        use_env_settings=False,
    )
