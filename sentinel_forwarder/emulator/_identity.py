"""Identity: token audiences per cloud, role assignments on DCRs, and credentials that issue unsigned JWTs.

The real service validates Entra ID tokens: a token for another audience is answered ``401 InvalidAudience``
(azure-docs PR #103840), and an identity without the Monitoring Metrics Publisher role on the DCR ``403
OperationFailed`` (the SDK's TROUBLESHOOTING.md), where a new role assignment can take up to 30 minutes to
propagate. The emulator checks no signature: it reads the claims of a JWT-shaped token and leaves opaque
tokens alone (they carry no audience and no identity).

Pure Python (no starlette).
"""

from __future__ import annotations

__all__ = [
    "CLOUD_AUDIENCES",
    "AsyncEmulatorJwtCredential",
    "EmulatorJwtCredential",
    "RoleAssignment",
    "Roles",
    "audience_matches",
    "check_bearer",
    "token_claims",
    "unsigned_jwt",
]

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._util.credentials import AsyncEmulatorCredential, EmulatorCredential
from .._util.jwt import token_claims

#: The audience a Logs Ingestion token must have, by cloud (scopes ``<audience>/.default``). A trailing ``/``
#: is tolerated. Public: azure-docs issue #111939; US Gov and China: the SDK's documented sovereign scopes.
CLOUD_AUDIENCES: Mapping[str, str] = {
    "public": "https://monitor.azure.com",
    "usgov": "https://monitor.azure.us",
    "china": "https://monitor.azure.cn",
}

#: The role that allows ingestion (assigned on the DCR).
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned_jwt(claims: Mapping[str, Any]) -> str:
    """An unsigned JWT (``alg: none``, empty signature) carrying *claims*, for the emulator only.

    :param claims: JSON-serialisable claims, e.g. ``{"aud": "https://monitor.azure.com", "oid": "..."}``.
    """
    header = _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps(dict(claims), separators=(",", ":")).encode())
    return f"{header}.{payload}."


def audience_matches(audience: object, expected: str) -> bool:
    """Whether a token's ``aud`` claim (a string or a list of strings) is *expected* (a trailing ``/`` is
    tolerated)."""
    values = audience if isinstance(audience, list) else [audience]
    return any(isinstance(v, str) and v.rstrip("/") == expected for v in values)


def check_bearer(
    authorization: str, tokens: frozenset[str] | None, audience: str
) -> tuple[dict[str, Any] | None, tuple[str, str] | None]:
    """Check an ``Authorization`` header: ``(claims, None)`` when it passes (claims ``None`` for an opaque
    token), ``(None, (code, message))`` for a 401.

    :param authorization: The header value.
    :param tokens: The accepted tokens; ``None`` accepts any non-empty token.
    :param audience: What the ``aud`` claim of a JWT-shaped token must be.
    """
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None, ("InvalidAuthenticationToken", "Authorization header with a Bearer token is required.")
    if tokens is not None and token not in tokens:
        # Never log or echo the token.
        return None, ("InvalidAuthenticationToken", "The provided bearer token is not valid.")
    claims = token_claims(token)
    if claims is None:
        return None, None
    expires = claims.get("exp")
    if isinstance(expires, (int, float)) and expires < time.time():
        return None, ("InvalidAuthenticationToken", "The provided bearer token has expired.")
    if "aud" in claims and not audience_matches(claims["aud"], audience):
        # The code is documented for ingestion (azure-docs PR #103840); the message is the emulator's.
        shown = json.dumps(claims["aud"])[:128]
        return None, (
            "InvalidAudience",
            f"The audience {shown} of the token is not valid for this endpoint; request the token for the "
            f"scope '{audience}/.default'.",
        )
    return claims, None


@dataclass(frozen=True)
class RoleAssignment:
    """The Monitoring Metrics Publisher role for one identity, on one DCR (or on every DCR)."""

    #: Entra object id of the identity (the token's ``oid`` claim).
    object_id: str
    #: DCR immutable id; ``None`` for a broader scope (resource group, subscription): every DCR.
    rule_id: str | None
    #: Seconds after assignment before it takes effect (the service: up to 30 minutes).
    propagation_delay: float
    #: When it takes effect, on the :class:`Roles` clock.
    effective_at: float

    def as_dict(self) -> dict[str, Any]:
        """The assignment as JSON-ready data."""
        return {
            "object_id": self.object_id,
            "rule_id": self.rule_id,
            "propagation_delay": self.propagation_delay,
            "role_definition_id": MONITORING_METRICS_PUBLISHER,
        }


