"""The steps of a check before any token: the endpoint's form and cloud, DNS, TCP and TLS (socket and ssl,
so the real cause of a failure shows: refused, unresolvable, which certificate)."""

from __future__ import annotations

__all__ = ["endpoint_step", "network_steps"]

import os
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any

from .._config.settings import ForwarderSettings
from .._sinks.azure.clouds import CLOUD_AUDIENCES, INGEST_SUFFIXES
from .._sinks.azure.endpoint import parse_endpoint
from .._sinks.azure.retry import root_cause
from .report import CheckStep, fail

#: Hosts people give by mistake, and what they are.
_WRONG_HOSTS: Sequence[tuple[str, str]] = (
    (".ods.opinsights.azure.com", "the retired HTTP Data Collector API (see docs/migration.md)"),
    ("management.azure.com", "Azure Resource Manager"),
    ("api.loganalytics.io", "the Logs Query API (for reading, not ingesting)"),
    (".portal.azure.com", "the Azure portal"),
)
_FIND_ENDPOINT = (
    "az monitor data-collection endpoint show --name <dce> --resource-group <group> "
    "--query logsIngestion.endpoint (a Direct DCR: az monitor data-collection rule show --name <dcr> "
    "--resource-group <group> --query endpoints.logsIngestion)"
)


# -- endpoint ----------------------------------------------------------------------------------------------


def endpoint_step(settings: ForwarderSettings) -> CheckStep:
    assert settings.endpoint is not None
    endpoint = parse_endpoint(settings.endpoint)
    host = endpoint.host
    data: dict[str, Any] = {"endpoint": endpoint.url, "host": host, "cloud": settings.cloud}
    if endpoint.is_loopback:
        data["kind"] = "loopback"
        return CheckStep("endpoint", True, f"{endpoint.url}: a loopback host (a local emulator)", data=data)
    for suffix, what in _WRONG_HOSTS:
        if host.endswith(suffix) or host == suffix.lstrip("."):
            raise fail(
                "endpoint",
                "endpoint",
                f"{host} is {what}, not a Logs Ingestion endpoint",
                f"use the data collection endpoint's logs ingestion URL: {_FIND_ENDPOINT}",
                **data,
            )
    cloud = next((c for suffix, c in INGEST_SUFFIXES.items() if host.endswith(suffix)), None)
    if cloud is None:
        data["kind"] = "unknown"
        return CheckStep(
            "endpoint",
            True,
            f"{endpoint.url}: not an Azure Monitor ingestion host name (*.ingest.monitor.azure.com); "
            "going on",
            f"if this is not a proxy or gateway of yours, use {_FIND_ENDPOINT}",
            data=data,
            warning=True,
        )
    # A Direct DCR's endpoint is <dcr>-<4>-<region>.logs.z1.ingest.monitor.azure.com; a DCE's
    # <name>-<4>.<region>-1.ingest.monitor.azure.com.
    kind = "Direct DCR" if ".logs.z" in host else "data collection endpoint"
    data.update(kind=kind, endpoint_cloud=cloud)
    if cloud != settings.cloud:
        raise fail(
            "endpoint",
            "endpoint",
            f"{host} is in the {cloud} cloud, but the cloud setting is {settings.cloud}: tokens would be "
            f"for {CLOUD_AUDIENCES[settings.cloud].removesuffix('/.default')} and refused",
            f"set SENTINEL_FORWARDER_CLOUD={cloud} (or cloud={cloud!r})",
            **data,
        )
    return CheckStep("endpoint", True, f"{endpoint.url}: a {kind}, {cloud} cloud", data=data)


# -- DNS, TCP, TLS -----------------------------------------------------------------------------------------


