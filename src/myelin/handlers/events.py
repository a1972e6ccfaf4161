"""Creating local events and persisting them: the one write path for rooms.

Every event a local user causes goes through :meth:`EventCreationHandler.send`:
pick prev_events and auth_events from the room's current state, build and
sign the PDU, run the room version's auth rules, and persist. In a fleet
the *whole* create-authorise-persist runs on the room's event persister
(the `events` writer its room id hashes to): a process that is not it
forwards the request there over HTTP replication (:class:`SendEvent`). So
one process, under one per-room lock, picks a room's prev_events, computes
its state and moves its forward extremities: two workers sending into the
same room at once are serialised there, and a room's state never forks
locally. Different rooms proceed in parallel, on one persister or several.

:class:`EventPersister` writes batches of one room's events (createRoom's
initial events go through :class:`PersistBatch` to the new room's writer).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError, forbidden, not_found, too_large
from myelin.events.auth import (
    AuthError,
    auth_types_for_event,
    check_auth,
    get_named_level,
    get_user_power_level,
)
from myelin.events.canonical import CanonicalJSONError, encode_canonical_json
from myelin.events.event import Event
from myelin.events.room_versions import EventFormat, RoomVersion, get_room_version
from myelin.events.signing import sign_event
from myelin.events.state_res import resolve_state_by_depth, resolve_state_v2
from myelin.handlers.indexers import EventIndexer, load_indexers
from myelin.replication.http import RETRY_KEY, ReplicationEndpoint
from myelin.storage.stores.events import StateMap, StoredEvent

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)

MAX_PDU_SIZE = 65536
MAX_PREV_EVENTS = 10

# A check that needs the room state right before the new event, so it must
# run on the persister under the room lock; named so it can travel.
Precheck = dict[str, Any]


@dataclass(frozen=True)
class PendingEvent:
    """An authorised event on its way to the database."""

    event: Event
    state_before: StateMap | None  # None: continue from the previous event of the batch
    prev_group: int | None = None
    txn_key: tuple[str, str, str] | None = None
    # The room's current state after this event when it is not simply the
    # state after it: a remote event on a fork (federation/event_handler.py).
    current_state: StateMap | None = None


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


def _state_to_wire(state: StateMap | None) -> list[list[str]] | None:
    return None if state is None else [[t, k, e] for (t, k), e in state.items()]


def _state_from_wire(raw: list[list[str]] | None) -> StateMap | None:
    return None if raw is None else {(t, k): e for t, k, e in raw}


def _sent_to_wire(sent: SentEvent) -> dict[str, Any]:
    return {"event": sent.event.get_pdu_json(), "event_id": sent.event.event_id,
            "room_version": sent.event.room_version.identifier,
            "stream_ordering": sent.stream_ordering}


def _sent_from_wire(raw: dict[str, Any]) -> SentEvent:
    event = Event(raw["event"], get_room_version(raw["room_version"]),
                  event_id=raw["event_id"])
    return SentEvent(event, int(raw["stream_ordering"]), {})


class SendEvent(ReplicationEndpoint):
    """Create, authorise and persist an event on its room's persister."""

    NAME = "send_event"
    STREAM = "events"
    SHARD_BY = "room_id"

    @staticmethod
    async def handle(hs: HomeServer, p: dict[str, Any]) -> Any:
        txn_key = tuple(p["txn_key"]) if p.get("txn_key") else None
        sent = await hs.event_creation.send_here(
            p["sender"], p["room_id"], p["type"], p["content"], state_key=p.get("state_key"),
            txn_key=txn_key, redacts=p.get("redacts"), precheck=p.get("precheck"),
            retried=bool(p.get(RETRY_KEY)))
        return _sent_to_wire(sent)


