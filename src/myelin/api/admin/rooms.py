"""Synapse's room admin API: list/search rooms, a room's details, members,
state and messages, deleting a room (v2: a background job with a status;
v1: at once), blocking, forcing a user in, making a user room admin, and
purging history (handlers/admin/rooms.py). Admins only, served by main; the
deletion and purge jobs run on main too, as tasks of the request's process."""

from __future__ import annotations

from typing import Any

from myelin.api.admin.common import admin, body_of, direction, nonnegative
from myelin.domain import MatrixError, invalid_param, missing_param, not_found
from myelin.handlers.admin.rooms import ROOM_ORDER
from myelin.http.request import Request
from myelin.http.routing import RouteTable, plain_path

routes = RouteTable("client")

V1 = "/_synapse/admin/v1"
V2 = "/_synapse/admin/v2"


def _optional_bool(request: Request, name: str) -> bool | None:
    if request.query_str(name) is None:
        return None
    return request.query_bool(name)


@routes.get(plain_path(V1, "/rooms"), main_only=True)
async def list_rooms(request: Request) -> dict[str, Any]:
    await admin(request)
    start = nonnegative(request, "from", 0)
    limit = nonnegative(request, "limit", 100)
    order_by = request.query_str("order_by", "name") or "name"
    if order_by not in ROOM_ORDER:
        raise invalid_param(f"Unknown value for order_by: {order_by}")
    search_term = request.query_str("search_term")
    if search_term == "":
        raise invalid_param("search_term cannot be an empty string")
    return await request.hs.admin_rooms.list_rooms(
        start=start, limit=limit, order_by=order_by, forwards=direction(request) == "f",
        search_term=search_term, public_rooms=_optional_bool(request, "public_rooms"),
        empty_rooms=_optional_bool(request, "empty_rooms"))


@routes.get(plain_path(V1, "/rooms/{roomId}"), main_only=True)
async def room_details(request: Request) -> dict[str, Any]:
    await admin(request)
    return await request.hs.admin_rooms.require(request.param("roomId"))


@routes.get(plain_path(V1, "/rooms/{roomId}/members"), main_only=True)
async def room_members(request: Request) -> dict[str, Any]:
    await admin(request)
    return await request.hs.admin_rooms.members(request.param("roomId"))


@routes.get(plain_path(V1, "/rooms/{roomId}/state"), main_only=True)
async def room_state(request: Request) -> dict[str, Any]:
    await admin(request)
    return await request.hs.admin_rooms.state(request.param("roomId"))


@routes.get(plain_path(V1, "/rooms/{roomId}/messages"), main_only=True)
async def room_messages(request: Request) -> dict[str, Any]:
    await admin(request)
    limit = request.query_int("limit", 10, minimum=0, maximum=1000)
    assert limit is not None
    return await request.hs.admin_rooms.messages(
        request.param("roomId"), from_token=request.query_str("from"),
        direction=direction(request, "b"), limit=limit)


@routes.delete(plain_path(V2, "/rooms/{roomId}"), main_only=True)
async def delete_room_v2(request: Request) -> dict[str, Any]:
    requester = await admin(request)
    body = await body_of(request, allow_empty=True)
    delete_id = await request.hs.admin_rooms.start_delete(requester, request.param("roomId"),
                                                          body)
    return {"delete_id": delete_id}


@routes.delete(plain_path(V1, "/rooms/{roomId}"), main_only=True)
async def delete_room_v1(request: Request) -> dict[str, Any]:
    requester = await admin(request)
    body = await body_of(request, allow_empty=True)
    rooms = request.hs.admin_rooms
    rooms._check_delete_body(body)
    return await rooms.delete_room(requester, request.param("roomId"), body)


