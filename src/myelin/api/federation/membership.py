"""Membership handshakes other servers make with us: make_join/send_join,
make_leave/send_leave, make_knock/send_knock, invite and
exchange_third_party_invite (``hs.federation_membership``).

v1 of send_join, send_leave and invite answer ``[200, body]``, as the spec
keeps them for older servers; v2 answers the body.
"""

from __future__ import annotations

from typing import Any

from myelin.domain import MatrixError, bad_json
from myelin.federation.auth import authenticate_request
from myelin.http.request import Request
from myelin.http.routing import PathPattern, RouteTable

routes = RouteTable("federation")

V1 = ("v1",)
V2 = ("v2",)


def _fed(versions: tuple[str, ...], path: str) -> PathPattern:
    return PathPattern("/_matrix/federation", versions, path)


def _versions(request: Request) -> list[str]:
    # A server that names no versions is an old one: room version 1 only.
    versions = request.query.getall("ver", [])
    return [str(v) for v in versions] or ["1"]


async def _body(request: Request) -> dict[str, Any]:
    body = await request.json()
    if not isinstance(body, dict):
        raise bad_json("The body must be an object")
    return body


@routes.get(_fed(V1, "/make_join/{roomId}/{userId}"), affinity="room")
async def make_join(request: Request) -> dict[str, Any]:
    origin = await authenticate_request(request)
    return await request.hs.federation_membership.make_membership(
        origin, request.param("roomId"), request.param("userId"), "join", _versions(request))


@routes.get(_fed(V1, "/make_leave/{roomId}/{userId}"), affinity="room")
async def make_leave(request: Request) -> dict[str, Any]:
    origin = await authenticate_request(request)
    return await request.hs.federation_membership.make_membership(
        origin, request.param("roomId"), request.param("userId"), "leave", None)


@routes.get(_fed(V1, "/make_knock/{roomId}/{userId}"), affinity="room")
async def make_knock(request: Request) -> dict[str, Any]:
    origin = await authenticate_request(request)
    return await request.hs.federation_membership.make_membership(
        origin, request.param("roomId"), request.param("userId"), "knock", _versions(request))


async def _send(request: Request, membership: str) -> tuple[Any, Any, Any]:
    origin = await authenticate_request(request)
    body = await _body(request)
    fm = request.hs.federation_membership
    event, state = await fm.send_membership(origin, request.param("roomId"),
                                            request.param("eventId"), body, membership)
    return fm, event, state


@routes.put(_fed(V1, "/send_join/{roomId}/{eventId}"), stream="events", affinity="room")
async def send_join_v1(request: Request) -> list[Any]:
    fm, event, state = await _send(request, "join")
    answer = await fm.join_response(event, state, include_event=False)
    return [200, {k: answer[k] for k in ("origin", "state", "auth_chain")}]


@routes.put(_fed(V2, "/send_join/{roomId}/{eventId}"), stream="events", affinity="room")
async def send_join_v2(request: Request) -> dict[str, Any]:
    # omit_members may be asked; we answer in full (members_omitted: false).
    fm, event, state = await _send(request, "join")
    signed_by_us = request.hs.server_name in event.signatures and \
        request.hs.is_mine(str(event.content.get("join_authorised_via_users_server", "")))
    answer: dict[str, Any] = await fm.join_response(event, state, include_event=signed_by_us)
    return answer


@routes.put(_fed(V1, "/send_leave/{roomId}/{eventId}"), stream="events", affinity="room")
async def send_leave_v1(request: Request) -> list[Any]:
    await _send(request, "leave")
    return [200, {}]


@routes.put(_fed(V2, "/send_leave/{roomId}/{eventId}"), stream="events", affinity="room")
async def send_leave_v2(request: Request) -> dict[str, Any]:
    await _send(request, "leave")
    return {}


@routes.put(_fed(V1, "/send_knock/{roomId}/{eventId}"), stream="events", affinity="room")
async def send_knock(request: Request) -> dict[str, Any]:
    fm, event, _ = await _send(request, "knock")
    return {"knock_room_state": await fm.knock_room_state(event.room_id)}


@routes.put(_fed(V1, "/invite/{roomId}/{eventId}"), stream="events", affinity="room")
async def invite_v1(request: Request) -> list[Any]:
    origin = await authenticate_request(request)
    body = await _body(request)
    # v1 carries no room version: it serves rooms of version 1 (and 2, alike here).
    version = "1"
    unsigned = body.get("unsigned")
    stripped = unsigned.get("invite_room_state") if isinstance(unsigned, dict) else None
    answer = await request.hs.federation_membership.on_invite(
        origin, request.param("roomId"), request.param("eventId"), body, version, stripped)
    return [200, answer]


@routes.put(_fed(V2, "/invite/{roomId}/{eventId}"), stream="events", affinity="room")
async def invite_v2(request: Request) -> dict[str, Any]:
    origin = await authenticate_request(request)
    body = await _body(request)
    event, version = body.get("event"), body.get("room_version")
    if not isinstance(event, dict) or not isinstance(version, str):
        raise MatrixError(400, "M_BAD_JSON", "event and room_version are required")
    answer: dict[str, Any] = await request.hs.federation_membership.on_invite(
        origin, request.param("roomId"), request.param("eventId"), event, version,
        body.get("invite_room_state"))
    return answer


@routes.put(_fed(V1, "/3pid/onbind"), stream="events")
@routes.post(_fed(V1, "/3pid/onbind"), stream="events")
async def third_party_onbind(request: Request) -> dict[str, Any]:
    """An identity server telling us an address with pending invites is now
    bound to one of our users (unauthenticated: the invites carry the
    identity server's signatures, checked against the rooms' own keys)."""
    body = await request.json()
    await request.hs.third_party_invites.on_bind(body)
    return {}


@routes.put(_fed(V1, "/exchange_third_party_invite/{roomId}"), stream="events",
            affinity="room")
async def exchange_third_party_invite(request: Request) -> dict[str, Any]:
    origin = await authenticate_request(request)
    body = await _body(request)
    await request.hs.federation_membership.exchange_third_party_invite(
        origin, request.param("roomId"), body)
    return {}
