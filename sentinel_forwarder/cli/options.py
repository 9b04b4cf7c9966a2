"""The connection options ``send`` and ``check`` share; each falls back to its ``SENTINEL_FORWARDER_*``."""

from __future__ import annotations

__all__ = ["ConfigError", "connection_options"]

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = (
    click.option("--endpoint", default=None, help="[env: SENTINEL_FORWARDER_ENDPOINT]"),
    click.option("--rule-id", default=None, help="DCR immutable id. [env: SENTINEL_FORWARDER_RULE_ID]"),
    click.option("--stream-name", default=None, help="[env: SENTINEL_FORWARDER_STREAM_NAME]"),
    click.option(
        "--credential",
        default=None,
        help="default, managed-identity, workload-identity, environment, azure-cli or emulator. "
        "[env: SENTINEL_FORWARDER_CREDENTIAL]",
    ),
    click.option(
        "--connection-verify",
        default=None,
        help="true, false or a CA bundle path. [env: SENTINEL_FORWARDER_CONNECTION_VERIFY]",
    ),
)


_NAMES = ("endpoint", "rule_id", "stream_name", "credential", "connection_verify")


def connection_options(command: F) -> F:
    """Add ``--endpoint``, ``--rule-id``, ``--stream-name``, ``--credential`` and ``--connection-verify``; the
    command receives them as one ``connection`` dict, ready for ``ForwarderSettings.resolve(None, **...)``."""

    @functools.wraps(command)
    def with_connection(*args: Any, **kwargs: Any) -> Any:
        kwargs["connection"] = {name: kwargs.pop(name) for name in _NAMES}
        return command(*args, **kwargs)

    wrapped: Any = with_connection
    for option in reversed(_OPTIONS):
        wrapped = option(wrapped)
    return wrapped  # type: ignore[no-any-return]


class ConfigError(click.ClickException):
    """A setting is malformed or missing: exit status 2, like a usage error."""

    exit_code = 2
