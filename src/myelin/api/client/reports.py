"""Reporting content: ``/rooms/{roomId}/report/{eventId}``, ``/rooms/{roomId}/report``
and ``/users/{userId}/report``."""

from __future__ import annotations

from typing import Any

from myelin.http.request import Request
from myelin.http.routing import RouteTable, client_path

routes = RouteTable("client")


@routes.post(client_path("/rooms/{roomId}/report/{eventId}"))
async def report_event(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    body = await request.json(allow_empty=True)
    await request.hs.reports.report_event(requester, request.param("roomId"),
                                          request.param("eventId"), body)
    return {}


@routes.post(client_path("/rooms/{roomId}/report"))
async def report_room(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    await request.hs.reports.report_room(requester, request.param("roomId"),
                                         await request.json())
    return {}


@routes.post(client_path("/users/{userId}/report"))
async def report_user(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    await request.hs.reports.report_user(requester, request.param("userId"),
                                         await request.json())
    return {}
