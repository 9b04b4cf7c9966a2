"""Settings for ``add_sentinel_forwarder``: from arguments, else environment variables, else defaults."""

from __future__ import annotations

__all__ = ["ENV_PREFIX", "ConfigurationError", "ForwarderSettings"]

import difflib
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .._core.throttle import DEFAULT_MAX_REQUESTS_PER_MINUTE
from .._forwarders.buffering import (
    DEFAULT_CAPACITY,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_BATCHES_IN_FLIGHT,
    DEFAULT_MAX_INTERVAL,
    DEFAULT_SPOOL_MAX_AGE,
    DEFAULT_SPOOL_MAX_BYTES,
)
from .._model.entry import Severity
from .._model.schema import AUDIT_TABLE
from .._sinks.azure.clouds import CLOUD_AUDIENCES
from .._sinks.azure.endpoint import parse_endpoint
from .._sinks.azure.sink import DEFAULT_RETRY_TIMEOUT

ENV_PREFIX = "SENTINEL_FORWARDER_"

logger = logging.getLogger("sentinel_forwarder.settings")


class ConfigurationError(ValueError):
    """A setting is missing or malformed; the message names it and its environment variable."""

    __module__ = "sentinel_forwarder"  # shown as sentinel_forwarder.ConfigurationError, where it is public


#: A DCR's immutable id: ``dcr-`` and 32 hexadecimal digits.
_RULE_ID = re.compile(r"dcr-[0-9a-fA-F]{32}")
#: A duration written with a unit (``5s``, ``2 min``, ``500ms``), for a helpful message.
_DURATION_WITH_UNIT = re.compile(
    r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?)\s*", re.IGNORECASE
)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}

