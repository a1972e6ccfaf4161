"""Creating local events and persisting them: the one write path for rooms.

Every event a local user causes goes through :meth:`EventCreationHandler.send`:
pick prev_events and auth_events from the room's current state, build and
sign the PDU, run the room version's auth rules, and persist. Work on one
room is serialised by a per-room lock (so forward extremities and state
never fork locally); different rooms proceed in parallel.

:class:`EventPersister` is the piece that a fleet moves onto the `events`
stream writers: events in, stream positions out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from myelin.events.auth import AuthError, auth_types_for_event, check_auth
from myelin.events.canonical import CanonicalJSONError, encode_canonical_json
from myelin.events.event import Event
from myelin.events.room_versions import RoomVersion
from myelin.events.signing import sign_event
from myelin.events.state_res import resolve_state_v2
from myelin.http.errors import MatrixError, forbidden, not_found, too_large
from myelin.storage.stores.events import StateMap, StoredEvent

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

MAX_PDU_SIZE = 65536
MAX_PREV_EVENTS = 10


@dataclass(frozen=True)
class PendingEvent:
    """An authorised event on its way to the database."""

    event: Event
    state_before: StateMap | None  # None: continue from the previous event of the batch
    prev_group: int | None = None
    txn_key: tuple[str, str, str] | None = None


@dataclass(frozen=True)
class SentEvent:
    event: Event
    stream_ordering: int
    state_after: StateMap


class RoomLocks:
    """One asyncio lock per room, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, room_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(room_id, (asyncio.Lock(), 0))
        self._locks[room_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[room_id]
            if users <= 1:
                del self._locks[room_id]
            else:
                self._locks[room_id] = (lock, users - 1)


class EventPersister:
    """Writes events with their state, and announces their stream positions."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.events

    async def state_before(self, room_id: str, prev_event_ids: list[str],
                           room_version: RoomVersion) -> tuple[StateMap, int | None]:
        """The room state before a new event with these prev_events, and the
        state group to build on (None if it had to be resolved afresh)."""
        if not prev_event_ids:
            return {}, None
        groups = await self.store.get_state_group_for_events(prev_event_ids)
        distinct = sorted(set(groups.values()))
        if len(distinct) == 1:
            return await self.store.get_state_for_group(distinct[0]), distinct[0]
        state_sets = [await self.store.get_state_for_group(g) for g in distinct]
        event_map = await self._load_auth_closure(state_sets)
        resolved = resolve_state_v2(room_version, state_sets, event_map)
        return dict(resolved), None

    async def _load_auth_closure(self, state_sets: list[StateMap]) -> dict[str, Event]:
        pending = {eid for s in state_sets for eid in s.values()}
        loaded: dict[str, Event] = {}
        while pending:
            fetched = await self.store.get_events(pending)
            pending = set()
            for event_id, stored in fetched.items():
                loaded[event_id] = stored.event
                pending.update(a for a in stored.event.auth_event_ids if a not in loaded)
        return loaded

    async def persist(self, event: Event, state_before: StateMap, prev_group: int | None,
                      txn_key: tuple[str, str, str] | None = None) -> SentEvent:
        """Persist one event whose state before it is ``state_before``."""
        (sent,) = await self.persist_batch([PendingEvent(event, state_before, prev_group,
                                                         txn_key)])
        return sent

    async def persist_batch(self, batch: Sequence[PendingEvent],
                            new_room: tuple[str, str, bool] | None = None,
                            ) -> list[SentEvent]:
        """Persist events of one room in order, in one transaction: all or none.

        Each event's state is built on the previous one's when its
        ``state_before`` is None. ``new_room`` (version, creator, public)
        creates the room in the same transaction. Returns stream positions in
        order; they are announced only after the commit.
        """
        generator = self.hs.streams.events_id_gen
        results: list[tuple[PendingEvent, int, int, StateMap]] = []
        async with generator.transaction() as ptxn:
            if new_room is not None:
                version, creator, is_public = new_room
                first = batch[0].event
                await self.store.store_room(ptxn.txn, first.room_id, version, creator,
                                            is_public, first.origin_server_ts)
            state: StateMap = {}
            group: int | None = None
            for pending in batch:
                event = pending.event
                if pending.state_before is not None:
                    state, group = dict(pending.state_before), pending.prev_group
                replaces_state = None
                delta: StateMap = {}
                if event.state_key is not None:
                    key = (event.type, event.state_key)
                    replaces_state = state.get(key)
                    state[key] = event.event_id
                    delta[key] = event.event_id
                if delta or group is None:
                    group = await self.store.store_state_group(
                        ptxn.txn, event.room_id, event.event_id, group, delta, state)
                position = await self.store.persist_event(
                    ptxn, event, instance_name=self.hs.config.instance_name, state_group=group,
                    replaces_state=replaces_state, txn_key=pending.txn_key)
                results.append((pending, position, group, dict(state)))
        sent: list[SentEvent] = []
        users: set[str] = set()
        for pending, position, group, state_after in results:
            event = pending.event
            self.store.event_persisted(StoredEvent(event, position, group, None,
                                                   pending.txn_key))
            if event.state_key is not None:
                self.store.remember_current_state(event.room_id, state_after)
                if event.type == "m.room.member":
                    users.add(event.state_key)
            sent.append(SentEvent(event, position, state_after))
        self.hs.notifier.notify(rooms={p.event.room_id for p in batch}, users=users)
        return sent


class EventCreationHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.events
        self.locks = RoomLocks()

    @cached_property
    def _signing_key(self) -> Any:
        from myelin.events.signing import SigningKey

        key = self.hs.signing_key
        return SigningKey(key.encode(), key.version)

    async def room_version(self, room_id: str) -> RoomVersion:
        version = await self.store.get_room_version(room_id)
        if version is None:
            raise not_found("Unknown room")
        return version

    def build_and_sign(self, room_version: RoomVersion, fields: dict[str, Any]) -> Event:
        pdu = dict(fields)
        if not room_version.implicit_room_creator:
            pdu.setdefault("origin", self.hs.server_name)
        try:
            signed = sign_event(pdu, self.hs.server_name, self._signing_key, room_version)
            size = len(encode_canonical_json(signed))
        except CanonicalJSONError as e:
            raise MatrixError(400, "M_BAD_JSON", f"Invalid event content: {e}") from None
        if size > MAX_PDU_SIZE:
            raise too_large(f"Event is {size} bytes; the limit is {MAX_PDU_SIZE}")
        return Event(signed, room_version)

    async def send(self, sender: str, room_id: str, etype: str, content: dict[str, Any], *,
                   state_key: str | None = None, txn_key: tuple[str, str, str] | None = None,
                   redacts: str | None = None, extra_check: Any = None) -> SentEvent:
        """Create, authorise and persist one event in an existing room."""
        room_version = await self.room_version(room_id)
        async with self.locks.hold(room_id):
            if txn_key is not None:
                # The servlet already looked in the database; under the room
                # lock only a concurrent retry in this process can have won.
                existing = self.store.get_recent_txn_event(*txn_key)
                if existing is not None:
                    stored = await self.store.get_event(existing)
                    assert stored is not None
                    return SentEvent(stored.event, stored.stream_ordering, {})
            prev_events = (await self.store.get_forward_extremities(room_id))[-MAX_PREV_EVENTS:]
            state_before, prev_group = await self.hs.persister.state_before(
                room_id, prev_events, room_version)
            if extra_check is not None:
                await extra_check(state_before)
            auth_ids = self._auth_event_ids(room_version, etype, state_key, sender, content,
                                            state_before)
            depth = await self.store.get_max_depth(prev_events)
            fields: dict[str, Any] = {
                "room_id": room_id, "sender": sender, "type": etype, "content": content,
                "prev_events": prev_events, "auth_events": auth_ids, "depth": depth + 1,
                "origin_server_ts": int(time.time() * 1000),
            }
            if state_key is not None:
                fields["state_key"] = state_key
            if redacts is not None:
                if room_version.updated_redaction_rules:
                    fields["content"] = {**content, "redacts": redacts}
                else:
                    fields["redacts"] = redacts
            event = self.build_and_sign(room_version, fields)
            await self.check_auth(event, state_before)
            return await self.hs.persister.persist(event, state_before, prev_group, txn_key)

    @staticmethod
    def _auth_event_ids(room_version: RoomVersion, etype: str, state_key: str | None,
                        sender: str, content: dict[str, Any], state: StateMap) -> list[str]:
        keys = auth_types_for_event(etype, state_key, sender, content, room_version)
        return [state[k] for k in keys if k in state]

    async def auth_map(self, event: Event, state_before: StateMap) -> dict[tuple[str, str], Event]:
        keys = set(auth_types_for_event(event.type, event.state_key, event.sender, event.content,
                                        event.room_version))
        keys.add(("m.room.create", ""))
        ids = {k: state_before[k] for k in keys if k in state_before}
        loaded = await self.store.get_events(ids.values())
        return {k: loaded[eid].event for k, eid in ids.items() if eid in loaded}

    async def check_auth(self, event: Event, state_before: StateMap) -> None:
        try:
            check_auth(event, await self.auth_map(event, state_before))
        except AuthError as e:
            raise forbidden(str(e)) from None