class PersistBatch(ReplicationEndpoint):
    """Persist events already built and authorised (a new room's first events)."""

    NAME = "persist_batch"
    STREAM = "events"
    SHARD_BY = "room_id"

    @staticmethod
    async def handle(hs: HomeServer, p: dict[str, Any]) -> Any:
        version = get_room_version(p["room_version"])
        batch = [PendingEvent(Event(e["event"], version, event_id=e["event_id"]),
                              _state_from_wire(e["state_before"]), e.get("prev_group"),
                              tuple(e["txn_key"]) if e.get("txn_key") else None)
                 for e in p["events"]]
        new_room = tuple(p["new_room"]) if p.get("new_room") else None
        sent = await hs.persister.persist_batch_here(batch, new_room)  # type: ignore[arg-type]
        return [_sent_to_wire(s) for s in sent]


class EventPersister:
    """Writes events with their state, and announces their stream positions."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.events

    @cached_property
    def indexers(self) -> list[EventIndexer]:
        return load_indexers(self.hs)

    async def state_before(self, room_id: str, prev_event_ids: list[str],
                           room_version: RoomVersion) -> tuple[StateMap, int | None]:
        """The room state before a new event with these prev_events, and the
        state group to build on (None if it had to be resolved afresh)."""
        if not prev_event_ids:
            return {}, None
        groups = await self.hs.stores.state.get_state_group_for_events(prev_event_ids)
        distinct = sorted(set(groups.values()))
        if len(distinct) == 1:
            return await self.hs.stores.state.get_state_for_group(distinct[0]), distinct[0]
        state_sets = [await self.hs.stores.state.get_state_for_group(g) for g in distinct]
        event_map = await self._load_auth_closure(state_sets)
        if room_version.state_res != 2:  # v1/v2 rooms: forks only come from federation
            return resolve_state_by_depth(state_sets, event_map), None
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

    async def _rewrite_current_state(self, txn: Any, room_id: str, state: StateMap) -> None:
        """A fork was resolved: the current state (and memberships) become ``state``."""
        members = {k: e for k, e in state.items() if k[0] == "m.room.member"}
        loaded = await self.store.get_events(members.values())
        await self.hs.stores.federation.rewrite_current_state(
            txn, room_id, state, [(s.event, s.stream_ordering) for s in loaded.values()])

    async def persist(self, event: Event, state_before: StateMap, prev_group: int | None,
                      txn_key: tuple[str, str, str] | None = None) -> SentEvent:
        """Persist one event whose state before it is ``state_before`` (on the
        room's persister: this process; the caller fences)."""
        (sent,) = await self.persist_batch_here([PendingEvent(event, state_before, prev_group,
                                                              txn_key)])
        return sent

    async def persist_batch(self, batch: Sequence[PendingEvent],
                            new_room: tuple[str, str, bool] | None = None,
                            ) -> list[SentEvent]:
        """Persist events of one room on the room's persister (maybe this process)."""
        first = batch[0].event
        if self.hs.roles.is_writer("events", first.room_id):
            return await self.persist_batch_here(batch, new_room, fence=True)
        payload = {
            "room_id": first.room_id, "room_version": first.room_version.identifier,
            "new_room": list(new_room) if new_room else None,
            "events": [{"event": p.event.get_pdu_json(), "event_id": p.event.event_id,
                        "state_before": _state_to_wire(p.state_before),
                        "prev_group": p.prev_group,
                        "txn_key": list(p.txn_key) if p.txn_key else None} for p in batch],
        }
        answer = await self.hs.replication.call(PersistBatch, payload)
        return [_sent_from_wire(raw) for raw in answer]

    async def persist_batch_here(self, batch: Sequence[PendingEvent],
                                 new_room: tuple[str, str, bool] | None = None,
                                 fence: bool = False) -> list[SentEvent]:
        """Persist events of one room in order, in one transaction: all or none.

        Each event's state is built on the previous one's when its
        ``state_before`` is None. ``new_room`` (version, creator, public)
        creates the room in the same transaction. Returns stream positions in
        order; they are announced only after the commit.
        """
        self.hs.event_creation.check_writers_agree()
        if new_room is None:
            return await self._persist_batch(batch, None, fence)
        # Two createRooms can make the same room id (v12: the hash of identical
        # create events); all creates of one id come here, so the lock makes
        # "is it taken?" and "take it" one step.
        async with self.hs.event_creation.locks.hold(batch[0].event.room_id):
            if await self.hs.stores.rooms.get_room_version(batch[0].event.room_id) is not None:
                raise MatrixError(409, "M_UNKNOWN", "That room id is taken",
                                  room_id_taken=True)
            return await self._persist_batch(batch, new_room, fence)

    async def _persist_batch(self, batch: Sequence[PendingEvent],
                             new_room: tuple[str, str, bool] | None, fence: bool,
                             ) -> list[SentEvent]:
        generator = self.hs.streams.events_id_gen
        results: list[tuple[PendingEvent, int, int, StateMap]] = []
        async with generator.transaction() as ptxn:
            if new_room is not None:
                version, creator, is_public = new_room
                first = batch[0].event
                await self.hs.stores.rooms.store_room(ptxn.txn, first.room_id, version, creator,
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
                    group = await self.hs.stores.state.store_state_group(
                        ptxn.txn, event.room_id, event.event_id, group, delta, state)
                position = await self.store.persist_event(
                    ptxn, event, instance_name=self.hs.config.instance_name, state_group=group,
                    replaces_state=replaces_state, txn_key=pending.txn_key)
                for indexer in self.indexers:
                    await indexer.index_event(ptxn.txn, event, state, position)
                if pending.current_state is not None:
                    await self._rewrite_current_state(ptxn.txn, event.room_id,
                                                      pending.current_state)
                results.append((pending, position, group, dict(pending.current_state)
                                if pending.current_state is not None else dict(state)))
        sent: list[SentEvent] = []
        for pending, position, group, state_after in results:
            event = pending.event
            self.store.event_persisted(StoredEvent(event, position, group, None,
                                                   pending.txn_key))
            if event.state_key is not None or pending.current_state is not None:
                self.hs.stores.state.remember_current_state(event.room_id, state_after)
            sent.append(SentEvent(event, position, state_after))
        if fence and sent:
            # Readers (and wake-ups) follow the stream: answer once it is here.
            await self.hs.streams.view.wait_for("events", self.hs.config.instance_name,
                                                sent[-1].stream_ordering)
        return sent


def _reference_hashes(event: Event | None) -> dict[str, Any]:
    sha256 = event.hashes.get("sha256") if event is not None else None
    return {"sha256": sha256} if isinstance(sha256, str) else {}


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

    def check_writers_agree(self) -> None:
        """Refuse to persist while the fleet disagrees on who writes which room."""
        reason = self.hs.follower.may_write("events")
        if reason is not None:
            raise MatrixError(503, "M_UNKNOWN",
                              f"Event persisters are being reconfigured ({reason});"
                              " try again shortly.")

    async def room_version(self, room_id: str) -> RoomVersion:
        version = await self.hs.stores.rooms.get_room_version(room_id)
        if version is None:
            raise not_found("Unknown room")
        return version

    def build_and_sign(self, room_version: RoomVersion, fields: dict[str, Any],
                       references: Mapping[str, Event] | None = None) -> Event:
        """Sign a new event. In room versions 1 and 2 (event format 1) the
        event id is chosen by its server and prev/auth events are
        ``[event_id, {"sha256": content hash}]`` pairs, so ``references``
        must hold the events ``fields`` names."""
        pdu = dict(fields)
        if not room_version.implicit_room_creator:
            pdu.setdefault("origin", self.hs.server_name)
        if room_version.event_format == EventFormat.V1:
            # v1/v2 event ids are chosen by the origin, not hashed.
            pdu.setdefault("event_id", f"${secrets.token_urlsafe(18)}:{self.hs.server_name}")
            known = references or {}
            for key in ("prev_events", "auth_events"):
                pdu[key] = [[eid, _reference_hashes(known.get(eid))]
                            for eid in pdu.get(key, [])]
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
                   redacts: str | None = None, precheck: Precheck | None = None) -> SentEvent:
        """Create, authorise and persist one event in an existing room, on the
        room's persister (this process or another)."""
        if self.hs.roles.is_writer("events", room_id):
            sent = await self.send_here(sender, room_id, etype, content, state_key=state_key,
                                        txn_key=txn_key, redacts=redacts, precheck=precheck)
            await self.hs.streams.view.wait_for("events", self.hs.config.instance_name,
                                                sent.stream_ordering)
            return sent
        await self.room_version(room_id)  # 404 here rather than on the persister
        answer = await self.hs.replication.call(SendEvent, {
            "sender": sender, "room_id": room_id, "type": etype, "content": content,
            "state_key": state_key, "txn_key": list(txn_key) if txn_key else None,
            "redacts": redacts, "precheck": precheck})
        return _sent_from_wire(answer)

    async def send_here(self, sender: str, room_id: str, etype: str, content: dict[str, Any],
                        *, state_key: str | None = None,
                        txn_key: tuple[str, str, str] | None = None,
                        redacts: str | None = None, precheck: Precheck | None = None,
                        retried: bool = False) -> SentEvent:
        """The persister's part of :meth:`send` (persisting refuses while the
        fleet disagrees on the writers: :meth:`check_writers_agree`)."""
        room_version = await self.room_version(room_id)
        async with self.locks.hold(room_id):
            if txn_key is not None:
                # A local servlet already looked in the database, so under the
                # room lock only a concurrent retry here can have won; a call
                # over replication may be a retry after we restarted: look again.
                existing = (await self.store.get_txn_event(*txn_key) if retried
                            else self.store.get_recent_txn_event(*txn_key))
                if existing is not None:
                    stored = await self.store.get_event(existing)
                    assert stored is not None
                    return SentEvent(stored.event, stored.stream_ordering, {})
            prev_events = (await self.store.get_forward_extremities(room_id))[-MAX_PREV_EVENTS:]
            state_before, prev_group = await self.hs.persister.state_before(
                room_id, prev_events, room_version)
            if precheck is not None:
                await self._run_precheck(precheck, state_before)
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
            references: dict[str, Event] = {}
            if room_version.event_format == EventFormat.V1:
                loaded = await self.store.get_events([*prev_events, *auth_ids])
                references = {eid: stored.event for eid, stored in loaded.items()}
            event = self.build_and_sign(room_version, fields, references)
            await self.check_auth(event, state_before)
            if etype == "m.room.member" and state_key is not None \
                    and content.get("membership") == "invite" and not self.hs.is_mine(state_key):
                # The invitee's server counter-signs an invite before it exists here.
                event = await self.hs.federation_membership.remote_invite(event, state_key)
            return await self.hs.persister.persist(event, state_before, prev_group, txn_key)

    async def _run_precheck(self, precheck: Precheck, state: StateMap) -> None:
        kind = precheck.get("kind")
        if kind == "not_banned":
            current = state.get(("m.room.member", precheck["user_id"]))
            if current is not None:
                stored = await self.store.get_event(current)
                if stored and stored.event.membership == "ban":
                    raise forbidden("You are banned from this room")
        elif kind == "may_redact":
            if precheck["target_sender"] == precheck["user_id"]:
                return
            keys = [("m.room.create", ""), ("m.room.power_levels", "")]
            loaded = await self.store.get_events([state[k] for k in keys if k in state])
            auth = {k: loaded[state[k]].event for k in keys if k in state
                    and state[k] in loaded}
            level = get_user_power_level(precheck["user_id"], auth)
            if level < get_named_level("redact", auth):
                raise forbidden("You don't have permission to redact events")
        else:
            raise ValueError(f"unknown precheck {kind!r}")

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

    async def previous_txn_event(self, txn_key: tuple[str, str, str]) -> str | None:
        """The event a (user, device, txnId) already sent, if any: a retried
        request answers the first one's event id instead of sending again."""
        return await self.store.get_txn_event(*txn_key)

    async def set_state(self, sender: str, room_id: str, etype: str, state_key: str,
                        content: dict[str, Any]) -> str:
        """Send a state event and return its id. Re-sending identical state is a
        no-op that returns the existing event."""
        current = await self.hs.stores.state.get_current_state_event(room_id, etype, state_key)
        if current is not None and current.content == content and current.sender == sender:
            return current.event_id
        sent = await self.send(sender, room_id, etype, content, state_key=state_key)
        return sent.event.event_id
