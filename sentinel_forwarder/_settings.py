"""Settings for ``add_sentinel_forwarder``: from arguments, else environment variables, else defaults."""

from __future__ import annotations

__all__ = ["ENV_PREFIX", "ConfigurationError", "ForwarderSettings"]

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from ._azure import CLOUD_AUDIENCES
from ._entry import Severity
from ._schema import AUDIT_TABLE

ENV_PREFIX = "SENTINEL_FORWARDER_"


class ConfigurationError(ValueError):
    """A setting is missing or malformed; the message names it and its environment variable."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a positive number")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a non-negative number")
    return value


def _cloud(text: str) -> str:
    if text not in CLOUD_AUDIENCES:
        raise ValueError(f"must be one of {', '.join(CLOUD_AUDIENCES)}")
    return text


def _severity(text: str) -> Severity:
    return Severity.parse(text)


def _verify(text: str) -> bool | str:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    if not os.path.exists(text):
        raise ValueError(f"CA file {text!r} does not exist")
    return text


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


_PARSERS: Mapping[str, Callable[[str], Any]] = {
    "endpoint": _text,
    "rule_id": _text,
    "stream_name": _text,
    "cloud": _cloud,
    "max_batch_size": _positive_int,
    "max_request_rows": _positive_int,
    "max_interval": _positive_float,
    "capacity": _positive_int,
    "max_batches_in_flight": _positive_int,
    "drain_timeout": _non_negative_float,
    "retry_timeout": _positive_float,
    "min_severity": _severity,
    "connection_verify": _verify,
    "drain_on_sigterm": _flag,
    "spool": _text,
    "spool_max_bytes": _positive_int,
    "spool_max_age": _positive_float,
}


@dataclass(frozen=True)
class ForwarderSettings:
    """Resolved settings. Each field ``x`` may come from the environment variable ``SENTINEL_FORWARDER_X``."""

    endpoint: str | None = None
    rule_id: str | None = None
    stream_name: str = AUDIT_TABLE.stream
    cloud: str = "public"
    max_batch_size: int = 100
    max_request_rows: int | None = None  # None: BufferingForwarder's default (2,500, or max_batch_size)
    max_interval: float = 5.0
    capacity: int = 10_000
    max_batches_in_flight: int = 4
    drain_timeout: float = 20.0
    retry_timeout: float = 20.0
    min_severity: Severity = Severity.NONE
    connection_verify: bool | str = True
    drain_on_sigterm: bool = False
    spool: str | None = None  # a directory: the durable spool is off without one
    spool_max_bytes: int = 1 << 30  # BufferingForwarder's DEFAULT_SPOOL_MAX_BYTES
    spool_max_age: float = 86_400.0  # BufferingForwarder's DEFAULT_SPOOL_MAX_AGE

    @classmethod
    def resolve(
        cls, environ: Mapping[str, str] | None = None, *, require_endpoint: bool = True, **given: Any
    ) -> ForwarderSettings:
        """Take each setting from *given* (where not ``None``), else the environment, else the default.

        :raises ConfigurationError: naming the setting and its environment variable, if one is malformed, or
            if ``endpoint``/``rule_id`` are missing while *require_endpoint*.
        """
        env = os.environ if environ is None else environ
        unknown = set(given) - set(_PARSERS)
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = ENV_PREFIX + f.name.upper()
            raw = given.get(f.name)
            source = f"argument {f.name}="
            if raw is None and var in env:
                raw, source = env[var], f"environment variable {var}"
            if raw is None:
                continue
            try:
                values[f.name] = _PARSERS[f.name](raw) if isinstance(raw, str) else _check(f.name, raw)
            except (ValueError, TypeError) as exc:
                raise ConfigurationError(f"sentinel-forwarder setting {f.name} ({source}): {exc}") from None
        settings = cls(**values)
        if require_endpoint:
            for name in ("endpoint", "rule_id"):
                if getattr(settings, name) is None:
                    raise ConfigurationError(
                        f"sentinel-forwarder setting {name} is missing: pass {name}=... or set "
                        f"{ENV_PREFIX}{name.upper()} (see docs/deploy.md for where to find it)"
                    )
        return settings


def _check(name: str, value: Any) -> Any:
    """Validate a non-string argument by the same rules as its environment variable."""
    if name in ("connection_verify", "drain_on_sigterm") and isinstance(value, bool):
        return value
    if name == "min_severity":
        return Severity.parse(value)
    if isinstance(value, bool):
        raise ValueError(f"{name} must not be a boolean")
    return _PARSERS[name](str(value))
