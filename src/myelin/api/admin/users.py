"""Synapse's user admin API (``/_synapse/admin/v1|v2/users...``, deactivate,
reset_password, whois, username_available), as synapse-admin calls it.
Admins only: every servlet checks that first (403 ``M_FORBIDDEN``).
Served by main (``main_only``), like Synapse, whose admin API is not routed
to workers."""

from __future__ import annotations

from typing import Any

from myelin.api.admin.common import admin, body_of, nonnegative
from myelin.domain import MatrixError, invalid_param, missing_param
from myelin.handlers.admin.users import USER_ORDER
from myelin.http.request import Request
from myelin.http.routing import RouteTable, plain_path

routes = RouteTable("client")

V1 = "/_synapse/admin/v1"
V2 = "/_synapse/admin/v2"


def _user_bool(request: Request, name: str) -> bool | None:
    value = request.query_str(name)
    if value is None:
        return None
    return request.query_bool(name)


@routes.get(plain_path(V2, "/users"), plain_path(V1, "/users"), main_only=True)
async def list_users(request: Request) -> dict[str, Any]:
    await admin(request)
    start = nonnegative(request, "from", 0)
    limit = nonnegative(request, "limit", 100)
    order_by = request.query_str("order_by", "name") or "name"
    if order_by not in USER_ORDER:
        raise invalid_param(f"Unknown value for order_by: {order_by}")
    direction = request.query_str("dir", "f") or "f"
    if direction not in ("f", "b"):
        raise invalid_param("Unknown direction: " + direction)
    return await request.hs.admin_users.list_users(
        start=start, limit=limit, guests=request.query_bool("guests", True),
        deactivated=request.query_bool("deactivated", False),
        name=request.query_str("name"), user_id=request.query_str("user_id"),
        admins=_user_bool(request, "admins"), order_by=order_by, forwards=direction == "f",
        locked=request.query_bool("locked", False),
        not_user_types=request.raw.query.getall("not_user_types", []))


@routes.get(plain_path(V2, "/users/{userId}"), main_only=True)
async def get_user(request: Request) -> dict[str, Any]:
    await admin(request)
    return await request.hs.admin_users.query(request.param("userId"))


@routes.put(plain_path(V2, "/users/{userId}"), main_only=True)
async def put_user(request: Request) -> tuple[int, dict[str, Any]]:
    requester = await admin(request)
    body = await body_of(request)
    return await request.hs.admin_users.upsert(requester, request.param("userId"), body)


@routes.post(plain_path(V1, "/deactivate/{userId}"), main_only=True)
async def deactivate(request: Request) -> dict[str, Any]:
    await admin(request)
    body = await body_of(request, allow_empty=True)
    erase = body.get("erase", False)
    if not isinstance(erase, bool):
        raise MatrixError(400, "M_BAD_JSON", "Param 'erase' must be a boolean, if given")
    users = request.hs.admin_users
    await users.existing(request.param("userId"))
    await users.deactivate(request.param("userId"), erase=erase)
    return {"id_server_unbind_result": "success"}


@routes.post(plain_path(V1, "/reset_password/{userId}"), main_only=True)
async def reset_password(request: Request) -> dict[str, Any]:
    await admin(request)
    body = await body_of(request)
    password = body.get("new_password")
    if not isinstance(password, str):
        raise missing_param("Missing param 'new_password'")
    logout = body.get("logout_devices", True)
    if not isinstance(logout, bool):
        raise MatrixError(400, "M_BAD_JSON", "logout_devices must be a boolean")
    users = request.hs.admin_users
    await users.existing(request.param("userId"))
    await users.set_password(request.param("userId"), password, logout)
    return {}


@routes.get(plain_path(V1, "/users/{userId}/admin"), main_only=True)
async def get_admin(request: Request) -> dict[str, Any]:
    await admin(request)
    user = await request.hs.admin_users.existing(request.param("userId"))
    return {"admin": user.admin}


@routes.put(plain_path(V1, "/users/{userId}/admin"), main_only=True)
async def put_admin(request: Request) -> dict[str, Any]:
    requester = await admin(request)
    body = await body_of(request)
    users = request.hs.admin_users
    await users.existing(request.param("userId"))
    await users.set_admin(requester, request.param("userId"), body.get("admin"))
    return {}


@routes.get(plain_path(V1, "/whois/{userId}"), main_only=True)
async def whois(request: Request) -> dict[str, Any]:
    requester = await admin(request)
    return await request.hs.account_admin.whois(requester, request.param("userId"))


@routes.get(plain_path(V1, "/users/{userId}/joined_rooms"), main_only=True)
async def joined_rooms(request: Request) -> dict[str, Any]:
    await admin(request)
    user_id = request.param("userId")
    request.hs.admin_users.check_local(user_id)
    rooms = await request.hs.membership.joined_rooms(user_id)
    return {"joined_rooms": rooms, "total": len(rooms)}


