"""``/sync`` and the legacy ``/events`` and ``/initialSync`` that sync workers serve."""

from __future__ import annotations

from typing import Any

from myelin.domain import MatrixError
from myelin.handlers.filters import SyncFilter
from myelin.handlers.room_reads import stream_token
from myelin.handlers.sync import parse_since
from myelin.http.request import Request
from myelin.http.routing import LEGACY, RouteTable, client_path

routes = RouteTable("client")



@routes.get(client_path("/sync"), affinity="user")
async def sync(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    hs = request.hs
    since = parse_since(request.query_str("since"))
    timeout = request.query_int("timeout", 0, minimum=0) or 0
    full_state = request.query_bool("full_state", False)
    set_presence = request.query_str("set_presence", "online") or "online"
    if set_presence not in ("online", "offline", "unavailable"):
        raise MatrixError(400, "M_INVALID_PARAM", "set_presence must be online, offline "
                                                  "or unavailable")
    sync_filter = await hs.filters.resolve(requester.user_id, request.query_str("filter"))
    return await hs.sync.sync(requester, since, timeout, full_state, set_presence, sync_filter)


@routes.get(client_path("/events", LEGACY), affinity="user")
async def events(request: Request) -> dict[str, Any]:
    """The legacy event stream: new timeline events since ``from``."""
    requester = await request.requester(allow_guest=True)
    hs = request.hs
    since_text = request.query_str("from")
    since = parse_since(since_text) if since_text else hs.streams.current_token()
    timeout = request.query_int("timeout", 30_000, minimum=0) or 0
    body = await hs.sync.sync(requester, since, timeout, False, "online",
                              SyncFilter.parse({"room": {"timeline": {"limit": 100}}}))
    chunk: list[dict[str, Any]] = []
    for section in ("join", "leave"):
        for room_id, room in body["rooms"][section].items():
            for event in room.get("timeline", {}).get("events", []):
                event.setdefault("room_id", room_id)
                chunk.append(event)
            for event in room.get("ephemeral", {}).get("events", []):
                chunk.append({**event, "room_id": room_id})
    chunk.extend(body.get("presence", {}).get("events", []))
    return {"chunk": chunk, "start": str(since), "end": body["next_batch"]}


async def _room_initial_sync(request: Request, room_id: str, limit: int) -> dict[str, Any]:
    hs = request.hs
    requester = await request.requester(allow_guest=True)
    membership, _ = await hs.room_reads.membership_for_read(requester, room_id)
    messages = await hs.room_reads.paginate(requester, room_id, from_token=None, to_token=None,
                                            backwards=True, limit=limit, event_filter=None)
    messages["chunk"].reverse()
    messages["start"], messages["end"] = messages.get("end", messages["start"]), \
        messages["start"]
    state = await hs.room_reads.get_state(requester, room_id)
    visibility = "private"
    if await hs.stores.rooms.is_room_public(room_id):
        visibility = "public"
    account_data = await hs.stores.account_data.changed_since(
        requester.user_id, None, hs.streams.position("account_data"))
    return {
        "room_id": room_id,
        "membership": membership.membership if membership else "leave",
        "messages": messages,
        "state": state,
        "visibility": visibility,
        "presence": [],
        "account_data": [{"type": t, "content": c}
                         for t, c in account_data.get(room_id, {}).items()],
    }


@routes.get(client_path("/initialSync", LEGACY), affinity="user")
async def initial_sync(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    hs = request.hs
    limit = request.query_int("limit", 10, minimum=0, maximum=100) or 0
    rooms = []
    for membership in await hs.stores.memberships.get_rooms_for_user(
            requester.user_id, ("join", "invite")):
        if membership.membership == "invite":
            rooms.append({"room_id": membership.room_id, "membership": "invite"})
            continue
        rooms.append(await _room_initial_sync(request, membership.room_id, limit))
    account_data = await hs.stores.account_data.changed_since(
        requester.user_id, None, hs.streams.position("account_data"))
    return {
        "end": str(hs.streams.current_token()),
        "rooms": rooms,
        "presence": [],
        "account_data": [{"type": t, "content": c} for t, c in account_data.get("", {}).items()],
    }


@routes.get(client_path("/rooms/{roomId}/initialSync", LEGACY), affinity="user")
async def room_initial_sync(request: Request) -> dict[str, Any]:
    limit = request.query_int("limit", 10, minimum=0, maximum=100) or 0
    return await _room_initial_sync(request, request.param("roomId"), limit)


__all__ = ["routes", "stream_token"]
