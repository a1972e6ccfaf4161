"""The room upgrade servlet: ``POST /rooms/{roomId}/upgrade``."""

from __future__ import annotations

from typing import Any

from myelin.http.request import Request
from myelin.http.routing import RouteTable, client_path

routes = RouteTable("client")


@routes.post(client_path("/rooms/{roomId}/upgrade"), stream="events")
async def upgrade(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    body = await request.json()
    new_room_id = await request.hs.room_upgrades.upgrade(requester, request.param("roomId"),
                                                         body)
    return {"replacement_room": new_room_id}