@routes.get(plain_path(V2, "/users/{userId}/devices"), main_only=True)
async def list_devices(request: Request) -> dict[str, Any]:
    await admin(request)
    return await request.hs.admin_users.devices(request.param("userId"))


@routes.post(plain_path(V2, "/users/{userId}/devices"), main_only=True)
async def create_device(request: Request) -> tuple[int, dict[str, Any]]:
    await admin(request)
    body = await body_of(request)
    await request.hs.admin_users.create_device(request.param("userId"), body.get("device_id"))
    return 201, {}


@routes.post(plain_path(V2, "/users/{userId}/delete_devices"), main_only=True)
async def delete_devices(request: Request) -> dict[str, Any]:
    await admin(request)
    body = await body_of(request)
    devices = body.get("devices")
    if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
        raise missing_param("Missing param 'devices'")
    await request.hs.admin_users.delete_devices(request.param("userId"), devices)
    return {}


@routes.get(plain_path(V2, "/users/{userId}/devices/{deviceId}"), main_only=True)
async def get_device(request: Request) -> dict[str, Any]:
    await admin(request)
    return await request.hs.admin_users.device(request.param("userId"),
                                               request.param("deviceId"))


@routes.put(plain_path(V2, "/users/{userId}/devices/{deviceId}"), main_only=True)
async def put_device(request: Request) -> dict[str, Any]:
    await admin(request)
    body = await body_of(request, allow_empty=True)
    await request.hs.admin_users.rename_device(request.param("userId"),
                                               request.param("deviceId"), body)
    return {}


@routes.delete(plain_path(V2, "/users/{userId}/devices/{deviceId}"), main_only=True)
async def delete_device(request: Request) -> dict[str, Any]:
    await admin(request)
    await request.hs.admin_users.delete_devices(request.param("userId"),
                                                [request.param("deviceId")])
    return {}


@routes.post(plain_path(V1, "/users/{userId}/login"), main_only=True)
async def login_as(request: Request) -> dict[str, Any]:
    requester = await admin(request)
    body = await body_of(request, allow_empty=True)
    valid_until = body.get("valid_until_ms")
    if valid_until is not None and (not isinstance(valid_until, int)
                                    or isinstance(valid_until, bool)):
        raise MatrixError(400, "M_INVALID_PARAM", "'valid_until_ms' parameter must be an int")
    token = await request.hs.admin_users.login_as(requester, request.param("userId"),
                                                  valid_until)
    return {"access_token": token}


@routes.post(plain_path(V1, "/users/{userId}/shadow_ban"), main_only=True)
async def shadow_ban(request: Request) -> dict[str, Any]:
    await admin(request)
    await request.hs.admin_users.shadow_ban(request.param("userId"), True)
    return {}


@routes.delete(plain_path(V1, "/users/{userId}/shadow_ban"), main_only=True)
async def unshadow_ban(request: Request) -> dict[str, Any]:
    await admin(request)
    await request.hs.admin_users.shadow_ban(request.param("userId"), False)
    return {}


@routes.get(plain_path(V1, "/users/{userId}/override_ratelimit"), main_only=True)
async def get_ratelimit(request: Request) -> dict[str, Any]:
    await admin(request)
    return await request.hs.admin_users.get_ratelimit(request.param("userId"))


@routes.post(plain_path(V1, "/users/{userId}/override_ratelimit"), main_only=True)
async def set_ratelimit(request: Request) -> dict[str, Any]:
    await admin(request)
    body = await body_of(request, allow_empty=True)
    return await request.hs.admin_users.set_ratelimit(request.param("userId"), body)


@routes.delete(plain_path(V1, "/users/{userId}/override_ratelimit"), main_only=True)
async def delete_ratelimit(request: Request) -> dict[str, Any]:
    await admin(request)
    await request.hs.admin_users.delete_ratelimit(request.param("userId"))
    return {}


@routes.get(plain_path(V1, "/username_available"), main_only=True)
async def username_available(request: Request) -> dict[str, Any]:
    await admin(request)
    username = request.query_str("username")
    if not username:
        raise missing_param("Missing string query parameter 'username'")
    await request.hs.registration.check_available(username)
    return {"available": True}


@routes.get(plain_path(V1, "/users/{userId}/pushers"), main_only=True)
async def pushers(request: Request) -> dict[str, Any]:
    await admin(request)
    user_id = request.param("userId")
    await request.hs.admin_users.existing(user_id)
    found = await request.hs.stores.pushers.get_pushers(user_id)
    entries = [{**p.to_json(), "user_name": user_id} for p in found]
    return {"pushers": entries, "total": len(entries)}


@routes.get(plain_path(V1, "/users/{userId}/accountdata"), main_only=True)
async def account_data(request: Request) -> dict[str, Any]:
    await admin(request)
    user_id = request.param("userId")
    await request.hs.admin_users.existing(user_id)
    everything = await request.hs.stores.account_data.changed_since(user_id, None, 2**62)
    rooms = {room_id: data for room_id, data in everything.items() if room_id}
    return {"account_data": {"global": everything.get("", {}), "rooms": rooms}}
