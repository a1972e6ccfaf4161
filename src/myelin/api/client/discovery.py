"""``/.well-known/matrix/{client,support,policy_server}``: what clients discover."""

from __future__ import annotations

from typing import Any

from myelin.domain import not_found
from myelin.handlers.discovery import client_wellknown, support_wellknown
from myelin.http.request import Request
from myelin.http.routing import RouteTable, plain_path

routes = RouteTable("client")


@routes.get(plain_path("/.well-known/matrix/client"))
async def client(request: Request) -> dict[str, Any]:
    document = client_wellknown(request.hs.config)
    if document is None:
        raise not_found(".well-known/matrix/client is not served here")
    return document


@routes.get(plain_path("/.well-known/matrix/support"))
async def support(request: Request) -> dict[str, Any]:
    document = support_wellknown(request.hs.config)
    if document is None:
        raise not_found("No support information is configured")
    return document


@routes.get(plain_path("/.well-known/matrix/policy_server"))
async def policy_server(request: Request) -> dict[str, Any]:
    # This server is not a policy server: it has no policy key to publish.
    raise not_found("This server is not a policy server")