@routes.get(plain_path(V2, "/rooms/{roomId}/delete_status"), main_only=True)
async def room_delete_status(request: Request) -> dict[str, Any]:
    await admin(request)
    results = await request.hs.admin_rooms.delete_status(room_id=request.param("roomId"))
    if not results:
        raise not_found(f"No delete task for room_id '{request.param('roomId')}' found")
    return {"results": results}


@routes.get(plain_path(V2, "/rooms/delete_status/{deleteId}"), main_only=True)
async def delete_status(request: Request) -> dict[str, Any]:
    await admin(request)
    results = await request.hs.admin_rooms.delete_status(delete_id=request.param("deleteId"))
    if not results:
        raise not_found(f"delete id '{request.param('deleteId')}' not found")
    return results[0]


@routes.get(plain_path(V1, "/rooms/{roomId}/block"), main_only=True)
async def get_block(request: Request) -> dict[str, Any]:
    await admin(request)
    return await request.hs.admin_rooms.get_block(request.param("roomId"))


@routes.put(plain_path(V1, "/rooms/{roomId}/block"), main_only=True)
async def put_block(request: Request) -> dict[str, Any]:
    requester = await admin(request)
    body = await body_of(request)
    block = body.get("block")
    if not isinstance(block, bool):
        raise MatrixError(400, "M_BAD_JSON", "Param 'block' must be a boolean.")
    room_id = request.param("roomId")
    if not room_id.startswith("!"):
        raise invalid_param(f"{room_id} is not a legal room ID")
    await request.hs.stores.admin.set_block(room_id, requester.user_id, block)
    return {"block": block}


@routes.post(plain_path(V1, "/rooms/{roomId}/make_room_admin"), main_only=True)
async def make_room_admin(request: Request) -> dict[str, Any]:
    requester = await admin(request)
    body = await body_of(request, allow_empty=True)
    user_id = body.get("user_id", requester.user_id)
    if not isinstance(user_id, str):
        raise MatrixError(400, "M_BAD_JSON", "user_id must be a string")
    room_id = await request.hs.membership.resolve_room(request.param("roomId"))
    await request.hs.admin_rooms.make_room_admin(requester, room_id, user_id)
    return {}


@routes.post(plain_path(V1, "/join/{roomIdOrAlias}"), main_only=True)
async def join(request: Request) -> dict[str, Any]:
    requester = await admin(request)
    body = await body_of(request)
    user_id = body.get("user_id")
    if not isinstance(user_id, str):
        raise missing_param("Missing param 'user_id'")
    room_id = await request.hs.admin_rooms.force_join(requester,
                                                      request.param("roomIdOrAlias"), user_id)
    return {"room_id": room_id}


@routes.post(plain_path(V1, "/purge_history/{roomId}"),
             plain_path(V1, "/purge_history/{roomId}/{eventId}"), main_only=True)
async def purge_history(request: Request) -> dict[str, Any]:
    await admin(request)
    body = await body_of(request, allow_empty=True)
    purge_id = await request.hs.admin_rooms.start_purge(
        request.param("roomId"), request.params.get("eventId"), body)
    return {"purge_id": purge_id}


@routes.get(plain_path(V1, "/purge_history_status/{purgeId}"), main_only=True)
async def purge_status(request: Request) -> dict[str, Any]:
    await admin(request)
    return await request.hs.admin_rooms.purge_status(request.param("purgeId"))


@routes.get(plain_path(V1, "/rooms/{roomId}/forward_extremities"), main_only=True)
async def forward_extremities(request: Request) -> dict[str, Any]:
    await admin(request)
    hs = request.hs
    room_id = await hs.membership.resolve_room(request.param("roomId"))
    await hs.admin_rooms.require(room_id)
    ids = await hs.stores.events.get_forward_extremities(room_id)
    events = await hs.stores.events.get_events(ids)
    results = [{"event_id": e.event.event_id, "state_group": e.state_group,
                "depth": e.event.depth, "received_ts": e.event.origin_server_ts}
               for e in events.values()]
    return {"count": len(results), "results": results}
