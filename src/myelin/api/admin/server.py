"""Synapse's server-level admin API: ``v1/server_version``, the
background-updates controls (``v1/background_updates/enabled|status``) and
the federation destinations (``v1/federation/destinations``: each remote
server's backoff and catch-up, ``reset_connection`` to retry at once).
Myelin's schema changes are plain migrations applied at start, so there
are never background updates running; pausing them is remembered and
reported, as Synapse does."""

from __future__ import annotations

from typing import Any

from myelin import __version__
from myelin.api.admin.common import admin, body_of, direction, nonnegative
from myelin.domain import MatrixError, invalid_param, not_found
from myelin.http.request import Request
from myelin.http.routing import RouteTable, plain_path
from myelin.storage.stores.federation_sender import DestinationState

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


# -- federation destinations (the federation sender's table) ---------------------

@routes.get(plain_path(V1, "/federation/destinations"), main_only=True)
async def destinations(request: Request) -> dict[str, Any]:
    await admin(request)
    start = nonnegative(request, "from", 0)
    limit = nonnegative(request, "limit", 100)
    order_by = request.query_str("order_by", "destination") or "destination"
    if order_by not in DESTINATION_ORDERS:
        raise invalid_param("Unknown value for order_by: " + order_by)
    rows, total = await request.hs.stores.federation_sender.list_destinations(
        limit, start, order_by=order_by, backwards=direction(request) == "b",
        search=request.query_str("destination", None))
    answer: dict[str, Any] = {"destinations": [_destination(d) for d in rows],
                              "total": total}
    if start + len(rows) < total:
        answer["next_token"] = str(start + len(rows))
    return answer


@routes.get(plain_path(V1, "/federation/destinations/{destination}"), main_only=True)
async def destination(request: Request) -> dict[str, Any]:
    await admin(request)
    state = await request.hs.stores.federation_sender.get_destination(
        request.param("destination"))
    if state is None:
        raise not_found("Unknown destination")
    return _destination(state)


@routes.get(plain_path(V1, "/federation/destinations/{destination}/rooms"), main_only=True)
async def destination_rooms(request: Request) -> dict[str, Any]:
    await admin(request)
    name = request.param("destination")
    store = request.hs.stores.federation_sender
    if await store.get_destination(name) is None:
        raise not_found("Unknown destination")
    start = nonnegative(request, "from", 0)
    limit = nonnegative(request, "limit", 100)
    rooms, total = await store.destination_rooms(name, limit, start,
                                                 backwards=direction(request) == "b")
    answer: dict[str, Any] = {"rooms": [{"room_id": r, "stream_ordering": o}
                                        for r, o in rooms], "total": total}
    if start + len(rooms) < total:
        answer["next_token"] = str(start + len(rooms))
    return answer


@routes.post(plain_path(V1, "/federation/destinations/{destination}/reset_connection"),
             main_only=True)
async def reset_connection(request: Request) -> dict[str, Any]:
    await admin(request)
    name = request.param("destination")
    state = await request.hs.stores.federation_sender.get_destination(name)
    if state is None:
        raise not_found("Unknown destination")
    if not state.retry_last_ts and not state.retry_interval:
        raise MatrixError(400, "M_UNKNOWN",
                          "The retry timing does not need to be reset for this destination.")
    await request.hs.federation_sender.reset_connection(name)
    return {}


DESTINATION_ORDERS = ("destination", "retry_last_ts", "retry_interval", "failure_ts",
                      "last_successful_stream_ordering")


def _destination(state: DestinationState) -> dict[str, Any]:
    return {"destination": state.destination, "retry_last_ts": state.retry_last_ts,
            "retry_interval": state.retry_interval, "failure_ts": state.failure_ts,
            "last_successful_stream_ordering": state.last_successful_stream_ordering}
