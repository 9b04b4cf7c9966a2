"""The ingestion endpoint URL: parsed strictly, so the host checked is the host connected to.

The sink sends a bearer token to the endpoint, and allows ``http://`` only to a loopback host (a local
emulator). A URL that two parsers read differently could pass that check for one host and connect to
another: ``http://evil.example:80\\@127.0.0.1:9`` is ``127.0.0.1`` to :func:`urllib.parse.urlsplit` but
``evil.example`` to urllib3, which requests (and so the Azure SDK's transport) uses to connect.
:func:`parse_endpoint` therefore parses with urllib3, refuses every character and component that the
parsers are known to read differently, and checks that :func:`~urllib.parse.urlsplit` agrees on host and port.
"""

from __future__ import annotations

__all__ = ["Endpoint", "parse_endpoint"]

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

# One DNS label (an IPv4 address matches too): letters, digits, hyphens and underscores; lower case, since
# urllib3 lowercases the host of an http(s) URL.
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.IPv6Address("::1")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A checked ingestion endpoint, from :func:`parse_endpoint`."""

    #: ``scheme://host[:port]``, normalised: lower-case scheme and host, no trailing slash.
    url: str
    #: ``"https"`` or ``"http"``.
    scheme: str
    #: The host as written in the URL, lower case; an IPv6 address keeps its brackets (``"[::1]"``).
    host: str
    #: The port given, or ``None`` for the scheme's default.
    port: int | None
    #: ``True`` for ``localhost``, an address in ``127.0.0.0/8`` or ``[::1]``.
    is_loopback: bool


def parse_endpoint(url: str) -> Endpoint:
    """Parse and check the Logs Ingestion endpoint (a Data Collection Endpoint or a Direct DCR's own).

    Accepted: ``https://host[:port]``, optionally with a trailing ``/``; ``http://`` only for a loopback
    host (``localhost``, ``127.0.0.0/8``, ``[::1]``). The host is parsed as urllib3 (which requests uses to
    connect) parses it, and :func:`urllib.parse.urlsplit` must agree on host and port.

    :param url: the endpoint, e.g. ``https://my-dce-a1b2.westeurope-1.ingest.monitor.azure.com``.
    :raises TypeError: if *url* is not a ``str``.
    :raises ValueError: naming the endpoint and the fault, for: a character other than printable ASCII
        (white space, a control character, non-ASCII), a backslash or a ``%``; user info (``user@``); a
        query or a fragment; a path other than ``/`` (the client appends ``/dataCollectionRules/...`` to the
        endpoint itself); a scheme other than ``https`` or ``http``; a missing or malformed host; an empty
        port or one outside 1 to 65535; ``http://`` to a host that is not loopback; or a URL that urllib3
        and :func:`urllib.parse.urlsplit` read differently.
    """
    if not isinstance(url, str):
        raise TypeError(f"endpoint must be str, not {type(url).__name__}")
    shown = _redact(url)
    for ch in url:
        if not "!" <= ch <= "~":
            what = "white space" if ch.isspace() else "a control character" if ch.isascii() else "non-ASCII"
            raise ValueError(f"endpoint {shown!r} contains {what} ({ch!r}); give the URL without it")
        if ch == "\\":
            raise ValueError(f"endpoint {shown!r} contains a backslash, which URL parsers read differently")
    if "?" in url or "#" in url:
        raise ValueError(
            f"endpoint {shown!r} has a query or fragment ('?' or '#'); give scheme://host[:port]"
        )
    if "@" in url:
        raise ValueError(f"endpoint {shown!r} contains '@': user info (user:password@) is not allowed")
    if "%" in url:  # urllib3 decodes it in the host, urllib.parse does not
        raise ValueError(f"endpoint {shown!r} contains '%': percent-encoding is not allowed")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("https", "http"):
        raise ValueError(f"endpoint {shown!r} is not an https:// (or, for a loopback host, http://) URL")
    authority, slash, path = rest.partition("/")
    if slash and path:
        raise ValueError(
            f"endpoint {shown!r} has a path ({'/' + path!r}); give scheme://host[:port] only: the client "
            "appends /dataCollectionRules/... to it, so a path would send the rows elsewhere"
        )
    _, colon, port_text = (
        authority.rpartition("]")[2] if authority.startswith("[") else authority
    ).rpartition(":")
    if colon and not port_text:
        raise ValueError(f"endpoint {shown!r} has an empty port")
    if colon and port_text.isdigit() and not 1 <= int(port_text) <= 65535:
        raise ValueError(f"endpoint {shown!r}: port {port_text} is outside 1 to 65535")

    try:
        parsed = parse_url(url)
    except LocationParseError as exc:
        raise ValueError(f"endpoint {shown!r} is not a valid URL: {exc}") from None
    host, port = parsed.host, parsed.port
    # Belt and braces: the checks above leave urllib3 nothing of these to find.
    if parsed.scheme != scheme or parsed.auth is not None or parsed.query is not None:
        raise ValueError(f"endpoint {shown!r} is not a plain scheme://host[:port] URL")
    if parsed.fragment is not None or parsed.path not in (None, "", "/"):
        raise ValueError(f"endpoint {shown!r} is not a plain scheme://host[:port] URL")
    if not host:
        raise ValueError(f"endpoint {shown!r} has no host")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"endpoint {shown!r}: port {port} is outside 1 to 65535")

    is_loopback = _check_host(host, shown)

    try:
        split = urlsplit(url)
        split_host, split_port = split.hostname, split.port
    except ValueError as exc:
        raise ValueError(f"endpoint {shown!r} is not a valid URL: {exc}") from None
    bare = host[1:-1] if host.startswith("[") else host
    if (split_host, split_port) != (bare, port) or split.username is not None:
        raise ValueError(
            f"endpoint {shown!r} is ambiguous: urllib3 reads host {host!r} port {port}, urllib.parse reads "
            f"host {split_host!r} port {split_port}"
        )

    if scheme == "http" and not is_loopback:
        raise ValueError(
            f"endpoint {shown!r} uses http://, which would send the access token in clear text; use "
            "https:// (http:// is allowed only for a loopback host: localhost, 127.0.0.0/8 or [::1])"
        )
    normalised = f"{scheme}://{host}" if port is None else f"{scheme}://{host}:{port}"
    return Endpoint(url=normalised, scheme=scheme, host=host, port=port, is_loopback=is_loopback)


def _check_host(host: str, shown: str) -> bool:
    """Check the host's syntax; return whether it is loopback.

    :raises ValueError: for a malformed host, or an IPv6 address with a zone.
    """
    if host.startswith("["):
        try:
            address = ipaddress.IPv6Address(host[1:-1]) if host.endswith("]") and "%" not in host else None
        except ValueError:
            address = None
        if address is None:
            raise ValueError(f"endpoint {shown!r}: {host!r} is not a valid IPv6 address (zones are refused)")
        return address == _LOOPBACK_V6
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"endpoint {shown!r}: host {host!r} is not a valid host name (letters, digits, '-', '_', '.')"
        )
    if host == "localhost":
        return True
    try:
        return ipaddress.IPv4Address(host) in _LOOPBACK_V4
    except ValueError:
        return False


def _redact(url: str) -> str:
    """*url* with the password of any ``user:password@`` replaced by ``***``, for error messages."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, after = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo or "\\" in userinfo:
        return url  # no password to hide (a backslash is shown: it is what the error is about)
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{after}"
