"""Credentials that hand out tokens the local emulator accepts (re-exported by ``testing``).

azure-core's ``TokenCredential`` protocol, sync and async, with core dependencies only, so configuration
(``SENTINEL_FORWARDER_CREDENTIAL=emulator``), the tests and users' tests can use them without the
``emulator`` extra, against any Logs Ingestion endpoint that accepts any token.
"""

from __future__ import annotations

__all__ = ["DEFAULT_TOKEN", "AsyncEmulatorCredential", "EmulatorCredential"]

import threading
import time
from types import TracebackType
from typing import Any, TypeVar

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.exceptions import ClientAuthenticationError

#: The token handed out by default. The emulator accepts any non-empty bearer token unless told otherwise.
DEFAULT_TOKEN = "sentinel-forwarder-emulator-token"

_DEFAULT_LIFETIME = 3600


# ------------------------------------------------------------------------------------------------------------
# Credentials for the local emulator
# ------------------------------------------------------------------------------------------------------------


class _CredentialState:
    """What both credential flavours share: the token, its lifetime, the failure switch and a call counter."""

    #: Names the credential in the error of a failed token request.
    _label = "EmulatorCredential"

    def __init__(self, token: str, fail: bool, lifetime: int) -> None:
        if not token:
            raise ValueError("token must be a non-empty string")
        if lifetime <= 0:
            raise ValueError("lifetime must be a positive number of seconds")
        self._token = token
        self._lifetime = lifetime
        self._lock = threading.Lock()
        self._calls = 0
        self.fail = fail

    @property
    def calls(self) -> int:
        """How many tokens were requested so far, failed requests included."""
        with self._lock:
            return self._calls

    def _issue(self, scopes: tuple[str, ...]) -> tuple[str, int]:
        with self._lock:
            self._calls += 1
        if not scopes:
            raise ValueError("at least one scope is required")
        if self.fail:
            raise ClientAuthenticationError(message=f"{self._label}: token request failed (fail=True)")
        expires_on = int(time.time()) + self._lifetime
        return self._token_for(scopes[0], expires_on), expires_on

    def _token_for(self, scope: str, expires_on: int) -> str:
        """The token for *scope*: the fixed one (the emulator's JWT credentials issue claims instead)."""
        return self._token

    def __repr__(self) -> str:
        # Never show the token.
        return f"{type(self).__name__}(fail={self.fail!r}, lifetime={self._lifetime!r})"


class EmulatorCredential(_CredentialState):
    """A synchronous azure-core ``TokenCredential`` that hands out a fixed bearer token, without any network.

    It also implements ``SupportsTokenInfo`` (``get_token_info``), which newer azure-core versions prefer.

    :param token: The bearer token to return; any non-empty string is accepted by the emulator by default.
    :param fail: When true, every token request raises
        :class:`~azure.core.exceptions.ClientAuthenticationError`.
        The :attr:`fail` attribute can be flipped at any time to test token-failure paths.
    :param lifetime: Seconds until a returned token expires (default 3600).
    """

    def __init__(
        self, token: str = DEFAULT_TOKEN, *, fail: bool = False, lifetime: int = _DEFAULT_LIFETIME
    ) -> None:
        super().__init__(token, fail, lifetime)

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """Return the fixed token.

        :param scopes: Requested scopes; at least one is required, their values are not checked.
        :param claims: Ignored.
        :param tenant_id: Ignored.
        :param enable_cae: Ignored.
        :raises ~azure.core.exceptions.ClientAuthenticationError: when :attr:`fail` is true.
        """
        token, expires_on = self._issue(scopes)
        return AccessToken(token, expires_on)

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        """Return the fixed token with its metadata.

        :param scopes: Requested scopes; at least one is required, their values are not checked.
        :param options: Ignored.
        :raises ~azure.core.exceptions.ClientAuthenticationError: when :attr:`fail` is true.
        """
        token, expires_on = self._issue(scopes)
        return AccessTokenInfo(token, expires_on)

    def close(self) -> None:
        """Do nothing: there is nothing to release."""

    def __enter__(self: _Sync) -> _Sync:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncEmulatorCredential(_CredentialState):
    """The asynchronous twin of :class:`EmulatorCredential` (an azure-core ``AsyncTokenCredential``).

    It never blocks and needs no particular event loop, so it works on asyncio and trio.

    :param token: The bearer token to return.
    :param fail: When true, every token request raises
        :class:`~azure.core.exceptions.ClientAuthenticationError`.
    :param lifetime: Seconds until a returned token expires (default 3600).
    """

    def __init__(
        self, token: str = DEFAULT_TOKEN, *, fail: bool = False, lifetime: int = _DEFAULT_LIFETIME
    ) -> None:
        super().__init__(token, fail, lifetime)

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """Return the fixed token.

        :param scopes: Requested scopes; at least one is required, their values are not checked.
        :param claims: Ignored.
        :param tenant_id: Ignored.
        :param enable_cae: Ignored.
        :raises ~azure.core.exceptions.ClientAuthenticationError: when :attr:`fail` is true.
        """
        token, expires_on = self._issue(scopes)
        return AccessToken(token, expires_on)

    async def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        """Return the fixed token with its metadata.

        :param scopes: Requested scopes; at least one is required, their values are not checked.
        :param options: Ignored.
        :raises ~azure.core.exceptions.ClientAuthenticationError: when :attr:`fail` is true.
        """
        token, expires_on = self._issue(scopes)
        return AccessTokenInfo(token, expires_on)

    async def close(self) -> None:
        """Do nothing: there is nothing to release."""

    async def __aenter__(self: _Async) -> _Async:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


_Sync = TypeVar("_Sync", bound=EmulatorCredential)
_Async = TypeVar("_Async", bound=AsyncEmulatorCredential)

# ------------------------------------------------------------------------------------------------------------
# In-memory recording sink: RecordingForwarder, imported above from sentinel_forwarder._sinks.recording
# ------------------------------------------------------------------------------------------------------------
