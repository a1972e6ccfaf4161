"""``/register`` with user-interactive auth, and username availability."""

from __future__ import annotations

import secrets
from typing import Any

from myelin.domain import MatrixError, forbidden
from myelin.http.request import Request
from myelin.http.routing import RouteTable, client_path, client_v1_path

routes = RouteTable("client")

_DUMMY_FLOWS = [{"stages": ["m.login.dummy"]}]


@routes.get(client_path("/register/available"))
async def available(request: Request) -> dict[str, Any]:
    request.hs.ratelimiters.registration.check(request.client_ip)
    username = request.query_str("username")
    if not username:
        raise MatrixError(400, "M_MISSING_PARAM", "username is required")
    await request.hs.registration.check_available(username.lower())
    return {"available": True}


@routes.get(client_v1_path("/register/m.login.registration_token/validity"))
async def token_validity(request: Request) -> dict[str, Any]:
    request.hs.ratelimiters.registration.check(request.client_ip)
    if not request.hs.config.enable_registration:
        raise forbidden("Registration is not enabled on this homeserver.")
    if not request.query_str("token"):
        raise MatrixError(400, "M_MISSING_PARAM", "token is required")
    # Myelin has no registration tokens yet: none is valid.
    return {"valid": False}


@routes.post(client_path("/register"), stream="device_lists")
async def register(request: Request) -> Any:
    hs = request.hs
    body = await request.json()
    kind = request.query_str("kind", "user")
    if kind not in ("user", "guest"):
        raise MatrixError(400, "M_INVALID_PARAM", "kind must be user or guest")
    hs.ratelimiters.registration.check(request.client_ip, update=False)

    if kind == "guest":
        if not hs.config.allow_guest_access:
            raise forbidden("Guest access is disabled")
        hs.ratelimiters.registration.check(request.client_ip)
        localpart = await hs.registration.generate_localpart()
        user_id = await hs.registration.register_user(localpart, None, is_guest=True)
        guest_device, token = await hs.auth.issue_session(
            user_id, None, body.get("initial_device_display_name"))
        return {"user_id": user_id, "access_token": token, "device_id": guest_device,
                "home_server": hs.server_name}

    if not hs.config.enable_registration:
        raise forbidden("Registration has been disabled")

    username = body.get("username")
    password = body.get("password")
    if username is not None and not isinstance(username, str):
        raise MatrixError(400, "M_INVALID_USERNAME", "username must be a string")
    if password is not None and not isinstance(password, str):
        raise MatrixError(400, "M_INVALID_PARAM", "password must be a string")
    device_id = body.get("device_id")
    display_name = body.get("initial_device_display_name")
    if device_id is not None and not isinstance(device_id, str):
        raise MatrixError(400, "M_INVALID_PARAM", "device_id must be a string")
    inhibit_login = bool(body.get("inhibit_login", False))
    # Check the username before the auth dance, so the client learns early.
    if username:
        await hs.registration.check_available(username.lower())
    if password:
        hs.auth.check_password_policy(password)

    auth = body.get("auth")
    if not isinstance(auth, dict) or auth.get("type") is None:
        session = auth.get("session") if isinstance(auth, dict) else None
        session = session or secrets.token_urlsafe(18)
        raise MatrixError(401, "M_UNAUTHORIZED", "Additional authentication required",
                          flows=_DUMMY_FLOWS, params={}, session=session, completed=[])
    if auth.get("type") != "m.login.dummy":
        raise MatrixError(401, "M_UNRECOGNIZED", "Unsupported auth type", flows=_DUMMY_FLOWS,
                          params={}, session=auth.get("session"), completed=[])

    hs.ratelimiters.registration.check(request.client_ip)
    localpart = username.lower() if username else await hs.registration.generate_localpart()
    user_id = await hs.registration.register_user(localpart, password)
    response: dict[str, Any] = {"user_id": user_id, "home_server": hs.server_name}
    if not inhibit_login:
        device_id, token = await hs.auth.issue_session(user_id, device_id, display_name)
        response.update(access_token=token, device_id=device_id)
    return response


@routes.get(client_path("/password_policy"))
async def password_policy(request: Request) -> dict[str, Any]:
    """The rules a new password must meet (``m.minimum_length`` when configured)."""
    minimum = request.hs.config.password_min_length
    return {"m.minimum_length": minimum} if minimum else {}
