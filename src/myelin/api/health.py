"""``/health``: 200 "OK" while the process reaches its database and (in a
fleet) Redis; 503 naming what it cannot reach otherwise."""

from __future__ import annotations

from aiohttp import web

from myelin.http.request import Request
from myelin.http.routing import RouteTable, plain_path

routes = RouteTable("health")


@routes.get(plain_path("/health"))
async def health(request: Request) -> web.Response:
    problems = await request.hs.health_problems()
    if problems:
        return web.Response(status=503, text="; ".join(problems), content_type="text/plain")
    return web.Response(text="OK", content_type="text/plain")
