"""End-to-end encryption keys: ``/keys/upload``, ``/keys/query``, ``/keys/claim``,
``/keys/changes``, cross-signing key and signature uploads."""

from __future__ import annotations

from typing import Any

from myelin.domain import missing_param
from myelin.http.request import Request
from myelin.http.routing import RouteTable, client_path

routes = RouteTable("client")


@routes.post(client_path("/keys/upload"), client_path("/keys/upload/{deviceId}"),
             stream="device_lists")
async def upload(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    body = await request.json()
    return await request.hs.e2e_keys.upload(requester, body)


@routes.post(client_path("/keys/query"))
async def query(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    body = await request.json()
    return await request.hs.e2e_keys.query(requester, body)


@routes.post(client_path("/keys/claim"))
async def claim(request: Request) -> dict[str, Any]:
    await request.requester(allow_guest=True)
    body = await request.json()
    return await request.hs.e2e_keys.claim(body)


@routes.get(client_path("/keys/changes"))
async def changes(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    from_token = request.query_str("from")
    if not from_token:
        raise missing_param("Missing from")
    return await request.hs.e2e_keys.changes(requester, from_token, request.query_str("to"))


@routes.post(client_path("/keys/device_signing/upload", ("v3",)),
             client_path("/keys/device_signing/upload", ("unstable",)), stream="device_lists")
async def device_signing_upload(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    body = await request.json()
    await request.hs.e2e_keys.upload_cross_signing(requester, body, request.raw.path)
    return {}


@routes.post(client_path("/keys/signatures/upload", ("v3",)),
             client_path("/keys/signatures/upload", ("unstable",)), stream="device_lists")
async def signatures_upload(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    body = await request.json()
    return await request.hs.e2e_keys.upload_signatures(requester, body)
