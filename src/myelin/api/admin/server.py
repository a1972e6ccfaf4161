"""Synapse's server-level admin API: ``v1/server_version`` and the
background-updates controls (``v1/background_updates/enabled|status``).
Myelin's schema changes are plain migrations applied at start, so there
are never background updates running; pausing them is remembered and
reported, as Synapse does."""

from __future__ import annotations

from typing import Any

from myelin import __version__
from myelin.api.admin.common import admin, body_of
from myelin.domain import MatrixError
from myelin.http.request import Request
from myelin.http.routing import RouteTable, plain_path

routes = RouteTable("client")

V1 = "/_synapse/admin/v1"
_state = {"enabled": True}


@routes.get(plain_path(V1, "/server_version"))
async def server_version(request: Request) -> dict[str, Any]:
    # Public in Synapse too: tools probe it before logging in.
    return {"server_version": __version__}


@routes.get(plain_path(V1, "/background_updates/enabled"), main_only=True)
async def get_enabled(request: Request) -> dict[str, Any]:
    await admin(request)
    return {"enabled": _state["enabled"]}


@routes.post(plain_path(V1, "/background_updates/enabled"), main_only=True)
async def set_enabled(request: Request) -> dict[str, Any]:
    await admin(request)
    body = await body_of(request)
    enabled = body.get("enabled")
    if not isinstance(enabled, bool):
        raise MatrixError(400, "M_MISSING_PARAM", "Missing key 'enabled'")
    _state["enabled"] = enabled
    return {"enabled": enabled}


@routes.get(plain_path(V1, "/background_updates/status"), main_only=True)
async def status(request: Request) -> dict[str, Any]:
    await admin(request)
    return {"enabled": _state["enabled"], "current_updates": {}}


@routes.get(plain_path(V1, "/federation/destinations"), main_only=True)
async def destinations(request: Request) -> dict[str, Any]:
    # No federation sender yet, so no destination has ever been tried.
    await admin(request)
    return {"destinations": [], "total": 0}
