"""Typing, receipts, read markers, presence and send-to-device."""

from __future__ import annotations

from typing import Any

from myelin.domain import MatrixError, bad_json, forbidden
from myelin.http.request import Request
from myelin.http.routing import LEGACY, RouteTable, client_path

routes = RouteTable("client")



@routes.put(client_path("/rooms/{roomId}/typing/{userId}", LEGACY), stream="typing",
            affinity="room")
async def typing(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    if request.param("userId") != requester.user_id:
        raise forbidden("Cannot set another user's typing state")
    body = await request.json()
    is_typing = body.get("typing")
    if not isinstance(is_typing, bool):
        raise bad_json("typing must be true or false")
    timeout = body.get("timeout")
    if is_typing and timeout is not None and (isinstance(timeout, bool)
                                              or not isinstance(timeout, int)):
        raise bad_json("timeout must be an integer")
    if await request.hs.admin_users.is_shadow_banned(requester.user_id):
        return {}  # seen by nobody
    await request.hs.typing.set_typing(requester.user_id, request.param("roomId"), is_typing,
                                       timeout)
    return {}


@routes.post(client_path("/rooms/{roomId}/receipt/{receiptType}/{eventId}", LEGACY),
             stream="receipts", affinity="room")
async def receipt(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    body = await request.json(allow_empty=True)
    thread_id = body.get("thread_id")
    await request.hs.receipts.send_receipt(requester.user_id, request.param("roomId"),
                                           request.param("receiptType"),
                                           request.param("eventId"), thread_id)
    return {}


@routes.post(client_path("/rooms/{roomId}/read_markers", LEGACY), stream="receipts",
             affinity="room")
async def read_markers(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    body = await request.json()
    room_id = request.param("roomId")
    handler = request.hs.receipts
    for key in ("m.fully_read", "m.read", "m.read.private"):
        event_id = body.get(key)
        if event_id is None:
            continue
        if not isinstance(event_id, str):
            raise bad_json(f"{key} must be an event ID")
        await handler.send_receipt(requester.user_id, room_id, key, event_id, None)
    return {}


@routes.put(client_path("/presence/{userId}/status", LEGACY), stream="presence")
async def set_presence(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    if request.param("userId") != requester.user_id:
        raise forbidden("Cannot set another user's presence")
    body = await request.json()
    state = body.get("presence")
    status_msg = body.get("status_msg")
    if not isinstance(state, str):
        raise bad_json("presence is required")
    if status_msg is not None and not isinstance(status_msg, str):
        raise bad_json("status_msg must be a string")
    await request.hs.presence.set_state(requester.user_id, state, status_msg)
    return {}


@routes.get(client_path("/presence/{userId}/status", LEGACY))
async def get_presence(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    return await request.hs.presence.presence_for(requester.user_id, request.param("userId"))


@routes.put(client_path("/sendToDevice/{eventType}/{txnId}", LEGACY), stream="to_device",
            affinity="user")
async def send_to_device(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    body = await request.json()
    messages = body.get("messages")
    if not isinstance(messages, dict):
        raise MatrixError(400, "M_BAD_JSON", "messages must be an object")
    await request.hs.to_device.send(requester.user_id, requester.device_id or "",
                                    request.param("eventType"), request.param("txnId"),
                                    messages)
    return {}