def network_steps(
    settings: ForwarderSettings,
    timeout: float,
    begin: Callable[[str], None],
    record: Callable[[CheckStep], None],
) -> None:
    assert settings.endpoint is not None
    endpoint = parse_endpoint(settings.endpoint)
    host = endpoint.host.strip("[]")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    proxy = _proxy_for(endpoint.url)
    if proxy is not None:
        detail = f"through the proxy {proxy}: connections are checked by the probe"
        for name in ("dns", "tcp", "tls"):
            record(CheckStep(name, True, detail, data={"proxy": proxy}))
        return
    begin("dns")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        temporary = exc.errno == socket.EAI_AGAIN  # a DNS server that did not answer, not "no such name"
        raise fail(
            "dns",
            "dns",
            f"{host} does not resolve: {exc.strerror or exc}",
            "check the host name against "
            f"{_FIND_ENDPOINT}; behind a private endpoint, check the private DNS zone "
            "privatelink.monitor.azure.com is linked to this network",
            host=host,
            temporary=temporary,
        ) from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    record(CheckStep("dns", True, f"{host} is {', '.join(addresses[:4])}", data={"addresses": addresses}))

    begin("tcp")
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        cause = root_cause(exc, endpoint.url).text
        raise fail(
            "tcp",
            "tcp",
            cause,
            "is the port open from here? check firewalls, network security groups and proxies "
            "(HTTPS_PROXY) between this host and the endpoint",
            host=host,
            port=port,
        ) from None
    with sock:
        peer = sock.getpeername()[0]
        record(
            CheckStep("tcp", True, f"connected to {peer} port {port}", data={"address": peer, "port": port})
        )
        if endpoint.scheme != "https":
            record(CheckStep("tls", True, "http:// to a loopback host: no TLS", data={}))
            return
        begin("tls")
        record(_tls_step(sock, host, settings.connection_verify, timeout))


def _proxy_for(url: str) -> str | None:
    """The proxy requests would use for *url* (``HTTPS_PROXY`` and ``NO_PROXY``), or ``None``."""
    from requests.utils import get_environ_proxies

    proxies = get_environ_proxies(url)
    scheme = url.partition(":")[0]
    proxy = proxies.get(scheme) or proxies.get("all")
    return None if proxy is None else _without_userinfo(proxy)


def _without_userinfo(url: str) -> str:
    """*url* without any user info (a proxy URL may carry a password)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url.rpartition("@")[2]


def _ca_file(verify: bool | str) -> str | None:
    """The CA bundle requests would verify with: the given file, else ``REQUESTS_CA_BUNDLE``, certifi."""
    if isinstance(verify, str):
        return verify
    env = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if env:
        return env
    try:
        import certifi

        return str(certifi.where())
    except ImportError:  # requests needs certifi; without it, the system's CAs
        return None


def _tls_step(sock: socket.socket, host: str, verify: bool | str, timeout: float) -> CheckStep:
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=_ca_file(verify))
    sock.settimeout(timeout)
    try:
        with context.wrap_socket(sock, server_hostname=host) as tls:
            version = tls.version()
            cert = tls.getpeercert() or {}
    except ssl.SSLCertVerificationError as exc:
        raise fail(
            "tls",
            "tls",
            f"certificate verify failed for {host}: {exc.verify_message or exc.reason}",
            "a TLS-inspecting proxy or a private CA? give its CA bundle: "
            "SENTINEL_FORWARDER_CONNECTION_VERIFY=/path/to/ca.pem (for the local emulator: the ca.pem of "
            "'sentinel-forwarder emulator --tls')",
            host=host,
        ) from None
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        hint = "does the endpoint speak HTTPS on this port?"
        raise fail("tls", "tls", f"TLS handshake with {host} failed: {reason}", hint, host=host) from None
    subject = _name(cert.get("subject", ()))
    issuer = _name(cert.get("issuer", ()))
    expires = cert.get("notAfter")
    data = {"version": version, "subject": subject, "issuer": issuer, "expires": expires}
    if verify is False:
        return CheckStep(
            "tls",
            True,
            f"{version}, certificate NOT verified (connection_verify is false)",
            "anyone on the path can read the token and the rows: give a CA file instead",
            data=data,
            warning=True,
        )
    what = f"{version}, certificate for {subject or host} issued by {issuer or '?'}"
    return CheckStep("tls", True, f"{what}, valid until {expires}" if expires else what, data=data)


def _name(rdns: Any) -> str:
    """``CN`` (else the first attribute) of a certificate name from ``getpeercert()``."""
    pairs = [pair for rdn in rdns for pair in rdn]
    for key, value in pairs:
        if key == "commonName":
            return str(value)
    return str(pairs[0][1]) if pairs else ""
