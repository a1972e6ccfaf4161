"""``/user/{userId}/openid/request_token``: a token another service can check
with this server's federation ``/openid/userinfo``."""

from __future__ import annotations

import secrets
import time
from typing import Any

from myelin.domain import forbidden
from myelin.http.request import Request
from myelin.http.routing import RouteTable, client_path

routes = RouteTable("client")

OPENID_TOKEN_LIFETIME_S = 3600


@routes.post(client_path("/user/{userId}/openid/request_token"))
async def request_token(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    if request.param("userId") != requester.user_id:
        raise forbidden("Cannot request tokens for other users.")
    await request.json(allow_empty=True)  # the body is {} but must be JSON if given
    token = secrets.token_urlsafe(24)
    valid_until = int(time.time() * 1000) + OPENID_TOKEN_LIFETIME_S * 1000
    await request.hs.stores.openid_tokens.add_token(token, requester.user_id, valid_until)
    return {"access_token": token, "token_type": "Bearer",
            "matrix_server_name": request.hs.server_name,
            "expires_in": OPENID_TOKEN_LIFETIME_S}
