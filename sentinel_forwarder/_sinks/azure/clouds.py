"""The Azure clouds, and what differs between them: token audiences, sign-in authority, host names.

One table per fact, each keyed by :data:`Cloud`; the sink (``_azure``), the settings, the credentials and
``sentinel-forwarder check`` read them here. A new cloud is a new key in each.
"""

from __future__ import annotations

__all__ = ["AUTHORITY_HOSTS", "CLOUD_AUDIENCES", "INGEST_SUFFIXES", "QUERY_AUDIENCES", "Cloud"]

from collections.abc import Mapping
from typing import Literal

Cloud = Literal["public", "usgov", "china"]
#: Token audience (scope) per cloud.
CLOUD_AUDIENCES: Mapping[str, str] = {
    "public": "https://monitor.azure.com/.default",
    "usgov": "https://monitor.azure.us/.default",
    "china": "https://monitor.azure.cn/.default",
}
#: The Microsoft Entra authority host per cloud (azure-identity's ``authority``).
AUTHORITY_HOSTS: Mapping[str, str] = {
    "public": "login.microsoftonline.com",
    "usgov": "login.microsoftonline.us",
    "china": "login.chinacloudapi.cn",
}
#: Host name suffix of the Logs Ingestion endpoints, per cloud.
INGEST_SUFFIXES: Mapping[str, str] = {
    ".ingest.monitor.azure.com": "public",
    ".ingest.monitor.azure.us": "usgov",
    ".ingest.monitor.azure.cn": "china",
}
#: The Logs Query API's endpoint and token audience, per cloud.
QUERY_AUDIENCES: Mapping[str, str] = {
    "public": "https://api.loganalytics.io",
    "usgov": "https://api.loganalytics.us",
    "china": "https://api.loganalytics.azure.cn",
}
