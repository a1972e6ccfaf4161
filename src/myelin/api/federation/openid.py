"""``/_matrix/federation/v1/openid/userinfo``: who an OpenID token belongs to.

Called by third parties (integration managers, widgets) with a token a user
got from ``/openid/request_token``; it is authenticated by that token only,
not by a federation signature.
"""

from __future__ import annotations

import time
from typing import Any

from myelin.domain import MatrixError
from myelin.http.request import Request
from myelin.http.routing import PathPattern, RouteTable

routes = RouteTable("federation")


@routes.get(PathPattern("/_matrix/federation", ("v1",), "/openid/userinfo"))
async def userinfo(request: Request) -> dict[str, Any]:
    token = request.query_str("access_token")
    if not token:  # as Synapse: an absent token is an unknown one
        raise MatrixError(401, "M_UNKNOWN_TOKEN", "Access Token required")
    user_id = await request.hs.stores.openid_tokens.user_for_token(
        token, int(time.time() * 1000))
    if user_id is None:
        raise MatrixError(401, "M_UNKNOWN_TOKEN", "Access Token unknown or expired")
    return {"sub": user_id}