class Roles:
    """Role assignments (``emu.roles``). While none is configured, every identity may ingest (as before).

    Once at least one assignment exists, a request is answered ``403 OperationFailed`` unless its token is a
    JWT whose ``oid`` has an assignment on the DCR that has taken effect. Thread-safe.

    :param clock: Monotonic clock in seconds (injectable for tests of the propagation delay).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._assignments: list[RoleAssignment] = []

    def assign(self, object_id: str, rule_id: str | None = None, *, propagation_delay: float = 0.0) -> None:
        """Give *object_id* the Monitoring Metrics Publisher role on a DCR.

        :param object_id: The identity's object id (``oid`` claim).
        :param rule_id: DCR immutable id; ``None`` for every DCR.
        :param propagation_delay: Seconds before the assignment takes effect.
        :raises ValueError: for an empty object id or a negative or non-finite delay.
        """
        if not object_id:
            raise ValueError("object_id must be a non-empty string")
        if not 0 <= propagation_delay < float("inf"):
            raise ValueError(f"propagation_delay must be a non-negative number, not {propagation_delay!r}")
        with self._lock:
            self._assignments.append(
                RoleAssignment(object_id, rule_id, propagation_delay, self._clock() + propagation_delay)
            )

    def clear(self) -> None:
        """Remove every assignment: every identity may ingest again."""
        with self._lock:
            self._assignments.clear()

    @property
    def enforced(self) -> bool:
        """Whether any assignment is configured (then identities without one are refused)."""
        with self._lock:
            return bool(self._assignments)

    def assignments(self) -> tuple[RoleAssignment, ...]:
        """Every configured assignment, effective or not."""
        with self._lock:
            return tuple(self._assignments)

    def allows(self, object_id: str | None, rule_id: str) -> bool:
        """Whether *object_id* may ingest into *rule_id* now (always, while nothing is configured)."""
        with self._lock:
            if not self._assignments:
                return True
            now = self._clock()
            return object_id is not None and any(
                a.object_id == object_id and a.rule_id in (None, rule_id) and a.effective_at <= now
                for a in self._assignments
            )


# -- credentials ---------------------------------------------------------------------------------------------


class _JwtClaims:
    """Makes an emulator credential (``sentinel_forwarder.testing``) issue unsigned JWTs: an audience, an
    object id and a tenant instead of a fixed token. Everything else (fail switch, call counter, lifetime,
    the token methods) is the credential's own."""

    _label: str
    _lifetime: int
    fail: bool

    def __init__(
        self,
        *,
        object_id: str | None = None,
        tenant_id: str = "00000000-0000-0000-0000-000000000000",
        audience: str | None = None,
        lifetime: int = 3600,
        fail: bool = False,
    ) -> None:
        self.object_id = object_id or str(uuid.uuid4())
        self._tenant_id = tenant_id
        self._audience = audience
        super().__init__("unsigned-jwt", fail=fail, lifetime=lifetime)  # type: ignore[call-arg]

    def _token_for(self, scope: str, expires_on: int) -> str:
        now = expires_on - self._lifetime
        claims = {
            "aud": self._audience or scope.removesuffix("/.default"),
            "iss": f"https://sts.windows.net/{self._tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": expires_on,
            "oid": self.object_id,
            "sub": self.object_id,
            "tid": self._tenant_id,
        }
        return unsigned_jwt(claims)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(object_id={self.object_id!r}, fail={self.fail!r})"


class EmulatorJwtCredential(_JwtClaims, EmulatorCredential):
    """A sync azure-core credential that issues unsigned JWTs with an audience and an object id, offline.

    The audience is the requested scope without ``/.default`` (what Entra ID does), unless *audience* is
    given: ``EmulatorJwtCredential(audience="https://management.azure.com")`` reproduces the classic
    wrong-audience mistake (``401 InvalidAudience``). Give the emulator a role assignment for
    :attr:`object_id` to test ``403 OperationFailed`` (see :class:`Roles`).

    :param object_id: The identity's object id (``oid``); default a random UUID.
    :param tenant_id: The ``tid`` claim.
    :param audience: Force this ``aud`` claim instead of deriving it from the scope.
    :param lifetime: Seconds until a token expires (default 3600).
    :param fail: When true, token requests raise :class:`~azure.core.exceptions.ClientAuthenticationError`.
    """

    _label = "EmulatorJwtCredential"


class AsyncEmulatorJwtCredential(_JwtClaims, AsyncEmulatorCredential):
    """The asynchronous twin of :class:`EmulatorJwtCredential` (never blocks; asyncio and trio)."""

    _label = "AsyncEmulatorJwtCredential"
