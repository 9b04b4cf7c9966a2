"""The connection options ``send`` and ``check`` share; each falls back to its ``SENTINEL_FORWARDER_*``."""

from __future__ import annotations

__all__ = ["ConfigError", "connection_options"]

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


def connection_options(command: F) -> F:
    """Add ``--endpoint``, ``--rule-id``, ``--stream-name``, ``--credential`` and ``--connection-verify``."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


class ConfigError(click.ClickException):
    """A setting is malformed or missing: exit status 2, like a usage error."""

    exit_code = 2
