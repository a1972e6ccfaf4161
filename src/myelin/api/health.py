"""``/health``: answers OK while the process can serve."""

from __future__ import annotations

from aiohttp import web

from myelin.http.request import Request
from myelin.http.routing import RouteTable, plain_path

routes = RouteTable("health")


@routes.get(plain_path("/health"))
async def health(request: Request) -> web.Response:
    return web.Response(text="OK", content_type="text/plain")
