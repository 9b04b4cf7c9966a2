"""What a check found: :class:`CheckStep`, :class:`CheckReport`, and the exit status per failure class."""

from __future__ import annotations

__all__ = ["EXIT_CODES", "CheckReport", "CheckStep", "Stop", "fail"]

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: Exit status per failure class (0: every step passed). 1 is left for an unexpected error.
EXIT_CODES: Mapping[str, int] = MappingProxyType(
    {
        "configuration": 2,  # a setting is missing or malformed
        "endpoint": 3,  # not an ingestion endpoint, or of another cloud than configured
        "dns": 4,  # the host name does not resolve
        "tcp": 5,  # no connection: refused, or no answer
        "tls": 6,  # TLS handshake or certificate
        "token": 7,  # no access token
        "unauthorized": 8,  # the token is refused (401), or its audience or expiry is wrong
        "forbidden": 9,  # 403: the identity lacks the role on the DCR
        "not_found": 10,  # 404: no such DCR or stream
        "service": 11,  # any other answer, or none
        "query": 12,  # --workspace-id: the probe row was not queryable in time, or the query was refused
    }
)


@dataclass(frozen=True)
class CheckStep:
    """One step of a check and what it found."""

    #: ``endpoint``, ``dns``, ``tcp``, ``tls``, ``token``, ``probe``, ``probe_row`` or ``query``.
    name: str
    ok: bool
    #: What was found, one line (a failure: what went wrong).
    detail: str
    #: What to do (failures, and warnings on a passed step).
    hint: str | None = None
    #: The failure class (a key of :data:`EXIT_CODES`), for a failed step.
    failure: str | None = None
    #: Facts for ``--json``: addresses, TLS version, token claims (never the token), status codes.
    data: Mapping[str, Any] = field(default_factory=dict)
    #: Passed, but with something to look at (an unknown host name, TLS verification off).
    warning: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "detail": self.detail,
            "hint": self.hint,
            "failure": self.failure,
            "data": dict(self.data),
            "warning": self.warning,
        }


@dataclass(frozen=True)
class CheckReport:
    """The steps taken, in order; the last one failed unless :attr:`ok`."""

    steps: tuple[CheckStep, ...]

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)

    @property
    def failure(self) -> str | None:
        """The failure class of the step that failed, or ``None``."""
        return next((s.failure for s in self.steps if not s.ok), None)

    @property
    def exit_code(self) -> int:
        failure = self.failure
        return 0 if failure is None else EXIT_CODES[failure]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failure": self.failure,
            "exit_code": self.exit_code,
            "steps": [s.as_dict() for s in self.steps],
        }


class Stop(Exception):
    """A step failed: the check ends with it (raised by the steps, caught by :func:`run_check`)."""

    def __init__(self, step: CheckStep) -> None:
        super().__init__(step.detail)
        self.step = step


def fail(name: str, failure: str, detail: str, hint: str | None = None, **data: Any) -> Stop:
    return Stop(CheckStep(name, False, detail, hint, failure, data))