#: The methods ``SENTINEL_FORWARDER_CREDENTIAL`` may name (see ``_credentials``).
CREDENTIAL_KINDS = (
    "default",
    "managed-identity",
    "workload-identity",
    "environment",
    "azure-cli",
    "emulator",
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("is not a whole number") from None
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    match = _DURATION_WITH_UNIT.fullmatch(text)
    if match:
        number, unit = match.groups()
        unit = unit.lower()
        seconds = float(number) * _UNIT_SECONDS["ms" if unit == "ms" else unit[0]]
        raise ValueError(
            f"has a unit: durations are plain seconds, write {seconds:g} instead of {text.strip()}"
        )
    raise ValueError("is not a number of seconds")


def _positive_float(text: str) -> float:
    value = _seconds(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a positive number")
    return value


def _non_negative_float(text: str) -> float:
    value = _seconds(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a non-negative number")
    return value


def _cloud(text: str) -> str:
    if text not in CLOUD_AUDIENCES:
        raise ValueError("is not a known cloud")
    return text


def _severity(text: str | int | Severity) -> Severity:
    try:
        return Severity.parse(text)
    except ValueError:
        raise ValueError("is not a severity") from None


def _verify(text: str) -> bool | str:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    if not os.path.exists(text):
        raise ValueError("is neither true/false nor an existing CA file")
    return text


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError("is not true or false")


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError("is empty")
    return text.strip()


def _endpoint(text: str) -> str:
    return parse_endpoint(_text(text)).url


def _rule_id(text: str) -> str:
    value = _text(text)
    if _RULE_ID.fullmatch(value):
        return value.lower()
    if "/" in value:
        problem = "looks like the DCR's resource id"
    elif value.lower().startswith("dcr-"):
        problem = "starts with dcr- but is not followed by 32 hexadecimal digits"
    else:
        problem = "looks like the DCR's name"
    raise ValueError(
        f"{problem}, not its immutable id (find it with `az monitor data-collection rule show --name <dcr> "
        "--resource-group <group> --query immutableId`, or the ruleId output of the deployment)"
    )


#: What ``check_on_start`` may be: no probe; probe and log; probe and raise for errors that cannot heal.
CHECK_MODES = ("off", "log", "raise")


def _check_mode(text: str) -> str:
    value = text.strip().lower()
    if value not in CHECK_MODES:
        raise ValueError("is not a check mode")
    return value


def _credential(text: str) -> str:
    value = text.strip().lower()
    if value not in CREDENTIAL_KINDS:
        raise ValueError("is not a known credential")
    return value


_PARSERS: Mapping[str, Callable[[str], Any]] = {
    "endpoint": _endpoint,
    "rule_id": _rule_id,
    "stream_name": _text,
    "cloud": _cloud,
    "max_batch_size": _positive_int,
    "max_request_rows": _positive_int,
    "max_interval": _positive_float,
    "capacity": _positive_int,
    "max_batches_in_flight": _positive_int,
    "max_requests_per_minute": _non_negative_float,
    "drain_timeout": _non_negative_float,
    "retry_timeout": _positive_float,
    "min_severity": _severity,
    "connection_verify": _verify,
    "drain_on_sigterm": _flag,
    "spool": _text,
    "spool_max_bytes": _positive_int,
    "spool_max_age": _positive_float,
    "credential": _credential,
    "check_on_start": _check_mode,
    "chain": _flag,
    "chain_key": _text,
    "heartbeat_interval": _non_negative_float,
    "application": _text,
}

_SECONDS = "a number of seconds without a unit, e.g. 5 or 0.5"
#: What a valid value looks like, for error messages.
_VALID: Mapping[str, str] = {
    "endpoint": (
        "the https:// URL of a data collection endpoint or a Direct DCR, e.g. "
        "https://my-dce-a1b2.westeurope-1.ingest.monitor.azure.com (http:// only for a loopback host)"
    ),
    "rule_id": (
        "the DCR's immutable id, dcr- and 32 hexadecimal digits, e.g. dcr-0123456789abcdef0123456789abcdef"
    ),
    "stream_name": f"a stream declared in the DCR, e.g. {AUDIT_TABLE.stream}",
    "cloud": ", ".join(CLOUD_AUDIENCES),
    "max_batch_size": "a whole number of rows, at least 1, e.g. 100",
    "max_request_rows": "a whole number of rows, at least 1, e.g. 5000",
    "max_interval": f"{_SECONDS}, more than 0",
    "capacity": "a whole number of rows, at least 1, e.g. 10000",
    "max_batches_in_flight": "a whole number, at least 1, e.g. 4",
    "max_requests_per_minute": "a number of requests a minute, 0 or more (0: no budget), e.g. 30",
    "drain_timeout": f"{_SECONDS}, 0 or more",
    "retry_timeout": f"{_SECONDS}, more than 0",
    "min_severity": "None, Low, Medium, High or Critical (any case), or 0 to 4",
    "connection_verify": "true, false, or the path of a CA bundle file (e.g. the emulator's ca.pem)",
    "drain_on_sigterm": "true or false",
    "credential": ", ".join(CREDENTIAL_KINDS),
    "spool": "the path of a directory (created if missing)",
    "spool_max_bytes": "a whole number of bytes, at least 1, e.g. 1073741824 (1 GiB)",
    "spool_max_age": f"{_SECONDS}, more than 0, e.g. 86400",
    "check_on_start": "off, log or raise",
    "chain": "true or false",
    "chain_key": "a secret text (its UTF-8 bytes are the HMAC key)",
    "heartbeat_interval": f"{_SECONDS}, 0 or more (0: no heartbeats), e.g. 60",
    "application": "the application's name, e.g. chat-api",
}
#: The token ``credential="emulator"`` hands out instead of its fixed one (an emulator with ``--token``).
EMULATOR_TOKEN_VARIABLE = ENV_PREFIX + "EMULATOR_TOKEN"
#: Environment variables with the prefix that are not settings but are read.
_OTHER_VARIABLES: frozenset[str] = frozenset({EMULATOR_TOKEN_VARIABLE})


@dataclass(frozen=True)
class ForwarderSettings:
    """Resolved settings. Each field ``x`` may come from the environment variable ``SENTINEL_FORWARDER_X``."""

    endpoint: str | None = None
    rule_id: str | None = None
    stream_name: str = AUDIT_TABLE.stream
    cloud: str = "public"
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_request_rows: int | None = None  # None: DEFAULT_MAX_REQUEST_ROWS, or max_batch_size if larger
    max_interval: float = DEFAULT_MAX_INTERVAL
    capacity: int = DEFAULT_CAPACITY
    max_batches_in_flight: int = DEFAULT_MAX_BATCHES_IN_FLIGHT
    #: Requests a minute this instance allows itself (0: no budget); see docs/fleet.md.
    max_requests_per_minute: float = DEFAULT_MAX_REQUESTS_PER_MINUTE
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    retry_timeout: float = DEFAULT_RETRY_TIMEOUT
    min_severity: Severity = Severity.NONE
    connection_verify: bool | str = True
    drain_on_sigterm: bool = False
    spool: str | None = None  # a directory: the durable spool is off without one
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    spool_max_age: float = DEFAULT_SPOOL_MAX_AGE
    #: How to get tokens when no credential object is given: one of :data:`CREDENTIAL_KINDS`.
    credential: str = "default"
    #: Probe the service when the forwarder opens: ``off``, ``log`` or ``raise`` (see ``_check``).
    check_on_start: str = "off"
    chain: bool = True  # link the rows sent into a hash chain (docs/tamper-evidence.md)
    chain_key: str | None = field(default=None, repr=False)  # HMAC key: never shown
    #: Seconds; 0: none; None: ``_heartbeat.DEFAULT_HEARTBEAT_INTERVAL``, read when ``_setup`` builds.
    heartbeat_interval: float | None = None
    application: str | None = None  # in heartbeat rows; None: the program's name

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
        _warn_unknown_variables(env, [f.name for f in fields(cls)])
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
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
                raise ConfigurationError(_malformed(f.name, source, raw, exc)) from None
            sources[f.name] = source
        settings = cls(**values)
        if settings.connection_verify is False:
            logger.warning(
                "TLS certificate verification is OFF (%s): anyone on the network path can read the access "
                "token and the audit rows. To trust a local emulator, give its CA file instead "
                "(connection_verify=/path/to/ca.pem)",
                sources["connection_verify"],
            )
        if require_endpoint:
            for name in ("endpoint", "rule_id"):
                if getattr(settings, name) is None:
                    raise ConfigurationError(
                        f"sentinel-forwarder setting {name} is missing: pass {name}=... or set "
                        f"{ENV_PREFIX}{name.upper()} to {_VALID[name]} (see docs/deploy.md for where to "
                        "find it)"
                    )
        return settings


def _malformed(name: str, source: str, raw: Any, exc: Exception) -> str:
    """The message for a malformed setting: which one, where it came from, what is wrong, what is valid."""
    var = ENV_PREFIX + name.upper()
    whose = "the environment variable's" if source.startswith("environment") else "the argument's"
    if name == "endpoint" and str(exc).startswith("endpoint "):
        problem = f"{whose} value is refused: {exc}"  # parse_endpoint quotes the URL, its password redacted
    else:
        shown = repr(raw) if len(repr(raw)) <= 80 else repr(raw)[:77] + "..."
        if name == "chain_key":
            shown = "(not shown)"  # a secret
        problem = f"{whose} value {shown} {exc}"
    valid = _VALID.get(name)
    expected = f"; expected {valid}" if valid else ""
    setting = f"sentinel-forwarder setting {name} (argument {name}=, environment variable {var})"
    return f"{setting}: {problem}{expected}"


def _warn_unknown_variables(env: Mapping[str, str], names: list[str]) -> None:
    """Log a WARNING for each ``SENTINEL_FORWARDER_*`` variable that is no setting, naming a close match."""
    known = sorted({ENV_PREFIX + name.upper() for name in names} | _OTHER_VARIABLES)
    suffixes = {var[len(ENV_PREFIX) :]: var for var in known}  # compared without the shared prefix
    for var in sorted(v for v in env if v.startswith(ENV_PREFIX) and v not in suffixes.values()):
        close = difflib.get_close_matches(var[len(ENV_PREFIX) :], list(suffixes), n=1, cutoff=0.6)
        hint = f"did you mean {suffixes[close[0]]}?" if close else f"known variables: {', '.join(known)}"
        logger.warning("unknown environment variable %s is ignored; %s", var, hint)


def _check(name: str, value: Any) -> Any:
    """Validate a non-string argument by the same rules as its environment variable."""
    if name in ("connection_verify", "drain_on_sigterm", "chain") and isinstance(value, bool):
        return value
    if name == "min_severity":
        return _severity(value)
    if isinstance(value, bool):
        raise ValueError("is a boolean")
    return _PARSERS[name](str(value))
