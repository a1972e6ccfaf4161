"""Search servlets: ``POST /search`` (room events) and ``POST /user_directory/search``."""

from __future__ import annotations

from typing import Any

from myelin.http.request import Request
from myelin.http.routing import LEGACY, RouteTable, client_path

routes = RouteTable("client")


@routes.post(client_path("/search", LEGACY))
async def search(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    body = await request.json()
    return await request.hs.search.search(requester, body, request.query_str("next_batch"))


@routes.post(client_path("/user_directory/search"))
async def search_user_directory(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    body = await request.json()
    return await request.hs.user_directory.search(requester, body)
