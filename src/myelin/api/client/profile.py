"""Profile servlets: ``/profile/{userId}`` and its fields."""

from __future__ import annotations

from typing import Any

from myelin.domain import Requester, check_not_suspended
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


async def _profile_editor(request: Request) -> Requester:
    """Guests may change only their display name; suspended users nothing."""
    requester = await request.requester(allow_guest=request.param("keyName") == "displayname")
    check_not_suspended(requester)
    return requester


@routes.put(client_path("/profile/{userId}/{keyName}", LEGACY), stream="events")
async def put_profile_field(request: Request) -> dict[str, Any]:
    requester = await _profile_editor(request)
    body = await request.json()
    await request.hs.profile.set_field(requester, request.param("userId"),
                                       request.param("keyName"), body)
    return {}


@routes.delete(client_path("/profile/{userId}/{keyName}", LEGACY), stream="events")
async def delete_profile_field(request: Request) -> dict[str, Any]:
    requester = await _profile_editor(request)
    await request.hs.profile.set_field(requester, request.param("userId"),
                                       request.param("keyName"), None)
    return {}
