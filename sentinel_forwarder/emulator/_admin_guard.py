"""The guard in front of the ``/_emulator/...`` admin endpoints, against CSRF and DNS rebinding.

A request on an admin path whose ``Host`` header does not name loopback gets 403 ``HostNotAllowed``; an
admin write without ``Content-Type: application/json`` gets 415 ``UnsupportedMediaType``. See
:class:`AdminGuard` for why these two checks are enough.
"""

from __future__ import annotations

__all__ = ["AdminGuard"]

import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send

from ._http import error_response

# Where the admin endpoints are.
_ADMIN_PREFIX = "/_emulator"
# Methods that change nothing; every other method on an admin path must send Content-Type: application/json.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A refused admin request's body is read (and discarded) up to this many bytes so that the client gets to read
# the answer; beyond it the connection is closed after answering.
_ADMIN_DRAIN_LIMIT = 64 * 1024


def _parse_port(port: str) -> bool:
    return 1 <= len(port) <= 5 and port.isascii() and port.isdigit() and int(port) <= 65535


def _is_loopback_host_header(value: str) -> bool:
    """Whether a ``Host`` header value names the loopback interface, with or without a ``:port``.

    Accepted: ``localhost`` (any case), an IPv4 address in ``127.0.0.0/8`` (dotted quad only), ``[::1]``, and
    the bare ``::1`` (not valid RFC 3986 syntax, but what some clients send). Anything else is refused: other
    names (``localhost.evil.example``, ``127.0.0.1.evil.example``), userinfo (``user@localhost``), zone ids,
    a trailing dot, an empty or non-numeric port, whitespace or trailing junk.

    :param value: The header value, as sent.
    """
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        return False
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return False
        name, rest = value[1:end], value[end + 1 :]
        if rest and not (rest.startswith(":") and _parse_port(rest[1:])):
            return False
        return _is_loopback_ipv6(name)
    if value.count(":") > 1:  # a bare IPv6 literal, which cannot carry a port
        return _is_loopback_ipv6(value)
    name, colon, port = value.partition(":")
    if colon and not _parse_port(port):
        return False
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.IPv4Address(name).is_loopback
    except ValueError:
        return False


def _is_loopback_ipv6(name: str) -> bool:
    if "%" in name:  # zone id
        return False
    try:
        return ipaddress.IPv6Address(name) == ipaddress.IPv6Address("::1")
    except ValueError:
        return False


def _is_json_media_type(value: str) -> bool:
    return value.split(";", 1)[0].strip().lower() == "application/json"


async def _drain(receive: Receive, limit: int) -> bool:
    """Read and discard the request body, at most about *limit* bytes: whether it was read completely."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
        if size > limit:
            return False


class AdminGuard:
    """ASGI layer in front of the ``/_emulator/...`` admin endpoints, against CSRF and DNS rebinding.

    The admin endpoints need no token, so a web page the developer happens to visit must not reach them:

    * every admin request must carry exactly one ``Host`` header naming loopback (see
      :func:`_is_loopback_host_header`): a DNS-rebound page's requests carry the attacker's host name. The
      admin endpoints are only served on a loopback-bound emulator, so loopback names are the only legitimate
      ones (whatever loopback name or address it was bound to is among them);
    * every admin write (any method but GET, HEAD, OPTIONS) must have ``Content-Type: application/json``: a
      page cannot send that cross-site without a CORS preflight, which the emulator never grants, whereas a
      ``text/plain`` or form POST is a "simple" request that the browser sends without asking.

    The ingestion path is left alone: the Azure SDK (and a remote-bound emulator's clients) send their own
    ``Host``, and the ingestion endpoint requires a bearer token and JSON anyway.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == _ADMIN_PREFIX or path.startswith(_ADMIN_PREFIX + "/")):
            await self._app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        hosts = [v.decode("latin-1") for k, v in headers if k == b"host"]
        if len(hosts) != 1 or not _is_loopback_host_header(hosts[0]):
            shown = "(missing)" if not hosts else hosts[0][:64] if len(hosts) == 1 else "(more than one)"
            # 403 rather than 421 Misdirected Request: 421 invites clients to retry the request on another
            # connection (RFC 9110, 15.5.20), even a POST, and it is meant for a server that is not configured
            # for the name; here the name is deliberately refused, which is what 403 says.
            await self._refuse(
                scope,
                receive,
                send,
                403,
                "HostNotAllowed",
                f"The admin endpoints only answer requests whose Host header names loopback (localhost, "
                f"127.0.0.1, [::1]), not {shown!r}.",
            )
            return
        if scope["method"] not in _SAFE_METHODS:
            types = [v.decode("latin-1") for k, v in headers if k == b"content-type"]
            if len(types) != 1 or not _is_json_media_type(types[0]):
                shown = "(missing)" if not types else types[0][:64] if len(types) == 1 else "(more than one)"
                await self._refuse(
                    scope,
                    receive,
                    send,
                    415,
                    "UnsupportedMediaType",
                    f"Admin requests that change state must have Content-Type: application/json (even "
                    f"without a body), not {shown!r}.",
                )
                return
        await self._app(scope, receive, send)

    @staticmethod
    async def _refuse(
        scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str
    ) -> None:
        complete = await _drain(receive, _ADMIN_DRAIN_LIMIT)
        await error_response(status, code, message, close=not complete)(scope, receive, send)
