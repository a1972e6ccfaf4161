"""Profile servlets: ``/profile/{userId}`` and its fields."""

from __future__ import annotations

from typing import Any

from myelin.http.request import Request
from myelin.http.routing import LEGACY, RouteTable, client_path

routes = RouteTable("client")



@routes.get(client_path("/profile/{userId}", LEGACY))
async def get_profile(request: Request) -> dict[str, Any]:
    return await request.hs.profile.get_profile(request.param("userId"))


@routes.get(client_path("/profile/{userId}/{keyName}", LEGACY))
async def get_profile_field(request: Request) -> dict[str, Any]:
    return await request.hs.profile.get_field(request.param("userId"),
                                              request.param("keyName"))


@routes.put(client_path("/profile/{userId}/{keyName}", LEGACY), stream="events")
async def put_profile_field(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    body = await request.json()
    await request.hs.profile.set_field(requester, request.param("userId"),
                                       request.param("keyName"), body)
    return {}


@routes.delete(client_path("/profile/{userId}/{keyName}", LEGACY), stream="events")
async def delete_profile_field(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    await request.hs.profile.set_field(requester, request.param("userId"),
                                       request.param("keyName"), None)
    return {}
