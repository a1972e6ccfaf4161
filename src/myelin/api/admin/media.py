"""Synapse's media admin API (``/_synapse/admin/v1/...``), for server admins
only. Part of the ``media`` resource, so a fleet routes it to its media
workers as the seed's ``media_repository`` patterns do."""

from __future__ import annotations

from typing import Any

from myelin.domain import MatrixError, Requester, invalid_param, missing_param, not_found
from myelin.http.request import Request
from myelin.http.routing import RouteTable, plain_path

routes = RouteTable("media")

ADMIN = "/_synapse/admin/v1"
ORDER_COLUMNS = ("media_id", "upload_name", "created_ts", "last_access_ts", "media_length",
                 "media_type", "quarantined_by", "safe_from_quarantine")


async def _admin(request: Request) -> Requester:
    requester = await request.requester()
    request.hs.auth.require_admin(requester)
    return requester


def _before_ts(request: Request) -> int:
    before_ts = request.query_int("before_ts")
    if before_ts is None:
        raise missing_param("Missing integer query parameter 'before_ts'")
    if before_ts < 0:
        raise invalid_param("Query parameter before_ts must be a positive integer.")
    if before_ts < 30_000_000_000:
        # Seconds instead of milliseconds would delete (almost) nothing by surprise.
        raise invalid_param("Query parameter before_ts you provided is from the year 1970. "
                            "Double check that you are providing a timestamp in milliseconds.")
    return before_ts


async def _local_user(request: Request) -> str:
    user_id = request.param("userId")
    hs = request.hs
    if not hs.is_mine(user_id):
        raise MatrixError(400, "M_UNKNOWN", "Can only look up local users")
    if await hs.stores.accounts.get_user(user_id) is None:
        raise not_found("Unknown user")
    return user_id


@routes.post(plain_path(ADMIN, "/purge_media_cache"))
async def purge_media_cache(request: Request) -> dict[str, Any]:
    await _admin(request)
    _before_ts(request)
    # Only remote media is cached, and there is none before federation.
    return {"deleted": 0}


@routes.get(plain_path(ADMIN, "/room/{roomId}/media"))
async def room_media(request: Request) -> dict[str, Any]:
    await _admin(request)
    local, remote = await request.hs.media.media_in_room(request.param("roomId"))
    return {"local": local, "remote": remote}


async def _quarantine_room(request: Request) -> dict[str, Any]:
    admin = await _admin(request)
    media = request.hs.media
    local, _remote = await media.media_in_room(request.param("roomId"))
    ids = [mid for uri in local if (mid := media.local_media_id(uri)) is not None]
    return {"num_quarantined": await media.quarantine(ids, admin.user_id)}


@routes.post(plain_path(ADMIN, "/room/{roomId}/media/quarantine"))
async def quarantine_room_media(request: Request) -> dict[str, Any]:
    return await _quarantine_room(request)


@routes.post(plain_path(ADMIN, "/quarantine_media/{roomId}"))
async def quarantine_room_media_legacy(request: Request) -> dict[str, Any]:
    return await _quarantine_room(request)


@routes.post(plain_path(ADMIN, "/user/{userId}/media/quarantine"))
async def quarantine_user_media(request: Request) -> dict[str, Any]:
    admin = await _admin(request)
    user_id = await _local_user(request)
    media = request.hs.media
    ids = await media.store.ids_of_user(user_id)
    return {"num_quarantined": await media.quarantine(ids, admin.user_id)}


@routes.get(plain_path(ADMIN, "/users/{userId}/media"))
async def list_user_media(request: Request) -> dict[str, Any]:
    await _admin(request)
    user_id = await _local_user(request)
    start = request.query_int("from", 0)
    limit = request.query_int("limit", 100)
    assert start is not None and limit is not None
    if start < 0:
        raise invalid_param("Query parameter from must be a string representing a "
                            "positive integer.")
    if limit < 0:
        raise invalid_param("Query parameter limit must be a string representing a "
                            "positive integer.")
    order_by = request.query_str("order_by", "created_ts") or "created_ts"
    if order_by not in ORDER_COLUMNS:
        raise invalid_param(f"order_by must be one of {', '.join(ORDER_COLUMNS)}")
    direction = request.query_str("dir", "f") or "f"
    if direction not in ("f", "b"):
        raise invalid_param("Query parameter dir must be one of ['b', 'f']")
    media, total = await request.hs.media.store.by_user(user_id, start, limit, order_by,
                                                         direction)
    body: dict[str, Any] = {"media": [m.admin_json() for m in media], "total": total}
    if start + len(media) < total:
        body["next_token"] = start + len(media)
    return body


@routes.delete(plain_path(ADMIN, "/users/{userId}/media"))
async def delete_user_media(request: Request) -> dict[str, Any]:
    await _admin(request)
    user_id = await _local_user(request)
    media = request.hs.media
    return await media.delete_local_media(await media.store.ids_of_user(user_id))


@routes.post(plain_path(ADMIN, "/media/quarantine/{serverName}/{mediaId}"))
async def quarantine_media(request: Request) -> dict[str, Any]:
    admin = await _admin(request)
    await request.hs.media.quarantine_one(request.param("serverName"),
                                          request.param("mediaId"), admin.user_id)
    return {}


@routes.post(plain_path(ADMIN, "/media/unquarantine/{serverName}/{mediaId}"))
async def unquarantine_media(request: Request) -> dict[str, Any]:
    await _admin(request)
    await request.hs.media.quarantine_one(request.param("serverName"),
                                          request.param("mediaId"), None)
    return {}


@routes.post(plain_path(ADMIN, "/media/protect/{mediaId}"))
async def protect_media(request: Request) -> dict[str, Any]:
    await _admin(request)
    await request.hs.media.protect(request.param("mediaId"), True)
    return {}


@routes.post(plain_path(ADMIN, "/media/unprotect/{mediaId}"))
async def unprotect_media(request: Request) -> dict[str, Any]:
    await _admin(request)
    await request.hs.media.protect(request.param("mediaId"), False)
    return {}


async def _delete_old(request: Request) -> dict[str, Any]:
    await _admin(request)
    before_ts = _before_ts(request)
    size_gt = request.query_int("size_gt", 0)
    assert size_gt is not None
    if size_gt < 0:
        raise invalid_param("Query parameter size_gt must be a string representing a "
                            "positive integer.")
    keep_profiles = request.query_bool("keep_profiles", True)
    return await request.hs.media.delete_old(before_ts, size_gt, keep_profiles)


@routes.post(plain_path(ADMIN, "/media/delete"))
async def delete_old_media(request: Request) -> dict[str, Any]:
    return await _delete_old(request)


@routes.post(plain_path(ADMIN, "/media/{serverName}/delete"))
async def delete_old_media_legacy(request: Request) -> dict[str, Any]:
    await _admin(request)  # before anything is said about the arguments
    if request.param("serverName") != request.hs.server_name:
        raise MatrixError(400, "M_UNKNOWN", "Can only delete local media")
    return await _delete_old(request)


@routes.get(plain_path(ADMIN, "/media/{serverName}/{mediaId}"))
async def media_info(request: Request) -> dict[str, Any]:
    await _admin(request)
    return await request.hs.media.get_media_info(request.param("serverName"),
                                                 request.param("mediaId"))


@routes.delete(plain_path(ADMIN, "/media/{serverName}/{mediaId}"))
async def delete_media(request: Request) -> dict[str, Any]:
    await _admin(request)
    return await request.hs.media.delete_one(request.param("serverName"),
                                             request.param("mediaId"))
