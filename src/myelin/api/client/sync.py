"""``/sync`` and the legacy ``/events`` and ``/initialSync`` that sync workers serve."""

from __future__ import annotations

from typing import Any

from myelin.domain import MatrixError
from myelin.handlers.filters import SyncFilter
from myelin.handlers.room_reads import stream_token
from myelin.handlers.serialize import legacy_client_format
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
    room_id = request.query_str("room_id")
    if room_id is None and requester.is_guest:
        # Guests may only use /events to preview a room.
        raise MatrixError(400, "M_UNKNOWN", "Guest users must specify room_id param")
    if room_id is not None:
        # Only a room the requester may read (as a member, or world-readable).
        await hs.room_reads.membership_for_read(requester, room_id)
    since_text = request.query_str("from")
    since = parse_since(since_text) if since_text else hs.streams.current_token()
    timeout = request.query_int("timeout", 30_000, minimum=0) or 0
    limit = request.query_int("limit", 100)
    if limit is None or limit < 0:
        raise MatrixError(400, "M_INVALID_PARAM", "limit must not be negative")
    # (Only validated: a smaller timeline would skip the oldest new events.)
    body = await hs.sync.sync(requester, since, timeout, False, "online",
                              SyncFilter.parse({"room": {"timeline": {"limit": 100}}}))
    chunk: list[dict[str, Any]] = []
    for section in ("join", "leave"):
        for rid, room in body["rooms"][section].items():
            if room_id is not None and rid != room_id:
                continue
            for event in room.get("timeline", {}).get("events", []):
                event.setdefault("room_id", rid)
                chunk.append(legacy_client_format(event))
            for key in ("ephemeral", "account_data"):
                for event in room.get(key, {}).get("events", []):
                    chunk.append({**event, "room_id": rid})
    if room_id is None:
        chunk.extend(body.get("account_data", {}).get("events", []))
        # The legacy presence event names its user in the content too.
        chunk.extend({**event, "content": {**event["content"], "user_id": event["sender"]}}
                     for event in body.get("presence", {}).get("events", []))
    return {"chunk": chunk, "start": str(since), "end": body["next_batch"]}


@routes.get(client_path("/initialSync", LEGACY), affinity="user")
async def initial_sync(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    limit = request.query_int("limit", 10, minimum=0, maximum=100) or 0
    archived = request.query_bool("archived", False)
    return await request.hs.initial_sync.initial_sync(requester, limit, archived)


@routes.get(client_path("/rooms/{roomId}/initialSync", LEGACY), affinity="user")
async def room_initial_sync(request: Request) -> dict[str, Any]:
    limit = request.query_int("limit", 10, minimum=0, maximum=100) or 0
    requester = await request.requester(allow_guest=True)
    return await request.hs.initial_sync.room_initial_sync(requester, request.param("roomId"),
                                                           limit)


__all__ = ["routes", "stream_token"]
