"""``/login`` and ``/logout``."""

from __future__ import annotations

from typing import Any

from myelin.domain import MatrixError, forbidden, unrecognized
from myelin.http.request import Request
from myelin.http.routing import LEGACY, RouteTable, client_path, client_v1_path

routes = RouteTable("client")
APPSERVICE_LOGIN = "m.login.application_service"


@routes.get(client_path("/login", LEGACY))
async def login_flows(request: Request) -> dict[str, Any]:
    flows = [{"type": "m.login.password"}]
    if request.hs.appservices.services:
        flows.append({"type": APPSERVICE_LOGIN})
    return {"flows": flows}


@routes.post(client_path("/login", LEGACY), stream="device_lists")
async def login(request: Request) -> dict[str, Any]:
    hs = request.hs
    body = await request.json()
    if body.get("type") == APPSERVICE_LOGIN:
        return await _appservice_login(request, body)
    if body.get("type") != "m.login.password":
        raise MatrixError(400, "M_UNKNOWN", "Unknown login type")
    password = body.get("password")
    if not isinstance(password, str):
        raise MatrixError(400, "M_BAD_JSON", "Missing password")
    device_id = body.get("device_id")
    display_name = body.get("initial_device_display_name")
    if device_id is not None and (not isinstance(device_id, str) or not device_id):
        raise MatrixError(400, "M_BAD_JSON", "device_id must be a string")
    if display_name is not None and not isinstance(display_name, str):
        raise MatrixError(400, "M_BAD_JSON", "initial_device_display_name must be a string")
    refreshable = body.get("refresh_token", False)
    if not isinstance(refreshable, bool):
        raise MatrixError(400, "M_BAD_JSON", "refresh_token must be a boolean")
    identifier = body.get("identifier")
    by_threepid = (isinstance(identifier, dict) and identifier.get("type") == "m.id.thirdparty"
                   ) or (identifier is None and "user" not in body and "medium" in body)
    limits = hs.ratelimiters
    limits.login_address.check(request.client_ip)
    user_id = await hs.auth.user_id_from_identifier(body)
    if user_id is None:
        if not by_threepid:
            raise MatrixError(400, "M_BAD_JSON", "Missing or invalid user identifier")
        raise forbidden("Invalid username or password")  # no account has that address
    limits.login_account.check(user_id.lower())
    limits.login_failures.check(user_id.lower(), update=False)
    if not await hs.auth.validate_login(user_id, password):
        limits.login_failures.check(user_id.lower())
        raise forbidden("Invalid username or password")
    limits.login_failures.reset(user_id.lower())
    session = await hs.auth.issue_tokens(user_id, device_id, display_name,
                                         refreshable=refreshable)
    return {
        "user_id": user_id,
        **session,
        "home_server": hs.server_name,
        "well_known": {"m.homeserver": {"base_url": hs.config.public_baseurl}},
    }


async def _appservice_login(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    """``m.login.application_service``: a service logs in one of its users
    with its as_token, no password."""
    hs = request.hs
    token = hs.auth.extract_token(request.raw)
    if not token or hs.appservices.by_token(token) is None:
        raise MatrixError(401, "M_MISSING_TOKEN",
                          "m.login.application_service needs the service's as_token")
    requester = await request.requester()
    device_id = body.get("device_id")
    display_name = body.get("initial_device_display_name")
    if device_id is not None and (not isinstance(device_id, str) or not device_id):
        raise MatrixError(400, "M_BAD_JSON", "device_id must be a string")
    if display_name is not None and not isinstance(display_name, str):
        raise MatrixError(400, "M_BAD_JSON", "initial_device_display_name must be a string")
    user_id = await hs.auth.user_id_from_identifier(body)
    if user_id is None:
        raise MatrixError(400, "M_BAD_JSON", "Missing or invalid user identifier")
    await hs.appservices.check_login(requester, user_id)
    session = await hs.auth.issue_tokens(user_id, device_id, display_name,
                                         refreshable=body.get("refresh_token") is True)
    return {"user_id": user_id, **session, "home_server": hs.server_name,
            "well_known": {"m.homeserver": {"base_url": hs.config.public_baseurl}}}


@routes.post(client_path("/refresh", ("v3",)))
async def refresh(request: Request) -> dict[str, Any]:
    """A new access token (and refresh token) for a refresh token; no access token needed."""
    body = await request.json()
    token = body.get("refresh_token")
    if not isinstance(token, str) or not token:
        raise MatrixError(400, "M_MISSING_PARAM", "refresh_token is required")
    return await request.hs.auth.refresh(token)


# -- what Myelin does not offer, answered as the spec says ----------------------

@routes.post(client_v1_path("/login/get_token"))
async def get_login_token(request: Request) -> dict[str, Any]:
    # Not offered (the m.get_login_token capability says so, and GET /login
    # lists no m.login.token flow): the spec's 400 for a user who has no
    # ability to generate tokens.
    await request.requester()
    raise MatrixError(400, "M_UNKNOWN", "This server does not offer login tokens")


@routes.get(client_v1_path("/auth_metadata"))
async def auth_metadata(request: Request) -> dict[str, Any]:
    # No OAuth 2.0 API: "the server SHOULD respond with 404 and M_UNRECOGNIZED".
    raise unrecognized()


@routes.get(client_path("/login/sso/redirect", LEGACY),
            client_path("/login/sso/redirect/{idpId}", LEGACY))
async def sso_redirect(request: Request) -> dict[str, Any]:
    # No SSO provider: GET /login offers no m.login.sso flow, so there is
    # nowhere to redirect to.
    raise unrecognized()


@routes.post(client_path("/logout"), stream="device_lists")
async def logout(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True, allow_locked=True)
    await request.hs.account_lifecycle.logout(requester)
    return {}


@routes.post(client_path("/logout/all"), stream="device_lists")
async def logout_all(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True, allow_locked=True)
    await request.hs.account_lifecycle.logout_all(requester.user_id)
    return {}
