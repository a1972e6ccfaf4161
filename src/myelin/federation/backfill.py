"""Backfill: history older than anything stored, from other servers in the room.

When a client paginates ``/messages`` past the room's earliest stored event,
the room's persister asks servers in the room for the events before its
backward extremities (``GET /backfill``), checks each like any other PDU
(signatures, hash, auth events, the state before it) and stores them with
negative stream orderings, deepest first, so they sort before the room's
earliest events and ``/messages`` continues through them in topological
order. Backfilled events never change the room's current state or its
forward extremities, and are not sent to clients' ``/sync``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from myelin.domain import MatrixError
from myelin.events.auth import AuthError, check_auth
from myelin.events.event import Event
from myelin.storage.stores.events import StateMap

if TYPE_CHECKING:
    from myelin.federation.event_handler import FederationEventHandler

logger = logging.getLogger(__name__)

MAX_BACKFILL = 100


def _servers_to_try(server_names: list[str], own: str) -> list[str]:
    return [s for s in dict.fromkeys(server_names) if s != own]


async def backfill_room(handler: FederationEventHandler, room_id: str, before: list[str],
                        limit: int) -> int:
    """Fetch and store up to ``limit`` events before ``before`` (the room lock
    is held). Returns how many events were stored."""
    from myelin.federation.event_handler import RejectedEvent, _v1

    hs = handler.hs
    room_version = await hs.stores.rooms.get_room_version(room_id)
    if room_version is None or not before:
        return 0
    members = await hs.stores.memberships.get_members(room_id, ("join",))
    servers = _servers_to_try(sorted(m.user_id.split(":", 1)[1] for m in members),
                              hs.server_name)
    limit = max(1, min(limit, MAX_BACKFILL))
    for server in servers:
        try:
            answer = await handler._client.get_json(
                server, _v1("/backfill", room_id), {"v": before, "limit": str(limit)})
        except Exception as e:
            logger.info("backfill of %s from %s failed: %s", room_id, server, e)
            continue
        pdus = answer.get("pdus") if isinstance(answer, dict) else None
        if not isinstance(pdus, list) or not pdus:
            continue
        checked: dict[str, Event] = {}
        for pdu in pdus[:limit * 2]:
            try:
                event = await handler.check_pdu(server, pdu, room_version)
            except MatrixError as e:
                logger.info("dropping a backfilled event from %s: %s", server, e.message)
                continue
            if event.room_id == room_id:
                checked[event.event_id] = event
        timeline = await hs.stores.state.get_state_group_for_events(list(checked))
        rejected = await handler.store.get_rejections(list(checked))
        fresh = [e for i, e in checked.items() if i not in timeline and i not in rejected]
        accepted: list[tuple[Event, StateMap]] = []
        state_after: dict[str, StateMap] = {}
        for event in sorted(fresh, key=lambda e: (e.depth, e.origin_server_ts)):
            try:
                state_before = await _state_before(handler, server, event, state_after)
                await handler._check_auth_events(server, event)
                try:
                    check_auth(event, await handler._auth_map(event, state_before))
                except AuthError as e:
                    await handler._reject(event, f"against the state before it: {e}")
            except (RejectedEvent, MatrixError) as e:
                logger.info("backfilled event %s not stored: %s", event.event_id, e)
                continue
            after = dict(state_before)
            if event.state_key is not None:
                after[(event.type, event.state_key)] = event.event_id
            state_after[event.event_id] = after
            accepted.append((event, state_before))
        if accepted:
            await _write(handler, accepted, state_after)
            # Outliers among them (the state a join brought) are timeline
            # events now, with a position and a state: caches must reload them.
            await hs.invalidate_cache("events", [e.event_id for e, _ in accepted])
            return len(accepted)
    return 0


async def _state_before(handler: FederationEventHandler, server: str, event: Event,
                        batch_state: dict[str, StateMap]) -> StateMap:
    """The state before a backfilled event: from its prevs we hold (stored or
    earlier in this batch), otherwise the state at it from ``server``."""
    hs = handler.hs
    prevs = event.prev_event_ids
    groups = await hs.stores.state.get_state_group_for_events(list(prevs))
    sets: list[StateMap] = []
    for prev in prevs:
        if prev in batch_state:
            sets.append(batch_state[prev])
        elif prev in groups:
            sets.append(await hs.stores.state.get_state_for_group(groups[prev]))
        else:
            try:
                return await _remote_state_at(handler, server, event)
            except Exception as e:  # the server will not say: use the oldest state we know
                logger.info("no state at backfilled %s from %s (%s): using the room's"
                            " earliest known state", event.event_id, server, e)
                return await _earliest_known_state(handler, event.room_id)
    if not sets:
        return {}
    if len(sets) == 1:
        return dict(sets[0])
    return await handler._resolve(event.room_version, sets, [])


async def _earliest_known_state(handler: FederationEventHandler, room_id: str) -> StateMap:
    """The state before the room's oldest timeline event we hold the state of
    (for a room we joined: the state the join brought)."""
    found = await handler.store.get_earliest_state_group(room_id)
    if found is None:
        return await handler.hs.stores.state.get_current_state_ids(room_id)
    group, event_id = found
    state = await handler.hs.stores.state.get_state_for_group(group)
    stored = await handler.events.get_event(event_id)
    if stored is not None and stored.event.state_key is not None:
        key = (stored.event.type, stored.event.state_key)
        replaced = stored.event.unsigned.get("replaces_state")
        if isinstance(replaced, str):
            state[key] = replaced
        elif state.get(key) == event_id:
            del state[key]
    return state


async def _remote_state_at(handler: FederationEventHandler, server: str,
                           event: Event) -> StateMap:
    from myelin.federation.event_handler import _v1

    answer = await handler._client.get_json(server, _v1("/state_ids", event.room_id),
                                            {"event_id": event.event_id})
    state_ids = [i for i in answer.get("pdu_ids", []) if isinstance(i, str)]
    auth_ids = [i for i in answer.get("auth_chain_ids", []) if isinstance(i, str)]
    wanted = list(dict.fromkeys(state_ids + auth_ids))
    have = await handler.store.has_events(wanted)
    pdus = await handler._fetch_events(server, [i for i in wanted if i not in have])
    await handler._store_fetched_outliers(server, event.room_version, pdus)
    loaded = await handler.events.get_events(state_ids)
    return {(s.event.type, s.event.state_key): i for i, s in loaded.items()
            if s.event.state_key is not None}


async def _write(handler: FederationEventHandler, accepted: list[tuple[Event, StateMap]],
                 state_after: dict[str, StateMap]) -> None:
    hs = handler.hs
    async with hs.db.transaction("persist_backfill") as txn:
        positions = await handler.store.allocate_negative_positions(txn, len(accepted))
        # The deepest event gets the highest (least negative) position.
        by_depth = sorted((e for e, _ in accepted), key=lambda e: (e.depth, e.origin_server_ts),
                          reverse=True)
        position_of = {e.event_id: p for e, p in zip(by_depth, positions, strict=True)}
        for event, _ in accepted:
            after = state_after[event.event_id]
            group = await hs.stores.state.store_state_group(
                txn, event.room_id, event.event_id, None, after, after)
            await handler.store.write_offstream_event(
                txn, event, position_of[event.event_id],
                instance_name=hs.config.instance_name, outlier=False, state_group=group)


