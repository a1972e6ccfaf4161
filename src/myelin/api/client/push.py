"""Pushers and notifications: ``/pushers``, ``/pushers/set``, ``/notifications``."""

from __future__ import annotations

from typing import Any

from myelin.domain import invalid_param
from myelin.http.request import Request
from myelin.http.routing import RouteTable, client_path

routes = RouteTable("client")

DEFAULT_NOTIFICATIONS_LIMIT = 20
MAX_NOTIFICATIONS_LIMIT = 1000


@routes.get(client_path("/pushers"), affinity="user")
async def get_pushers(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    return {"pushers": await request.hs.pushers.get_pushers(requester.user_id)}


@routes.post(client_path("/pushers/set"), affinity="user")
async def set_pusher(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    body = await request.json()
    await request.hs.pushers.set_pusher(requester, body)
    return {}


@routes.get(client_path("/notifications"), affinity="user")
async def get_notifications(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    from_token = request.query_str("from")
    if from_token is not None and not from_token.isdigit():
        raise invalid_param("Unknown pagination token")
    limit = request.query_int("limit", DEFAULT_NOTIFICATIONS_LIMIT, minimum=1) \
        or DEFAULT_NOTIFICATIONS_LIMIT
    only = request.query_str("only")
    return await request.hs.push_actions.get_notifications(
        requester.user_id, from_token or None, min(limit, MAX_NOTIFICATIONS_LIMIT),
        only_highlight=only == "highlight")
