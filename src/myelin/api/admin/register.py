"""Synapse-compatible shared-secret registration: ``/_synapse/admin/v1/register``."""

from __future__ import annotations

from typing import Any

from myelin.domain import MatrixError
from myelin.http.request import Request
from myelin.http.routing import RouteTable, plain_path

routes = RouteTable("client")


@routes.get(plain_path("/_synapse/admin/v1/register"), main_only=True)
async def get_nonce(request: Request) -> dict[str, Any]:
    if not request.hs.config.registration_shared_secret:
        raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
    return {"nonce": request.hs.registration.new_nonce()}


@routes.post(plain_path("/_synapse/admin/v1/register"), main_only=True)
async def register(request: Request) -> dict[str, Any]:
    body = await request.json()
    return await request.hs.registration.register_with_shared_secret(body)
