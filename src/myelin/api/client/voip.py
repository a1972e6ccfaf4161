"""``/voip/turnServer``: TURN credentials for calls."""

from __future__ import annotations

from typing import Any

from myelin.http.request import Request
from myelin.http.routing import LEGACY, RouteTable, client_path

routes = RouteTable("client")


@routes.get(client_path("/voip/turnServer", LEGACY))
async def turn_server(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    return request.hs.turn.credentials(requester)
