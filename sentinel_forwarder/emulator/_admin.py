"""The admin endpoints (``/_emulator/...``): fault scripting, counters, the request log, recorded losses,
stored rows, role assignments, the DCRs served, and a reset.

They need no token, so they are only served on a loopback-bound emulator, behind
:class:`~._admin_guard.AdminGuard`. Most of them answer what an :class:`~._server.Emulator` method gives
in-process (``stats()``, ``losses()``, ``requests()``, ``rows()``, ``reset()``), for a client in another
process, e.g. of an emulator started from the command line.
"""

from __future__ import annotations

__all__ = ["admin_routes", "apply_fault_spec"]

import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._dcr import DataCollectionRule
from ._faults import Faults
from ._http import error_response
from ._identity import Roles
from ._stats import RequestLog, StatsRecorder
from ._store import RowStore


def admin_routes(
    rules: Mapping[str, DataCollectionRule],
    store: RowStore,
    faults: Faults,
    stats: StatsRecorder,
    log: RequestLog,
    roles: Roles,
) -> list[Route]:
    """The admin routes over the emulator's state (all of them under ``/_emulator/``)."""

    async def set_faults(request: Request) -> Response:
        try:
            spec = json.loads(await request.body())
            if not isinstance(spec, dict):
                raise TypeError("expected a JSON object")
            apply_fault_spec(faults, spec)
        except (ValueError, TypeError, KeyError) as exc:
            return error_response(400, "InvalidFaultSpec", f"Invalid fault specification: {exc}")
        return Response(status_code=204)

    async def get_stats(request: Request) -> Response:
        return JSONResponse(stats.snapshot().as_dict())

    async def reset(request: Request) -> Response:
        faults.reset()
        roles.clear()
        stats.reset()
        store.clear()
        log.clear()
        return Response(status_code=204)

    def _limit(request: Request) -> int | None:
        limit = request.query_params.get("limit")
        return int(limit) if limit and limit.isdigit() else None

    async def get_losses(request: Request) -> Response:
        return JSONResponse(
            {
                "total": store.loss_count(),
                "losses": [loss.as_dict() for loss in store.losses(limit=_limit(request))],
            }
        )

    async def get_requests(request: Request) -> Response:
        return JSONResponse([record.as_dict() for record in log.records()])

    async def get_roles(request: Request) -> Response:
        return JSONResponse([a.as_dict() for a in roles.assignments()])

    async def assign_role(request: Request) -> Response:
        try:
            spec = json.loads(await request.body())
            if not isinstance(spec, dict):
                raise TypeError("expected a JSON object")
            unknown = set(spec) - {"object_id", "rule_id", "propagation_delay"}
            if unknown:
                raise ValueError(f"unknown field(s) {sorted(unknown)}")
            object_id, rule_id = spec.get("object_id"), spec.get("rule_id")
            if not isinstance(object_id, str) or not (rule_id is None or isinstance(rule_id, str)):
                raise TypeError("object_id must be a string and rule_id a string or null")
            delay = spec.get("propagation_delay", 0)
            if isinstance(delay, bool) or not isinstance(delay, (int, float)):
                raise TypeError("propagation_delay must be a number of seconds")
            roles.assign(object_id, rule_id, propagation_delay=float(delay))
        except (ValueError, TypeError) as exc:
            return error_response(400, "InvalidRoleAssignment", f"Invalid role assignment: {exc}")
        return Response(status_code=204)

    async def get_rows(request: Request) -> Response:
        table = request.path_params["table"]
        if not any(table in rule.tables for rule in rules.values()):
            return error_response(404, "NotFound", f"No data collection rule writes to table '{table}'.")
        limit = request.query_params.get("limit")
        return JSONResponse(store.rows(table, limit=int(limit) if limit and limit.isdigit() else None))

    async def info(request: Request) -> Response:
        return JSONResponse(
            {
                "rules": [
                    {
                        "immutable_id": rule.immutable_id,
                        "name": rule.name,
                        "streams": {s.name: list(s.tables) for s in rule.streams.values()},
                    }
                    for rule in rules.values()
                ]
            }
        )

    return [
        Route("/_emulator/faults", set_faults, methods=["POST"]),
        Route("/_emulator/stats", get_stats, methods=["GET"]),
        Route("/_emulator/reset", reset, methods=["POST"]),
        Route("/_emulator/rows/{table}", get_rows, methods=["GET"]),
        Route("/_emulator/info", info, methods=["GET"]),
        Route("/_emulator/losses", get_losses, methods=["GET"]),
        Route("/_emulator/requests", get_requests, methods=["GET"]),
        Route("/_emulator/roles", get_roles, methods=["GET"]),
        Route("/_emulator/roles", assign_role, methods=["POST"]),
    ]


_FAULT_ACTIONS: Mapping[str, Callable[[Faults, dict[str, Any]], None]] = {
    "fail_next": lambda f, a: f.fail_next(
        int(a["n"]),
        int(a["status"]),
        retry_after=a.get("retry_after"),
        code=a.get("code"),
        message=a.get("message"),
    ),
    "failure_rate": lambda f, a: f.failure_rate(
        float(a["rate"]), int(a.get("status", 503)), seed=a.get("seed")
    ),
    "latency": lambda f, a: f.latency(float(a["seconds"])),
    "drop_next": lambda f, a: f.drop_next(int(a["n"])),
    "rate_limit": lambda f, a: f.rate_limit(
        a.get("rule_id"),
        requests_per_minute=a.get("requests_per_minute"),
        bytes_per_minute=a.get("bytes_per_minute"),
    ),
    "reset": lambda f, a: f.reset(),
}


def apply_fault_spec(faults: Faults, spec: Mapping[str, Any]) -> None:
    """Apply an admin fault specification: ``{"<action>": {<keyword arguments>}, ...}`` in the given order.

    Actions are the :class:`Faults` methods ``fail_next``, ``failure_rate``, ``latency``, ``drop_next``,
    ``rate_limit`` and ``reset``; e.g.
    ``{"reset": {}, "fail_next": {"n": 2, "status": 503, "retry_after": 1}}``.

    :raises ValueError: for an unknown action or invalid arguments.
    """
    unknown = set(spec) - set(_FAULT_ACTIONS)
    if unknown:
        raise ValueError(f"unknown action(s) {sorted(unknown)}; expected {sorted(_FAULT_ACTIONS)}")
    for action, arguments in spec.items():
        if arguments is True:
            arguments = {}
        if not isinstance(arguments, dict):
            raise ValueError(f"arguments of {action!r} must be a JSON object")
        _FAULT_ACTIONS[action](faults, arguments)
