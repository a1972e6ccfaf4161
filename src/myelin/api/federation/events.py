"""Serving the room DAG to other servers: ``/event``, ``/state``,
``/state_ids``, ``/event_auth``, ``/backfill``, ``/get_missing_events`` and
``/timestamp_to_event`` (all v1).

Only to servers in the room (a user of theirs joined now) and not denied by
its ``m.room.server_acl``; events their users could not see (history
visibility ``joined``/``invited`` with none of their users joined/invited
at the event) are served redacted, as the spec says for servers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from myelin.domain import MatrixError, bad_json, forbidden, missing_param, not_found
from myelin.events.event import Event
from myelin.events.redaction import prune_event_dict
from myelin.federation.auth import authenticate_request
from myelin.http.request import Request
from myelin.http.routing import PathPattern, RouteTable
from myelin.storage.stores.events import StateMap

routes = RouteTable("federation")

MAX_BACKFILL = 100
MAX_MISSING = 20


def _v1(path: str) -> PathPattern:
    return PathPattern("/_matrix/federation", ("v1",), path)


async def _allowed_origin(request: Request, room_id: str) -> str:
    origin = await authenticate_request(request)
    fed = request.hs.federation_events
    await fed.check_server_acl(room_id, origin)
    if await request.hs.stores.rooms.get_room_version(room_id) is None:
        raise not_found("Unknown room")
    if not await fed.server_in_room(room_id, origin):
        raise forbidden("Server is not in the room")
    return origin


async def _event_in_room(request: Request, room_id: str, event_id: str) -> Event:
    stored = await request.hs.stores.events.get_event(event_id)
    if stored is None or stored.event.room_id != room_id:
        raise not_found("Event not found")
    return stored.event


def _envelope(request: Request, pdus: list[dict[str, Any]]) -> dict[str, Any]:
    return {"origin": request.hs.server_name, "origin_server_ts": int(time.time() * 1000),
            "pdus": pdus}


async def _visible_pdus(request: Request, origin: str, events: Iterable[Event],
                        ) -> list[dict[str, Any]]:
    """PDUs of ``events`` as ``origin`` may see them (redacted where it may not)."""
    hs = request.hs
    suffix = ":" + origin
    out = []
    for event in events:
        state = await hs.stores.state.get_state_after_event(event.event_id)
        visible = True
        if state is not None:
            hv_id = state.get(("m.room.history_visibility", ""))
            hv = "shared"
            if hv_id is not None:
                hv_event = await hs.stores.events.get_event(hv_id)
                if hv_event is not None:
                    hv = str(hv_event.event.content.get("history_visibility", "shared"))
            if hv in ("joined", "invited"):
                allowed = ("join", "invite") if hv == "invited" else ("join",)
                member_ids = [e for (t, k), e in state.items()
                              if t == "m.room.member" and k.endswith(suffix)]
                members = await hs.stores.events.get_events(member_ids)
                visible = any(m.event.membership in allowed for m in members.values())
        pdu = event.get_pdu_json()
        if not visible:
            pdu = prune_event_dict(pdu, event.room_version)
        out.append(pdu)
    return out


@routes.get(_v1("/event/{eventId}"))
async def get_event(request: Request) -> dict[str, Any]:
    origin = await authenticate_request(request)
    stored = await request.hs.stores.events.get_event(request.param("eventId"))
    if stored is None:
        raise not_found("Event not found")
    event = stored.event
    fed = request.hs.federation_events
    await fed.check_server_acl(event.room_id, origin)
    if not await fed.server_in_room(event.room_id, origin):
        raise forbidden("Server is not in the room")
    return _envelope(request, await _visible_pdus(request, origin, [event]))


async def _state_at(request: Request, event: Event) -> StateMap:
    """The room state before ``event``."""
    state = await request.hs.stores.state.get_state_after_event(event.event_id)
    if state is None:
        raise not_found("The state at that event is unknown")
    if event.state_key is not None and state.get((event.type, event.state_key)) == \
            event.event_id:
        replaced = event.unsigned.get("replaces_state")
        if isinstance(replaced, str):
            state[(event.type, event.state_key)] = replaced
        else:
            del state[(event.type, event.state_key)]
    return state


async def _auth_chain(request: Request, event_ids: Iterable[str]) -> list[Event]:
    store = request.hs.stores.events
    seen: dict[str, Event] = {}
    pending = set(event_ids)
    while pending:
        loaded = await store.get_events(pending)
        pending = set()
        for stored in loaded.values():
            for auth_id in stored.event.auth_event_ids:
                if auth_id not in seen:
                    pending.add(auth_id)
        for event_id, stored in loaded.items():
            seen.setdefault(event_id, stored.event)
        pending -= set(seen)
    return sorted(seen.values(), key=lambda e: e.depth)


async def _state_request(request: Request) -> tuple[StateMap, list[Event]]:
    room_id = request.param("roomId")
    await authenticate_request(request)
    event_id = request.query_str("event_id")
    if not event_id:  # before looking at the room (sytest asks so)
        raise missing_param("event_id is required")
    await _allowed_origin(request, room_id)
    event = await _event_in_room(request, room_id, event_id)
    state = await _state_at(request, event)
    chain_roots = [a for e in (await request.hs.stores.events.get_events(state.values())).values()
                   for a in e.event.auth_event_ids]
    return state, await _auth_chain(request, chain_roots)


@routes.get(_v1("/state/{roomId}"))
async def get_state(request: Request) -> dict[str, Any]:
    state, chain = await _state_request(request)
    loaded = await request.hs.stores.events.get_events(state.values())
    return {"pdus": [loaded[i].event.get_pdu_json() for i in state.values() if i in loaded],
            "auth_chain": [e.get_pdu_json() for e in chain]}


@routes.get(_v1("/state_ids/{roomId}"))
async def get_state_ids(request: Request) -> dict[str, Any]:
    state, chain = await _state_request(request)
    return {"pdu_ids": list(state.values()), "auth_chain_ids": [e.event_id for e in chain]}


@routes.get(_v1("/event_auth/{roomId}/{eventId}"))
async def get_event_auth(request: Request) -> dict[str, Any]:
    room_id = request.param("roomId")
    await _allowed_origin(request, room_id)
    event = await _event_in_room(request, room_id, request.param("eventId"))
    chain = await _auth_chain(request, event.auth_event_ids)
    return {"auth_chain": [e.get_pdu_json() for e in chain]}


async def _walk_back(request: Request, room_id: str, start: Iterable[str], limit: int,
                     stop: set[str], min_depth: int, include_start: bool) -> list[Event]:
    """Events reached from ``start`` through prev_events (``start`` itself
    included or not), nearest first, never past ``stop`` or below ``min_depth``."""
    store = request.hs.stores.events
    found: dict[str, Event] = {}
    candidates: dict[str, Event] = {}

    async def add(ids: Iterable[str]) -> None:
        wanted = [i for i in dict.fromkeys(ids)
                  if i not in found and i not in candidates and i not in stop]
        if wanted:
            for event_id, stored in (await store.get_events(wanted)).items():
                if stored.event.room_id == room_id:
                    candidates[event_id] = stored.event

    if include_start:
        await add(start)
    else:
        roots = await store.get_events(list(start))
        await add(p for s in roots.values() if s.event.room_id == room_id
                  for p in s.event.prev_event_ids)
    while candidates and len(found) < limit:
        # Deepest first, so the nearest history comes back before the oldest.
        event_id = max(candidates, key=lambda i: (candidates[i].depth, i))
        event = candidates.pop(event_id)
        if event.depth < min_depth:
            continue
        found[event_id] = event
        await add(event.prev_event_ids)
    return list(found.values())


@routes.get(_v1("/backfill/{roomId}"))
async def backfill(request: Request) -> dict[str, Any]:
    room_id = request.param("roomId")
    origin = await _allowed_origin(request, room_id)
    starts = request.raw.query.getall("v", [])
    if not starts:
        raise missing_param("v is required")
    limit = request.query_int("limit", 10, minimum=0, maximum=MAX_BACKFILL) or 0
    events = await _walk_back(request, room_id, starts, limit, set(), 0, include_start=True)
    return _envelope(request, await _visible_pdus(request, origin, events))


@routes.post(_v1("/get_missing_events/{roomId}"))
async def get_missing_events(request: Request) -> dict[str, Any]:
    room_id = request.param("roomId")
    origin = await _allowed_origin(request, room_id)
    body = await request.json()
    earliest = body.get("earliest_events", [])
    latest = body.get("latest_events", [])
    limit = body.get("limit", 10)
    min_depth = body.get("min_depth", 0)
    if not (isinstance(earliest, list) and isinstance(latest, list)
            and all(isinstance(e, str) for e in [*earliest, *latest])):
        raise bad_json("earliest_events and latest_events must be lists of event ids")
    if isinstance(limit, bool) or not isinstance(limit, int) or \
            isinstance(min_depth, bool) or not isinstance(min_depth, int):
        raise bad_json("limit and min_depth must be integers")
    limit = max(0, min(limit, MAX_MISSING))
    events = await _walk_back(request, room_id, latest, limit, set(earliest), min_depth,
                              include_start=False)
    events.sort(key=lambda e: e.depth)
    return {"events": await _visible_pdus(request, origin, events)}


@routes.get(_v1("/timestamp_to_event/{roomId}"))
async def timestamp_to_event(request: Request) -> dict[str, Any]:
    room_id = request.param("roomId")
    await _allowed_origin(request, room_id)
    ts = request.query_int("ts")
    direction = request.query_str("dir")
    if ts is None:
        raise missing_param("ts is required")
    if direction not in ("f", "b"):
        raise MatrixError(400, "M_INVALID_PARAM", "dir must be f or b")
    event_id = await request.hs.stores.events.get_event_at_ts(room_id, ts, direction == "f")
    if event_id is None:
        raise not_found(f"No event found {'after' if direction == 'f' else 'before'} {ts}")
    stored = await request.hs.stores.events.get_event(event_id)
    assert stored is not None
    return {"event_id": event_id, "origin_server_ts": stored.event.origin_server_ts}
