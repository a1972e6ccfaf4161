"""Synapse's registration-token admin API (``v1/registration_tokens``):
list (``valid`` filter), create (``new``: token, uses_allowed, expiry_time,
length), get, update and delete, over the registration-token store the
client's ``m.login.registration_token`` stage uses. Admins only, on main."""

from __future__ import annotations

import re
from typing import Any

from myelin.api.admin.common import admin, body_of
from myelin.domain import MatrixError, invalid_param, not_found
from myelin.http.request import Request
from myelin.http.routing import RouteTable, plain_path
from myelin.storage.stores.accounts import now_ms

routes = RouteTable("client")

V1 = "/_synapse/admin/v1"
TOKEN_RE = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")


def _optional_int(body: dict[str, Any], key: str, *, minimum: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise invalid_param(f"{key} must be an integer of at least {minimum}, or null")
    return value


@routes.get(plain_path(V1, "/registration_tokens"), main_only=True)
async def list_tokens(request: Request) -> dict[str, Any]:
    await admin(request)
    valid = None if request.query_str("valid") is None else request.query_bool("valid")
    tokens = await request.hs.stores.registration_tokens.list_tokens(valid)
    return {"registration_tokens": [t.to_json() for t in tokens]}


@routes.post(plain_path(V1, "/registration_tokens/new"), main_only=True)
async def new_token(request: Request) -> dict[str, Any]:
    await admin(request)
    body = await body_of(request, allow_empty=True)
    token = body.get("token")
    if token is not None and (not isinstance(token, str) or not TOKEN_RE.match(token)):
        raise invalid_param("token must consist only of characters matched by the regex "
                            "[A-Za-z0-9._~-] and be at most 64 characters")
    length = body.get("length", 16)
    if "token" not in body and (not isinstance(length, int) or isinstance(length, bool)
                                or not 0 < length <= 64):
        raise invalid_param("length must be an integer > 0 and <= 64")
    uses_allowed = _optional_int(body, "uses_allowed", minimum=0)
    expiry_time = _optional_int(body, "expiry_time", minimum=0)
    if expiry_time is not None and expiry_time < now_ms():
        raise invalid_param("expiry_time must not be in the past")
    created = await request.hs.stores.registration_tokens.create_token(
        token, length=length if isinstance(length, int) else 16,
        uses_allowed=uses_allowed, expiry_time=expiry_time)
    if created is None:
        raise MatrixError(400, "M_INVALID_PARAM", f"Token already exists: {token}")
    return created.to_json()


@routes.get(plain_path(V1, "/registration_tokens/{token}"), main_only=True)
async def get_token(request: Request) -> dict[str, Any]:
    await admin(request)
    token = await request.hs.stores.registration_tokens.get_token(request.param("token"))
    if token is None:
        raise not_found(f"No such registration token: {request.param('token')}")
    return token.to_json()


@routes.put(plain_path(V1, "/registration_tokens/{token}"), main_only=True)
async def update_token(request: Request) -> dict[str, Any]:
    await admin(request)
    body = await body_of(request, allow_empty=True)
    changes: dict[str, Any] = {}
    if "uses_allowed" in body:
        changes["uses_allowed"] = _optional_int(body, "uses_allowed", minimum=0)
    if "expiry_time" in body:
        expiry = _optional_int(body, "expiry_time", minimum=0)
        if expiry is not None and expiry < now_ms():
            raise invalid_param("expiry_time must not be in the past")
        changes["expiry_time"] = expiry
    store = request.hs.stores.registration_tokens
    updated = await store.update_token(request.param("token"), **changes)
    if updated is None:
        raise not_found(f"No such registration token: {request.param('token')}")
    return updated.to_json()


@routes.delete(plain_path(V1, "/registration_tokens/{token}"), main_only=True)
async def delete_token(request: Request) -> dict[str, Any]:
    await admin(request)
    if not await request.hs.stores.registration_tokens.delete_token(request.param("token")):
        raise not_found(f"No such registration token: {request.param('token')}")
    return {}
