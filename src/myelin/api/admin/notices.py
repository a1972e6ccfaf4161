"""Synapse's ``v1/send_server_notice`` (and its idempotent PUT form with a
transaction id): a notice from the server's notice user to one local user
(handlers/admin/notices.py). Admins only, on main."""

from __future__ import annotations

from typing import Any

from myelin.api.admin.common import admin, body_of
from myelin.domain import MatrixError, missing_param
from myelin.http.request import Request
from myelin.http.routing import RouteTable, plain_path

routes = RouteTable("client")

V1 = "/_synapse/admin/v1"
# PUT retries with the same transaction id answer the first event (per process:
# admin routes are served by main only).
_sent: dict[tuple[str, str], str] = {}


@routes.post(plain_path(V1, "/send_server_notice"), main_only=True)
async def send_notice(request: Request) -> dict[str, Any]:
    await admin(request)
    return await _send(request)


@routes.put(plain_path(V1, "/send_server_notice/{txnId}"), main_only=True)
async def send_notice_txn(request: Request) -> dict[str, Any]:
    requester = await admin(request)
    key = (requester.access_token, request.param("txnId"))
    if key in _sent:
        return {"event_id": _sent[key]}
    out = await _send(request)
    _sent[key] = out["event_id"]
    return out


async def _send(request: Request) -> dict[str, Any]:
    body = await body_of(request)
    user_id = body.get("user_id")
    content = body.get("content")
    if not isinstance(user_id, str):
        raise missing_param("Missing param 'user_id'")
    if not isinstance(content, dict):
        raise missing_param("Missing param 'content'")
    etype = body.get("type", "m.room.message")
    state_key = body.get("state_key")
    if not isinstance(etype, str) or (state_key is not None and not isinstance(state_key, str)):
        raise MatrixError(400, "M_BAD_JSON", "type and state_key must be strings")
    event_id = await request.hs.server_notices.send(user_id, content, etype, state_key)
    return {"event_id": event_id}
