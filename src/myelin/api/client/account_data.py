"""Account data, room tags and filters: per-user data the client stores on the server."""

from __future__ import annotations

from typing import Any

from myelin.domain import MatrixError, Requester, bad_json, forbidden, not_found
from myelin.http.request import Request
from myelin.http.routing import RouteTable, client_path

routes = RouteTable("client")


async def _own(request: Request) -> Requester:
    requester = await request.requester()
    if request.param("userId") != requester.user_id:
        raise forbidden("Cannot access another user's data")
    return requester


def _room_id(request: Request) -> str:
    room_id = request.param("roomId")
    if not room_id.startswith("!"):
        raise MatrixError(400, "M_INVALID_PARAM", f"{room_id} is not a room ID")
    return room_id


@routes.put(client_path("/user/{userId}/account_data/{type}"), stream="account_data")
async def put_global(request: Request) -> dict[str, Any]:
    requester = await _own(request)
    body = await request.json()
    await request.hs.account_data.put_from_client(requester.user_id, "",
                                                  request.param("type"), body)
    return {}


@routes.get(client_path("/user/{userId}/account_data/{type}"))
async def get_global(request: Request) -> dict[str, Any]:
    requester = await _own(request)
    content = await request.hs.account_data.get(requester.user_id, "", request.param("type"))
    if content is None:
        raise not_found("Account data not found")
    return content


@routes.put(client_path("/user/{userId}/rooms/{roomId}/account_data/{type}"),
             stream="account_data")
async def put_room(request: Request) -> dict[str, Any]:
    requester = await _own(request)
    body = await request.json()
    await request.hs.account_data.put_from_client(requester.user_id, _room_id(request),
                                                  request.param("type"), body)
    return {}


@routes.get(client_path("/user/{userId}/rooms/{roomId}/account_data/{type}"))
async def get_room(request: Request) -> dict[str, Any]:
    requester = await _own(request)
    content = await request.hs.account_data.get(requester.user_id, _room_id(request),
                                                request.param("type"))
    if content is None:
        raise not_found("Account data not found")
    return content


@routes.get(client_path("/user/{userId}/rooms/{roomId}/tags"))
async def get_tags(request: Request) -> dict[str, Any]:
    requester = await _own(request)
    return {"tags": await request.hs.account_data.get_tags(requester.user_id,
                                                           _room_id(request))}


@routes.put(client_path("/user/{userId}/rooms/{roomId}/tags/{tag}"), stream="account_data")
async def put_tag(request: Request) -> dict[str, Any]:
    requester = await _own(request)
    body = await request.json()
    order = body.get("order")
    if order is not None and (isinstance(order, bool) or not isinstance(order, int | float)):
        raise bad_json("order must be a number")
    await request.hs.account_data.set_tag(requester.user_id, _room_id(request),
                                          request.param("tag"), body)
    return {}


@routes.delete(client_path("/user/{userId}/rooms/{roomId}/tags/{tag}"),
                stream="account_data")
async def delete_tag(request: Request) -> dict[str, Any]:
    requester = await _own(request)
    await request.hs.account_data.remove_tag(requester.user_id, _room_id(request),
                                             request.param("tag"))
    return {}


@routes.post(client_path("/user/{userId}/filter"))
async def create_filter(request: Request) -> dict[str, Any]:
    requester = await _own(request)
    body = await request.json()
    return {"filter_id": await request.hs.filters.create(requester.user_id, body)}


@routes.get(client_path("/user/{userId}/filter/{filterId}"))
async def get_filter(request: Request) -> dict[str, Any]:
    requester = await _own(request)
    return await request.hs.filters.get(requester.user_id, request.param("filterId"))
