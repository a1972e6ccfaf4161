"""Room directory servlets: aliases, room visibility, and ``/publicRooms``."""

from __future__ import annotations

from typing import Any

from myelin.domain import MatrixError, bad_json, invalid_param
from myelin.handlers.directory import PublicRoomsQuery
from myelin.http.request import Request
from myelin.http.routing import LEGACY, RouteTable, client_path

routes = RouteTable("client")



@routes.put(client_path("/directory/room/{roomAlias}", LEGACY))
async def put_alias(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    body = await request.json()
    room_id = body.get("room_id")
    if not isinstance(room_id, str):
        raise bad_json("room_id must be a string") if "room_id" in body else \
            MatrixError(400, "M_MISSING_PARAM", "room_id is required")
    await request.hs.directory.create_alias(requester, request.param("roomAlias"), room_id)
    return {}


@routes.get(client_path("/directory/room/{roomAlias}", LEGACY))
async def get_alias(request: Request) -> dict[str, Any]:
    return await request.hs.directory.resolve_alias(request.param("roomAlias"))


@routes.delete(client_path("/directory/room/{roomAlias}", LEGACY))
async def delete_alias(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    await request.hs.directory.delete_alias(requester, request.param("roomAlias"))
    return {}


@routes.get(client_path("/rooms/{roomId}/aliases", LEGACY))
async def room_aliases(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    aliases = await request.hs.directory.get_local_aliases(requester, request.param("roomId"))
    return {"aliases": aliases}


@routes.get(client_path("/directory/list/room/{roomId}", LEGACY))
async def get_visibility(request: Request) -> dict[str, Any]:
    visibility = await request.hs.directory.get_visibility(request.param("roomId"))
    return {"visibility": visibility}


@routes.put(client_path("/directory/list/room/{roomId}", LEGACY))
async def put_visibility(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    body = await request.json(allow_empty=True)
    visibility = body.get("visibility", "public")
    if not isinstance(visibility, str):
        raise invalid_param("visibility must be 'public' or 'private'")
    await request.hs.directory.set_visibility(requester, request.param("roomId"), visibility)
    return {}


def _remote_server(request: Request, server: str | None) -> str | None:
    """The server whose list is wanted, when it is not this one."""
    if server is None or server == "" or server == request.hs.server_name:
        return None
    return server


@routes.get(client_path("/publicRooms", LEGACY))
async def public_rooms(request: Request) -> dict[str, Any]:
    limit = request.query_int("limit")
    since = request.query_str("since") or None
    remote = _remote_server(request, request.query_str("server"))
    if remote is not None:
        return await request.hs.federation_queries.public_rooms(
            remote, limit=limit, since=since, search_filter=None,
            include_all_networks=False, third_party_instance_id=None)
    query = PublicRoomsQuery(limit=limit, since=since)
    return await request.hs.directory.public_rooms(query)


def parse_public_rooms_body(body: dict[str, Any]) -> PublicRoomsQuery:
    """The ``POST /publicRooms`` body (client and federation alike)."""
    limit = body.get("limit")
    since = body.get("since")
    filt = body.get("filter")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
        raise bad_json("limit must be an integer")
    if since is not None and not isinstance(since, str):
        raise bad_json("since must be a string")
    if filt is None:
        filt = {}
    if not isinstance(filt, dict):
        raise bad_json("filter must be an object")
    term = filt.get("generic_search_term")
    if term is not None and not isinstance(term, str):
        raise bad_json("generic_search_term must be a string")
    room_types = filt.get("room_types")
    if room_types is not None and (not isinstance(room_types, list) or not all(
            t is None or isinstance(t, str) for t in room_types)):
        raise bad_json("room_types must be a list of strings or nulls")
    third_party = body.get("third_party_instance_id")
    if third_party is not None and not isinstance(third_party, str):
        raise bad_json("third_party_instance_id must be a string")
    include_all = body.get("include_all_networks", False)
    if not isinstance(include_all, bool):
        raise bad_json("include_all_networks must be a boolean")
    return PublicRoomsQuery(limit=limit, since=since or None, search_term=term,
                            room_types=room_types, third_party_instance_id=third_party,
                            include_all_networks=include_all)


@routes.post(client_path("/publicRooms", LEGACY))
async def query_public_rooms(request: Request) -> dict[str, Any]:
    await request.requester(allow_guest=True)
    body = await request.json(allow_empty=True)
    query = parse_public_rooms_body(body)
    remote = _remote_server(request, request.query_str("server"))
    if remote is not None:
        search: dict[str, Any] = {}
        if query.search_term is not None:
            search["generic_search_term"] = query.search_term
        if query.room_types is not None:
            search["room_types"] = query.room_types
        return await request.hs.federation_queries.public_rooms(
            remote, limit=query.limit, since=query.since, search_filter=search or None,
            include_all_networks=query.include_all_networks,
            third_party_instance_id=query.third_party_instance_id)
    return await request.hs.directory.public_rooms(query)
