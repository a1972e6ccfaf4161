"""What other servers may ask us about our users and rooms: profiles, room
aliases (``/query/*``), device lists and keys (``/user/*``), the public room
list and space hierarchies. Every request is authenticated first (X-Matrix)."""

from __future__ import annotations

from typing import Any

from myelin.api.client.directory import parse_public_rooms_body
from myelin.domain import MatrixError, bad_json, invalid_param, missing_param, not_found
from myelin.federation.auth import authenticate_request
from myelin.handlers.directory import PublicRoomsQuery
from myelin.http.request import Request
from myelin.http.routing import PathPattern, RouteTable

routes = RouteTable("federation")


def v1(path: str) -> PathPattern:
    return PathPattern("/_matrix/federation", ("v1",), path)


def _local_user(request: Request, user_id: str | None) -> str:
    if not user_id:
        raise missing_param("user_id is required")
    if not user_id.startswith("@") or ":" not in user_id:
        raise invalid_param(f"Invalid user ID {user_id!r}")
    if not request.hs.is_mine(user_id):
        raise invalid_param("User is not hosted on this homeserver")
    return user_id


# -- /query/* -------------------------------------------------------------------
@routes.get(v1("/query/profile"))
async def query_profile(request: Request) -> dict[str, Any]:
    await authenticate_request(request)
    user_id = _local_user(request, request.query_str("user_id"))
    field = request.query_str("field")
    if field:
        return await request.hs.profile.get_field(user_id, field)
    return await request.hs.profile.get_profile(user_id)


@routes.get(v1("/query/directory"))
async def query_directory(request: Request) -> dict[str, Any]:
    await authenticate_request(request)
    alias = request.query_str("room_alias")
    if not alias:
        raise missing_param("room_alias is required")
    directory = request.hs.directory
    directory.check_alias_syntax(alias)
    if alias.partition(":")[2] != request.hs.server_name:
        raise invalid_param("Room alias is not hosted on this homeserver")
    return await directory.resolve_local_alias(alias)


@routes.get(v1("/query/{queryType}"))
async def query_other(request: Request) -> dict[str, Any]:
    # An unknown query type is an endpoint we do not have (the spec leaves
    # the answer open; Synapse says M_NOT_FOUND, we say so the spec's way).
    await authenticate_request(request)
    raise MatrixError(404, "M_UNRECOGNIZED",
                      f"Unknown query type {request.param('queryType')!r}")


# -- /user/* --------------------------------------------------------------------
@routes.get(v1("/user/devices/{userId}"))
async def user_devices(request: Request) -> dict[str, Any]:
    await authenticate_request(request)
    user_id = _local_user(request, request.param("userId"))
    return await request.hs.e2e_keys.local_devices(user_id)


@routes.post(v1("/user/keys/query"))
async def user_keys_query(request: Request) -> dict[str, Any]:
    await authenticate_request(request)
    return await request.hs.e2e_keys.local_query(await request.json())


@routes.post(v1("/user/keys/claim"))
async def user_keys_claim(request: Request) -> dict[str, Any]:
    await authenticate_request(request)
    return await request.hs.e2e_keys.local_claim(await request.json())


# -- /publicRooms ---------------------------------------------------------------
def _check_public_rooms_allowed(request: Request) -> None:
    if not request.hs.config.allow_public_rooms_over_federation:
        raise MatrixError(403, "M_FORBIDDEN",
                          "This server does not share its public room list over federation")


def _query_bool(request: Request, name: str) -> bool:
    value = request.query_str(name)
    if value is None:
        return False
    if value not in ("true", "false"):
        raise invalid_param(f"{name} must be true or false")
    return value == "true"


@routes.get(v1("/publicRooms"))
async def public_rooms(request: Request) -> dict[str, Any]:
    await authenticate_request(request)
    _check_public_rooms_allowed(request)
    limit = request.query_int("limit")
    if limit is not None and limit < 0:
        raise invalid_param("limit must not be negative")
    query = PublicRoomsQuery(
        limit=limit, since=request.query_str("since") or None,
        third_party_instance_id=request.query_str("third_party_instance_id"),
        include_all_networks=_query_bool(request, "include_all_networks"))
    return await request.hs.directory.public_rooms(query)


@routes.post(v1("/publicRooms"))
async def query_public_rooms(request: Request) -> dict[str, Any]:
    await authenticate_request(request)
    _check_public_rooms_allowed(request)
    body = await request.json(allow_empty=True)
    if not isinstance(body, dict):
        raise bad_json("The body must be an object")
    return await request.hs.directory.public_rooms(parse_public_rooms_body(body))


# -- /hierarchy -----------------------------------------------------------------
@routes.get(v1("/hierarchy/{roomId}"))
async def hierarchy(request: Request) -> dict[str, Any]:
    origin = await authenticate_request(request)
    room_id = request.param("roomId")
    if not room_id.startswith("!"):
        raise not_found("Room does not exist.")
    return await request.hs.spaces.federation_hierarchy(
        origin, room_id, _query_bool(request, "suggested_only"))
