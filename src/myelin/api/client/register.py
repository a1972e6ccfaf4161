"""``/register`` with user-interactive auth, and username availability."""

from __future__ import annotations

from typing import Any

from myelin.domain import MatrixError, forbidden
from myelin.http.request import Request
from myelin.http.routing import RouteTable, client_path, client_v1_path

routes = RouteTable("client")
APPSERVICE_LOGIN = "m.login.application_service"


@routes.get(client_path("/register/available"))
async def available(request: Request) -> dict[str, Any]:
    request.hs.ratelimiters.registration.check(request.client_ip)
    username = request.query_str("username")
    if not username:
        raise MatrixError(400, "M_MISSING_PARAM", "username is required")
    await request.hs.registration.check_available(username.lower())  # M_INVALID_USERNAME too
    return {"available": True}


@routes.get(client_v1_path("/register/m.login.registration_token/validity"))
async def token_validity(request: Request) -> dict[str, Any]:
    request.hs.ratelimiters.registration.check(request.client_ip)
    if not request.hs.config.enable_registration:
        raise forbidden("Registration is not enabled on this homeserver.")
    token = request.query_str("token")
    if not token:
        raise MatrixError(400, "M_MISSING_PARAM", "token is required")
    return {"valid": await request.hs.stores.registration_tokens.is_valid(token)}


@routes.post(client_path("/register"), stream="device_lists")
async def register(request: Request) -> Any:
    hs = request.hs
    kind = request.query_str("kind", "user")
    if kind not in ("user", "guest"):
        raise MatrixError(400, "M_INVALID_PARAM", "kind must be user or guest")
    hs.ratelimiters.registration.check(request.client_ip, update=False)

    if kind == "guest":
        # A guest needs no body at all.
        body = await request.json(allow_empty=True)
        if not hs.config.allow_guest_access:
            raise forbidden("Guest access is disabled")
        hs.ratelimiters.registration.check(request.client_ip)
        localpart = await hs.registration.generate_localpart()
        user_id = await hs.registration.register_user(localpart, None, is_guest=True)
        display_name = body.get("initial_device_display_name")
        session = await hs.auth.issue_tokens(
            user_id, None, display_name if isinstance(display_name, str) else None)
        return {"user_id": user_id, **session, "home_server": hs.server_name}

    body = await request.json()
    token = hs.auth.extract_token(request.raw)
    if body.get("type") == APPSERVICE_LOGIN or (token and hs.appservices.by_token(token)):
        if body.get("type") != APPSERVICE_LOGIN:
            raise MatrixError(400, "M_MISSING_PARAM",
                              "An application service registers with "
                              "type m.login.application_service")
        service = hs.appservices.by_token(token) if token else None
        if service is None:
            raise MatrixError(401, "M_MISSING_TOKEN",
                              "m.login.application_service needs the service's as_token")
        # Not request.requester(): bridges name the user to be (?user_id=).
        return await hs.registration.register_appservice_user(
            hs.appservices.sender_requester(service), body)
    if not hs.config.enable_registration and not body.get("guest_access_token"):
        raise forbidden("Registration has been disabled")
    return await hs.registration.register_with_uia(body, request.raw.path, request.client_ip)


@routes.get(client_path("/password_policy"))
async def password_policy(request: Request) -> dict[str, Any]:
    """The rules a new password must meet (``m.minimum_length`` when configured)."""
    minimum = request.hs.config.password_min_length
    return {"m.minimum_length": minimum} if minimum else {}
