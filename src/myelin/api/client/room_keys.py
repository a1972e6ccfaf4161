"""Server-side key backups: ``/room_keys/version[/{version}]`` and
``/room_keys/keys[/{roomId}[/{sessionId}]]`` (the spec's fourteen operations)."""

from __future__ import annotations

from typing import Any

from myelin.handlers.room_keys import parse_key, parse_rooms, parse_sessions
from myelin.http.request import Request
from myelin.http.routing import RouteTable, client_path

routes = RouteTable("client")


# -- versions ----------------------------------------------------------------
@routes.post(client_path("/room_keys/version"))
async def create_version(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    return await request.hs.room_keys.create_version(requester.user_id, await request.json())


@routes.get(client_path("/room_keys/version"))
async def current_version(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    return await request.hs.room_keys.get_version(requester.user_id, None)


@routes.get(client_path("/room_keys/version/{version}"))
async def get_version(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    return await request.hs.room_keys.get_version(requester.user_id, request.param("version"))


@routes.put(client_path("/room_keys/version/{version}"))
async def update_version(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    return await request.hs.room_keys.update_version(
        requester.user_id, request.param("version"), await request.json())


@routes.delete(client_path("/room_keys/version/{version}"))
async def delete_version(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    return await request.hs.room_keys.delete_version(requester.user_id,
                                                     request.param("version"))


# -- keys --------------------------------------------------------------------
@routes.put(client_path("/room_keys/keys"))
async def put_all(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    keys = parse_rooms(await request.json())
    return await request.hs.room_keys.upload(requester.user_id, request.query_str("version"),
                                             keys)


@routes.put(client_path("/room_keys/keys/{roomId}"))
async def put_room(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    room_id = request.param("roomId")
    keys = parse_sessions(await request.json(), room_id, "body")
    return await request.hs.room_keys.upload(requester.user_id, request.query_str("version"),
                                             keys)


@routes.put(client_path("/room_keys/keys/{roomId}/{sessionId}"))
async def put_session(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    key = parse_key(await request.json(), "body")
    keys = [(request.param("roomId"), request.param("sessionId"), key)]
    return await request.hs.room_keys.upload(requester.user_id, request.query_str("version"),
                                             keys)


@routes.get(client_path("/room_keys/keys"))
async def get_all(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    return await request.hs.room_keys.get_keys(requester.user_id, request.query_str("version"))


@routes.get(client_path("/room_keys/keys/{roomId}"))
async def get_room(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    return await request.hs.room_keys.get_keys(requester.user_id, request.query_str("version"),
                                               request.param("roomId"))


@routes.get(client_path("/room_keys/keys/{roomId}/{sessionId}"))
async def get_session(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    return await request.hs.room_keys.get_keys(requester.user_id, request.query_str("version"),
                                               request.param("roomId"),
                                               request.param("sessionId"))


@routes.delete(client_path("/room_keys/keys"))
async def delete_all(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    return await request.hs.room_keys.delete_keys(requester.user_id,
                                                  request.query_str("version"))


@routes.delete(client_path("/room_keys/keys/{roomId}"))
async def delete_room(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    return await request.hs.room_keys.delete_keys(requester.user_id,
                                                  request.query_str("version"),
                                                  request.param("roomId"))


@routes.delete(client_path("/room_keys/keys/{roomId}/{sessionId}"))
async def delete_session(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    return await request.hs.room_keys.delete_keys(requester.user_id,
                                                  request.query_str("version"),
                                                  request.param("roomId"),
                                                  request.param("sessionId"))
