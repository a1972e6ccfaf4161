"""Room servlets: create, send, state, redact, membership, history, members."""

from __future__ import annotations

from typing import Any

from myelin.domain import MatrixError, Requester, bad_json, check_not_suspended
from myelin.http.request import Request
from myelin.http.routing import LEGACY, RouteTable, client_path, client_v1_path

routes = RouteTable("client")



@routes.post(client_path("/createRoom", LEGACY), stream="events")
async def create_room(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    check_not_suspended(requester)
    body = await request.json(allow_empty=True)
    room_id, alias = await request.hs.room_creation.create_room(requester, body)
    response: dict[str, Any] = {"room_id": room_id}
    if alias:
        response["room_alias"] = alias
    return response


def _event_content(body: dict[str, Any]) -> dict[str, Any]:
    return body


@routes.put(client_path("/rooms/{roomId}/send/{eventType}/{txnId}", LEGACY),
            stream="events", affinity="room")
@routes.post(client_path("/rooms/{roomId}/send/{eventType}", LEGACY),
             stream="events", affinity="room")
async def send_event(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    hs = request.hs
    room_id, etype = request.param("roomId"), request.param("eventType")
    if etype != "m.room.redaction":  # a suspended user may still redact their own
        check_not_suspended(requester)
    body = await request.json(allow_empty=True)
    txn_key, existing = await _transaction(request, requester)
    if existing is not None:
        return {"event_id": existing}
    if not hs.appservices.exempt_from_ratelimit(requester):
        await hs.admin_users.check_message_rate(requester.user_id)
    await hs.membership.require_joined(requester.user_id, room_id)
    await hs.relations.check_new_relation(room_id, body)
    if await hs.admin_users.is_shadow_banned(requester.user_id):
        return {"event_id": hs.admin_users.fake_event_id()}
    sent = await hs.event_creation.send(requester.user_id, room_id, etype, body,
                                        txn_key=txn_key)
    return {"event_id": sent.event.event_id}


async def _transaction(request: Request, requester: Requester,
                       ) -> tuple[tuple[str, str, str] | None, str | None]:
    """The (user, device, txnId) key of a request, and the event it already
    sent if this is a retry: a retried PUT answers the first event's id."""
    txn_id = request.params.get("txnId")
    if not txn_id:
        return None, None
    txn_key = (requester.user_id, requester.device_id or "", txn_id)
    return txn_key, await request.hs.event_creation.previous_txn_event(txn_key)


@routes.put(client_path("/rooms/{roomId}/state/{eventType}/{stateKey?}", LEGACY),
            stream="events", affinity="room")
async def put_state(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    check_not_suspended(requester)
    hs = request.hs
    room_id, etype = request.param("roomId"), request.param("eventType")
    state_key = request.params.get("stateKey", "")
    body = await request.json(allow_empty=True)
    if etype == "m.room.member":
        membership = body.get("membership")
        if not isinstance(membership, str):
            raise bad_json("membership is required")
        sent = await hs.membership.update_membership(
            requester, room_id, state_key, membership, reason=body.get("reason"),
            extra_content={k: v for k, v in body.items() if k not in ("membership",)})
        return {"event_id": sent.event.event_id}
    await hs.membership.require_joined(requester.user_id, room_id)
    if etype == "m.room.canonical_alias" and state_key == "":
        await hs.directory.check_canonical_alias(room_id, body)
    if await hs.admin_users.is_shadow_banned(requester.user_id):
        return {"event_id": hs.admin_users.fake_event_id()}
    event_id = await hs.event_creation.set_state(requester.user_id, room_id, etype, state_key,
                                                 body)
    if etype == "m.room.guest_access" and body.get("guest_access") != "can_join":
        await hs.membership.kick_guests(room_id)
    return {"event_id": event_id}


@routes.get(client_path("/rooms/{roomId}/state/{eventType}/{stateKey?}", LEGACY),
            affinity="room")
async def get_state_event(request: Request) -> Any:
    requester = await request.requester(allow_guest=True)
    stored = await request.hs.room_reads.get_state_event(
        requester, request.param("roomId"), request.param("eventType"),
        request.params.get("stateKey", ""))
    if request.query_str("format") == "event":
        return await request.hs.serializer.serialize_one(stored)
    return stored.event.content


@routes.get(client_path("/rooms/{roomId}/state", LEGACY), affinity="room")
async def get_state(request: Request) -> Any:
    requester = await request.requester(allow_guest=True)
    events = await request.hs.room_reads.get_state(requester, request.param("roomId"))
    return 200, events


@routes.put(client_path("/rooms/{roomId}/redact/{eventId}/{txnId}", LEGACY),
            stream="events", affinity="room")
@routes.post(client_path("/rooms/{roomId}/redact/{eventId}/{txnId}", LEGACY),
             stream="events", affinity="room")
@routes.post(client_path("/rooms/{roomId}/redact/{eventId}", LEGACY),
             stream="events", affinity="room")
async def redact(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    hs = request.hs
    room_id, event_id = request.param("roomId"), request.param("eventId")
    body = await request.json(allow_empty=True)
    txn_key, existing = await _transaction(request, requester)
    if existing is not None:
        return {"event_id": existing}
    await hs.membership.require_joined(requester.user_id, room_id)
    sent = await hs.redactions.redact(requester, room_id, event_id, body, txn_key)
    return {"event_id": sent.event.event_id}


# -- membership ---------------------------------------------------------------

async def _own_membership(request: Request, room_id_or_alias: str,
                          membership: str) -> dict[str, Any]:
    """Join or knock on a room for the requester, by room id or alias."""
    requester = await request.requester(allow_guest=membership == "join")
    check_not_suspended(requester)
    body = await request.json(allow_empty=True)
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise bad_json("reason must be a string")
    room_id, servers = await request.hs.membership.resolve_room_and_servers(room_id_or_alias)
    # The servers to reach a room of another server through (`server_name`
    # is the older name of `via`).
    servers = [*request.query.getall("via", []), *request.query.getall("server_name", []),
               *servers]
    # Keys the client adds beyond the spec's go into the member event (as
    # Synapse does); `third_party_signed` is a request, not content.
    extra = {k: v for k, v in body.items()
             if k not in ("reason", "membership", "third_party_signed")}
    if membership == "join" and body.get("third_party_signed") is not None:
        # Proof of an emailed invite: exchanged for a real invite first.
        signed = body["third_party_signed"]
        sender = signed.get("sender") if isinstance(signed, dict) else None
        if not isinstance(sender, str):
            raise bad_json("third_party_signed needs sender, mxid, token and signatures")
        await request.hs.third_party_invites.exchange(sender, requester.user_id, room_id,
                                                      signed)
    await request.hs.membership.update_membership(requester, room_id, requester.user_id,
                                                  membership, reason=reason,
                                                  extra_content=extra, servers=servers)
    return {"room_id": room_id}


@routes.post(client_path("/join/{roomIdOrAlias}", LEGACY), stream="events", affinity="room")
async def join_by_id_or_alias(request: Request) -> dict[str, Any]:
    return await _own_membership(request, request.param("roomIdOrAlias"), "join")


@routes.post(client_path("/rooms/{roomId}/join", LEGACY), stream="events", affinity="room")
async def join_room(request: Request) -> dict[str, Any]:
    return await _own_membership(request, request.param("roomId"), "join")


@routes.post(client_path("/knock/{roomIdOrAlias}", LEGACY), stream="events", affinity="room")
async def knock(request: Request) -> dict[str, Any]:
    return await _own_membership(request, request.param("roomIdOrAlias"), "knock")


def _membership_servlet(action: str, membership: str, needs_target: bool) -> None:
    async def handler(request: Request) -> dict[str, Any]:
        requester = await request.requester(allow_guest=action == "leave")
        if action == "invite":
            check_not_suspended(requester)
        body = await request.json(allow_empty=action in ("leave", "forget"))
        room_id = request.param("roomId")
        if action == "forget":
            await request.hs.membership.forget(requester, room_id)
            return {}
        target: Any = requester.user_id
        if action == "invite" and "user_id" not in body and "id_server" in body:
            if not await request.hs.admin_users.is_shadow_banned(requester.user_id):
                await request.hs.identity.invite(requester, room_id, body)
            return {}
        if needs_target:
            target = body.get("user_id")
            if not isinstance(target, str):
                raise MatrixError(400, "M_BAD_JSON", "user_id is required")
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise bad_json("reason must be a string")
        if action == "invite" and await request.hs.admin_users.is_shadow_banned(
                requester.user_id):
            return {}  # a shadow-banned user's invites seem to work and reach nobody
        await request.hs.membership.change_member(requester, room_id, target, action,
                                                  membership, reason=reason)
        return {}

    handler.__name__ = f"membership_{action}"
    routes.post(client_path(f"/rooms/{{roomId}}/{action}", LEGACY),
                stream=None if action == "forget" else "events", affinity="room")(handler)


for _action, _membership, _needs_target in (
        ("invite", "invite", True), ("leave", "leave", False), ("forget", "leave", False),
        ("kick", "leave", True), ("ban", "ban", True), ("unban", "leave", True)):
    _membership_servlet(_action, _membership, _needs_target)


# -- reading ------------------------------------------------------------------

@routes.get(client_path("/rooms/{roomId}/messages", LEGACY), affinity="room")
async def messages(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    direction = request.query_str("dir", "b")
    if direction not in ("b", "f"):
        raise MatrixError(400, "M_INVALID_PARAM", "dir must be b or f")
    event_filter = request.query_json("filter")
    limit = request.query_int("limit", 10, minimum=0, maximum=1000) or 10
    if event_filter and isinstance(event_filter.get("limit"), int):
        limit = max(1, min(event_filter["limit"], 1000))
    return await request.hs.room_reads.paginate(
        requester, request.param("roomId"), from_token=request.query_str("from"),
        to_token=request.query_str("to"), backwards=direction == "b", limit=limit,
        event_filter=event_filter)


@routes.get(client_path("/rooms/{roomId}/context/{eventId}", LEGACY), affinity="room")
async def context(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    limit = request.query_int("limit", 10, minimum=0, maximum=100) or 0
    return await request.hs.room_reads.context(requester, request.param("roomId"),
                                               request.param("eventId"), limit,
                                               request.query_json("filter"))


@routes.get(client_path("/rooms/{roomId}/event/{eventId}", LEGACY), affinity="room")
async def get_event(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    stored = await request.hs.room_reads.get_event(requester, request.param("roomId"),
                                                   request.param("eventId"))
    return await request.hs.serializer.serialize_one(stored, user_id=requester.user_id,
                                                     device_id=requester.device_id)


@routes.get(client_path("/rooms/{roomId}/members", LEGACY), affinity="room")
async def members(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    chunk = await request.hs.room_reads.members(
        requester, request.param("roomId"), at=request.query_str("at"),
        membership=request.query_str("membership"),
        not_membership=request.query_str("not_membership"))
    return {"chunk": chunk}


@routes.get(client_path("/rooms/{roomId}/joined_members", LEGACY), affinity="room")
async def joined_members(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    return await request.hs.room_reads.joined_members(requester, request.param("roomId"))


@routes.get(client_path("/joined_rooms", LEGACY))
async def joined_rooms(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    return {"joined_rooms": await request.hs.membership.joined_rooms(requester.user_id)}


@routes.get(client_v1_path("/rooms/{roomId}/timestamp_to_event"), affinity="room")
async def timestamp_to_event(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    room_id = request.param("roomId")
    ts = request.query_int("ts")
    direction = request.query_str("dir")
    if ts is None or direction not in ("f", "b"):
        raise MatrixError(400, "M_INVALID_PARAM", "ts and dir (f|b) are required")
    return await request.hs.room_reads.event_at_timestamp(requester, room_id, ts,
                                                          direction == "f")
