"""``/login`` and ``/logout``."""

from __future__ import annotations

from typing import Any

from myelin.domain import MatrixError, forbidden
from myelin.http.request import Request
from myelin.http.routing import LEGACY, RouteTable, client_path

routes = RouteTable("client")


@routes.get(client_path("/login", LEGACY))
async def login_flows(request: Request) -> dict[str, Any]:
    return {"flows": [{"type": "m.login.password"}]}


def _user_from_login_body(body: dict[str, Any]) -> str:
    identifier = body.get("identifier")
    if isinstance(identifier, dict):
        if identifier.get("type") != "m.id.user":
            raise MatrixError(400, "M_UNKNOWN", "Unsupported identifier type")
        user = identifier.get("user")
    else:
        user = body.get("user")  # the deprecated top-level form
    if not isinstance(user, str) or not user:
        raise MatrixError(400, "M_BAD_JSON", "Missing or invalid user identifier")
    return user


@routes.post(client_path("/login", LEGACY), stream="device_lists")
async def login(request: Request) -> dict[str, Any]:
    hs = request.hs
    body = await request.json()
    if body.get("type") != "m.login.password":
        raise MatrixError(400, "M_UNKNOWN", "Unknown login type")
    user_id = hs.qualify_user_id(_user_from_login_body(body))
    password = body.get("password")
    if not isinstance(password, str):
        raise MatrixError(400, "M_BAD_JSON", "Missing password")
    device_id = body.get("device_id")
    display_name = body.get("initial_device_display_name")
    if device_id is not None and (not isinstance(device_id, str) or not device_id):
        raise MatrixError(400, "M_BAD_JSON", "device_id must be a string")
    if display_name is not None and not isinstance(display_name, str):
        raise MatrixError(400, "M_BAD_JSON", "initial_device_display_name must be a string")
    limits = hs.ratelimiters
    limits.login_address.check(request.client_ip)
    limits.login_account.check(user_id.lower())
    limits.login_failures.check(user_id.lower(), update=False)
    user_id = await hs.account_lifecycle.login_user_id(user_id)
    if not await hs.auth.validate_login(user_id, password):
        limits.login_failures.check(user_id.lower())
        raise forbidden("Invalid username or password")
    limits.login_failures.reset(user_id.lower())
    device_id, token = await hs.auth.issue_session(user_id, device_id, display_name)
    return {
        "user_id": user_id,
        "access_token": token,
        "device_id": device_id,
        "home_server": hs.server_name,
        "well_known": {"m.homeserver": {"base_url": hs.config.public_baseurl}},
    }


@routes.post(client_path("/logout"), stream="device_lists")
async def logout(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    await request.hs.account_lifecycle.logout(requester)
    return {}


@routes.post(client_path("/logout/all"), stream="device_lists")
async def logout_all(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    await request.hs.account_lifecycle.logout_all(requester.user_id)
    return {}
