"""Third-party networks (``/thirdparty/...``) and the endpoints only application
services may call (``/directory/list/appservice/...``, ``/appservice/{id}/ping``).

Answers come from ``hs.appservices`` (handlers/appservices.py, the seam in
handlers/thirdparty.py): with no application services there are no
protocols, lookups find nothing, and the appservice-only endpoints refuse
every caller with M_FORBIDDEN.
"""

from __future__ import annotations

from typing import Any

from myelin.domain import MatrixError, bad_json, forbidden, invalid_param, missing_param, not_found
from myelin.http.request import Request
from myelin.http.routing import RouteTable, client_path, client_v1_path

routes = RouteTable("client")

_RESERVED = frozenset({"access_token"})


def _fields(request: Request) -> dict[str, str]:
    """The protocol's query fields: every query parameter but the access token."""
    return {k: v for k, v in request.query.items() if k not in _RESERVED}


@routes.get(client_path("/thirdparty/protocols"))
async def protocols(request: Request) -> dict[str, Any]:
    await request.requester()
    return await request.hs.appservices.protocols()


@routes.get(client_path("/thirdparty/protocol/{protocol}"))
async def protocol(request: Request) -> dict[str, Any]:
    await request.requester()
    found = await request.hs.appservices.protocol(request.param("protocol"))
    if found is None:
        raise not_found("Unknown protocol")
    return found


@routes.get(client_path("/thirdparty/location/{protocol}"))
async def location_by_protocol(request: Request) -> list[dict[str, Any]]:
    await request.requester()
    name = request.param("protocol")
    if not request.hs.appservices.bridges(name):
        raise not_found("Unknown protocol")
    found = await request.hs.appservices.query_locations(name, _fields(request))
    if not found:
        raise not_found("No portal rooms were found")
    return found


@routes.get(client_path("/thirdparty/user/{protocol}"))
async def user_by_protocol(request: Request) -> list[dict[str, Any]]:
    await request.requester()
    name = request.param("protocol")
    if not request.hs.appservices.bridges(name):
        raise not_found("Unknown protocol")
    found = await request.hs.appservices.query_users(name, _fields(request))
    if not found:
        raise not_found("No users were found")
    return found


@routes.get(client_path("/thirdparty/location"))
async def location_by_alias(request: Request) -> list[dict[str, Any]]:
    await request.requester()
    alias = request.query_str("alias")
    if not alias:
        raise missing_param("Missing alias")
    if not alias.startswith("#") or ":" not in alias:
        raise invalid_param(f"{alias!r} is not a room alias")
    found = await request.hs.appservices.locations_for_alias(alias)
    if not found:
        raise not_found("No third-party locations for this alias")
    return found


@routes.get(client_path("/thirdparty/user"))
async def user_by_user_id(request: Request) -> list[dict[str, Any]]:
    await request.requester()
    user_id = request.query_str("userid")
    if not user_id:
        raise missing_param("Missing userid")
    if not user_id.startswith("@") or ":" not in user_id:
        raise invalid_param(f"{user_id!r} is not a user ID")
    found = await request.hs.appservices.users_for_user_id(user_id)
    if not found:
        raise not_found("No third-party users for this user ID")
    return found


# -- application services only -----------------------------------------------
@routes.put(client_path("/directory/list/appservice/{networkId}/{roomId}"))
async def appservice_room_list(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    appservice_id = request.hs.appservices.appservice_of(requester)
    if appservice_id is None:
        raise forbidden("Only application services can publish rooms to a network's directory")
    body = await request.json()
    visibility = body.get("visibility")
    if visibility not in ("public", "private"):
        raise bad_json("visibility must be 'public' or 'private'")
    await request.hs.appservices.set_network_room_visibility(
        appservice_id, request.param("networkId"), request.param("roomId"), visibility)
    return {}


@routes.delete(client_path("/directory/list/appservice/{networkId}/{roomId}"))
async def appservice_room_unlist(request: Request) -> dict[str, Any]:
    """Synapse's way to take a room off a network's list (as PUT "private")."""
    requester = await request.requester()
    appservice_id = request.hs.appservices.appservice_of(requester)
    if appservice_id is None:
        raise forbidden("Only application services can publish rooms to a network's directory")
    await request.hs.appservices.set_network_room_visibility(
        appservice_id, request.param("networkId"), request.param("roomId"), "private")
    return {}


@routes.post(client_v1_path("/appservice/{appserviceId}/ping"))
async def appservice_ping(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    appservice_id = request.hs.appservices.appservice_of(requester)
    if appservice_id is None or appservice_id != request.param("appserviceId"):
        raise forbidden("Provided access token is not the appservice's as_token")
    body = await request.json(allow_empty=True)
    transaction_id = body.get("transaction_id")
    if transaction_id is not None and not isinstance(transaction_id, str):
        raise MatrixError(400, "M_BAD_JSON", "transaction_id must be a string")
    duration = await request.hs.appservices.ping(appservice_id, transaction_id)
    return {"duration_ms": duration}
