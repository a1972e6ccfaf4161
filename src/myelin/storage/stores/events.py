"""The room stores: rooms, state, memberships and events, each owning its
tables and its caches.

Reads of immutable things (events by id, state group contents, room
versions) are cached per process without invalidation; what changes
(current state, memberships, extremities, redactions) is invalidated by the
``events`` rows every process follows, and replaced exactly by the room's
persister after each commit.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from myelin.events.event import Event
from myelin.events.room_versions import RoomVersion, get_room_version
from myelin.storage.caches import Cache, CacheRegistry
from myelin.storage.engines import Database, Transaction
from myelin.storage.id_generators import PositionTransaction
from myelin.storage.stream_rows import EventsRow

StateKey = tuple[str, str]
StateMap = dict[StateKey, str]

# A state group chain is cut with a full snapshot this often, bounding reads.
MAX_STATE_CHAIN = 50
RECENT_EVENTS_PER_ROOM = 200


def _type_matches(event_type: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(event_type, p) if "*" in p else event_type == p
               for p in patterns)


@dataclass(frozen=True)
class StoredEvent:
    """An event with what the read paths need to know about it, loaded at once:
    its place on the events stream, the state group after it, the redaction
    that redacted it (if any) and the transaction that sent it (if any)."""

    event: Event
    stream_ordering: int
    state_group: int | None = None
    redacted_by: str | None = None
    txn_key: tuple[str, str, str] | None = None


@dataclass(frozen=True)
class Membership:
    room_id: str
    user_id: str
    membership: str
    event_id: str
    stream_ordering: int


class RoomStore:
    """Rooms (version, creator, directory visibility), their aliases and member counts."""

    def __init__(self, db: Database, caches: CacheRegistry) -> None:
        self.db = db
        self._room_versions: Cache[str, RoomVersion] = caches.register("room_versions", 100_000)

    async def store_room(self, txn: Transaction, room_id: str, version: str, creator: str,
                         is_public: bool, created_ts: int) -> None:
        await txn.execute(
            "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts)"
            " VALUES (?, ?, ?, ?, ?)", room_id, version, creator, int(is_public), created_ts)

    async def get_room_version(self, room_id: str) -> RoomVersion | None:
        version: RoomVersion | None = self._room_versions.get(room_id)
        if version is None:
            identifier = await self.db.fetchval(
                "SELECT room_version FROM rooms WHERE room_id = ?", room_id)
            if identifier is None:
                return None
            version = get_room_version(identifier)
            self._room_versions.put(room_id, version)
        return version

    async def set_room_public(self, room_id: str, is_public: bool) -> None:
        await self.db.execute("UPDATE rooms SET is_public = ? WHERE room_id = ?",
                              int(is_public), room_id)

    async def is_room_public(self, room_id: str) -> bool:
        return bool(await self.db.fetchval("SELECT is_public FROM rooms WHERE room_id = ?",
                                           room_id))

    async def get_public_room_ids(self) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT room_id FROM rooms WHERE is_public = 1 ORDER BY created_ts")
        return [r[0] for r in rows]

    async def create_alias(self, alias: str, room_id: str, creator: str) -> bool:
        async with self.db.transaction() as txn:
            if await txn.fetchone("SELECT 1 FROM room_aliases WHERE room_alias = ?", alias):
                return False
            await txn.execute(
                "INSERT INTO room_aliases (room_alias, room_id, creator) VALUES (?, ?, ?)",
                alias, room_id, creator)
        return True

    async def get_alias(self, alias: str) -> tuple[str, str] | None:
        row = await self.db.fetchone(
            "SELECT room_id, creator FROM room_aliases WHERE room_alias = ?", alias)
        return (row[0], row[1]) if row else None

    async def delete_alias(self, alias: str) -> None:
        await self.db.execute("DELETE FROM room_aliases WHERE room_alias = ?", alias)

    async def get_aliases_for_room(self, room_id: str) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT room_alias FROM room_aliases WHERE room_id = ? ORDER BY room_alias", room_id)
        return [r[0] for r in rows]

    async def get_joined_member_counts(self, room_ids: Sequence[str]) -> dict[str, int]:
        """Number of joined members of each room (rooms with none are absent)."""
        out: dict[str, int] = {}
        for start in range(0, len(room_ids), 200):
            chunk = list(room_ids[start:start + 200])
            marks = ",".join("?" * len(chunk))
            rows = await self.db.fetchall(
                f"SELECT room_id, COUNT(*) FROM room_memberships WHERE membership = 'join'"
                f" AND room_id IN ({marks}) GROUP BY room_id", *chunk)
            out.update({r[0]: int(r[1]) for r in rows})
        return out


class StateStore:
    """State groups (the state after each event, stored as deltas) and each
    room's current state."""

    def __init__(self, db: Database, caches: CacheRegistry, instance_name: str) -> None:
        self.db = db
        self.instance_name = instance_name
        self.events: EventStore | None = None  # set by EventStore's owner
        self._state_groups: Cache[int, StateMap] = caches.register("state_groups", 5_000)
        self._chain_lengths: Cache[int, int] = caches.register("state_chain_lengths", 10_000)
        self._current_state: Cache[str, StateMap] = caches.register("current_state", 10_000)
        self._next_state_group = 0

    async def setup(self) -> None:
        value = await self.db.fetchval("SELECT MAX(id) FROM state_groups")
        self._next_state_group = int(value or 0)

    def on_events_rows(self, writer: str, rows: Sequence[tuple[int, EventsRow]]) -> None:
        """A state event written elsewhere changes the room's current state
        (the room's writer keeps its own exact: remember_current_state)."""
        if writer == self.instance_name:
            return
        for _, row in rows:
            if row.state_key is not None:
                self._current_state.invalidate(row.room_id)

    @staticmethod
    def write_current_state(txn: Transaction, event: Event) -> None:
        txn.defer(
            "INSERT INTO current_state_events (room_id, type, state_key, event_id)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (room_id, type, state_key)"
            " DO UPDATE SET event_id = excluded.event_id",
            event.room_id, event.type, event.state_key, event.event_id)

    async def get_state_group_for_events(self, event_ids: Sequence[str]) -> dict[str, int]:
        assert self.events is not None
        events = await self.events.get_events(event_ids)
        return {event_id: stored.state_group for event_id, stored in events.items()
                if stored.state_group is not None}

    async def get_state_for_group(self, group: int) -> StateMap:
        """The full state of a group (a fresh dict the caller may change)."""
        cached = self._state_groups.get(group)
        if cached is not None:
            return dict(cached)
        chain: list[int] = []
        current: int | None = group
        base: StateMap = {}
        while current is not None:
            hit = self._state_groups.get(current)
            if hit is not None:
                base = dict(hit)
                break
            chain.append(current)
            current = await self.db.fetchval(
                "SELECT prev_group FROM state_groups WHERE id = ?", current)
        for member in reversed(chain):
            rows = await self.db.fetchall(
                "SELECT type, state_key, event_id FROM state_groups_state WHERE state_group = ?",
                member)
            for etype, skey, event_id in rows:
                base[(etype, skey)] = event_id
            self._state_groups.put(member, dict(base))
        return dict(base)

    async def get_state_after_event(self, event_id: str) -> StateMap | None:
        groups = await self.get_state_group_for_events([event_id])
        if event_id not in groups:
            return None
        return await self.get_state_for_group(groups[event_id])

    async def store_state_group(self, txn: Transaction, room_id: str, event_id: str,
                                prev_group: int | None, delta: StateMap,
                                full_state: StateMap) -> int:
        """Store the state after ``event_id`` as a delta on ``prev_group``."""
        chain_length = 0
        if prev_group is not None:
            prev_len = self._chain_lengths.get(prev_group)
            if prev_len is None:
                prev_len = await txn.fetchval(
                    "SELECT chain_length FROM state_groups WHERE id = ?", prev_group)
            chain_length = int(prev_len or 0) + 1
            if chain_length > MAX_STATE_CHAIN:
                prev_group, chain_length, delta = None, 0, full_state
        else:
            delta = full_state
        if self.db.engine == "postgres":
            group = int(await txn.fetchval("SELECT nextval('state_group_id_seq')"))
        else:
            self._next_state_group += 1
            group = self._next_state_group
        txn.defer(
            "INSERT INTO state_groups (id, room_id, event_id, prev_group, chain_length)"
            " VALUES (?, ?, ?, ?, ?)", group, room_id, event_id, prev_group, chain_length)
        await txn.executemany(
            "INSERT INTO state_groups_state (state_group, type, state_key, event_id)"
            " VALUES (?, ?, ?, ?)", [(group, t, k, e) for (t, k), e in delta.items()])
        self._state_groups.put(group, dict(full_state))
        self._chain_lengths.put(group, chain_length)
        return group

    async def get_current_state_ids(self, room_id: str) -> StateMap:
        cached = self._current_state.get(room_id)
        if cached is not None:
            return dict(cached)
        rows = await self.db.fetchall(
            "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = ?",
            room_id)
        state = {(r[0], r[1]): r[2] for r in rows}
        self._current_state.put(room_id, state)
        return dict(state)

    async def get_current_state_event(self, room_id: str, etype: str, state_key: str = "",
                                      ) -> Event | None:
        state = await self.get_current_state_ids(room_id)
        event_id = state.get((etype, state_key))
        if event_id is None:
            return None
        assert self.events is not None
        stored = await self.events.get_event(event_id)
        return stored.event if stored else None

    def remember_current_state(self, room_id: str, state: StateMap) -> None:
        """The writer's exact current state after a commit."""
        self._current_state.put(room_id, dict(state))


class MembershipStore:
    """Who is in which room: per user and per room, cached, invalidated by
    ``events`` rows (and ``memberships`` rows on the caches stream)."""

    def __init__(self, db: Database, caches: CacheRegistry) -> None:
        self.db = db
        self._user_memberships: Cache[str, Any] = caches.register("user_memberships", 50_000)
        self._room_members: Cache[str, Any] = caches.register("room_members", 10_000)
        self._invalidations = 0
        caches.register_invalidator("memberships", self._invalidate_memberships)

    def on_events_rows(self, writer: str, rows: Sequence[tuple[int, EventsRow]]) -> None:
        for _, row in rows:
            if row.membership is not None and row.state_key is not None:
                self.invalidate_membership(row.room_id, row.state_key)

    @staticmethod
    def write_membership(txn: Transaction, event: Event, position: int) -> None:
        txn.defer(
            "INSERT INTO room_memberships (room_id, user_id, membership, event_id,"
            " stream_ordering, forgotten) VALUES (?, ?, ?, ?, ?, 0)"
            " ON CONFLICT (room_id, user_id) DO UPDATE SET"
            " membership = excluded.membership, event_id = excluded.event_id,"
            " stream_ordering = excluded.stream_ordering, forgotten = 0",
            event.room_id, event.state_key, str(event.membership), event.event_id, position)

    async def _memberships_of_user(self, user_id: str) -> list[tuple[Membership, bool]]:
        """Every membership of a user with its forgotten flag (cached per user)."""
        cached = self._user_memberships.get(user_id)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        generation = self._invalidations
        rows = await self.db.fetchall(
            "SELECT room_id, user_id, membership, event_id, stream_ordering, forgotten"
            " FROM room_memberships WHERE user_id = ?", user_id)
        result = [(Membership(*r[:5]), bool(r[5])) for r in rows]
        # A change that committed while we read may not be in `rows`: don't cache then.
        if generation == self._invalidations:
            self._user_memberships.put(user_id, result)
        return result

    async def _members_of_room(self, room_id: str) -> list[Membership]:
        cached = self._room_members.get(room_id)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        generation = self._invalidations
        rows = await self.db.fetchall(
            "SELECT room_id, user_id, membership, event_id, stream_ordering"
            " FROM room_memberships WHERE room_id = ?", room_id)
        result = [Membership(*r) for r in rows]
        if generation == self._invalidations:
            self._room_members.put(room_id, result)
        return result

    def _invalidate_memberships(self, keys: list[Any] | None) -> None:
        """A ``memberships`` row from the caches stream: [[room, user], ...]."""
        for room_id, user_id in keys or ():
            self.invalidate_membership(room_id, user_id)

    def invalidate_membership(self, room_id: str, user_id: str) -> None:
        """Called after a membership change commits (and, in a fleet, from the
        caches stream)."""
        self._invalidations += 1
        self._user_memberships.invalidate(user_id)
        self._room_members.invalidate(room_id)

    async def get_membership(self, room_id: str, user_id: str) -> Membership | None:
        for membership, _ in await self._memberships_of_user(user_id):
            if membership.room_id == room_id:
                return membership
        return None

    async def get_rooms_for_user(self, user_id: str, memberships: Sequence[str] = ("join",),
                                 include_forgotten: bool = False) -> list[Membership]:
        return [m for m, forgotten in await self._memberships_of_user(user_id)
                if m.membership in memberships and (include_forgotten or not forgotten)]

    async def get_members(self, room_id: str, memberships: Sequence[str] = ("join",),
                          ) -> list[Membership]:
        return [m for m in await self._members_of_room(room_id) if m.membership in memberships]

    async def forget_room(self, user_id: str, room_id: str) -> None:
        await self.db.execute(
            "UPDATE room_memberships SET forgotten = 1 WHERE user_id = ? AND room_id = ?",
            user_id, room_id)


class EventStore:
    """Events by id, the room graph's forward extremities, each room's recent
    events, transaction ids, and the write of an event (which hands the
    current state and memberships it changes to their stores)."""

    def __init__(self, db: Database, caches: CacheRegistry, instance_name: str,
                 state: StateStore, memberships: MembershipStore) -> None:
        self.db = db
        self.instance_name = instance_name
        self.state = state
        self.memberships = memberships
        # Fill the events cache from other writers' rows (processes serving clients).
        self.fill_from_rows = True
        # Immutable once loaded, except redactions (see on_events_rows).
        self._events: Cache[str, StoredEvent] = caches.register("events", 50_000)
        self._invalidations = 0
        self._extremities: Cache[str, list[str]] = caches.register("forward_extremities",
                                                                   10_000)
        self._recent_txns: Cache[tuple[str, str, str], str] = caches.register("event_txns",
                                                                              10_000)
        # room -> (complete_after, [(position, event_id, type, sender)]): the
        # newest events of each room this process has followed, for /sync.
        self._timelines: Cache[str, Any] = caches.register("room_timelines", 10_000)

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, StoredEvent]:
        wanted = list(dict.fromkeys(event_ids))
        found: dict[str, StoredEvent] = {}
        missing = []
        for event_id in wanted:
            cached = self._events.get(event_id)
            if cached is not None:
                found[event_id] = cached
            else:
                missing.append(event_id)
        for chunk_start in range(0, len(missing), 200):
            chunk = missing[chunk_start:chunk_start + 200]
            marks = ",".join("?" * len(chunk))
            generation = self._invalidations
            rows = await self.db.fetchall(
                f"SELECT e.event_id, e.json, e.stream_ordering, r.room_version, e.replaces_state,"
                f" sg.state_group, red.event_id, t.user_id, t.device_id, t.txn_id"
                f" FROM events e JOIN rooms r ON r.room_id = e.room_id"
                f" LEFT JOIN event_to_state_groups sg ON sg.event_id = e.event_id"
                f" LEFT JOIN redactions red ON red.redacts = e.event_id"
                f" LEFT JOIN event_txn_ids t ON t.event_id = e.event_id"
                f" WHERE e.event_id IN ({marks})", *chunk)
            for (event_id, raw, stream_ordering, version, replaces_state, group, redacted_by,
                 txn_user, txn_device, txn_id) in rows:
                if event_id in found:
                    continue  # an event redacted twice: the first redaction is enough
                event = Event(orjson.loads(raw), get_room_version(version), event_id=event_id)
                if replaces_state:
                    event.unsigned["replaces_state"] = replaces_state
                txn_key = (txn_user, txn_device, txn_id) if txn_id is not None else None
                stored = StoredEvent(event, stream_ordering, group, redacted_by, txn_key)
                if generation == self._invalidations:
                    self._events.put(event_id, stored)
                found[event_id] = stored
        return found

    async def get_event(self, event_id: str) -> StoredEvent | None:
        return (await self.get_events([event_id])).get(event_id)

    async def get_forward_extremities(self, room_id: str) -> list[str]:
        cached = self._extremities.get(room_id)
        if cached is not None:
            return list(cached)
        generation = self._invalidations
        rows = await self.db.fetchall(
            "SELECT event_id FROM room_forward_extremities WHERE room_id = ?", room_id)
        extremities = [r[0] for r in rows]
        if generation == self._invalidations:
            self._extremities.put(room_id, extremities)
        return list(extremities)

    async def get_max_depth(self, event_ids: Sequence[str]) -> int:
        events = await self.get_events(event_ids)
        return max((e.event.depth for e in events.values()), default=0)

    async def get_room_stream_ids(self, room_id: str, *, from_pos: int | None, to_pos: int | None,
                                  backwards: bool, limit: int,
                                  types: Sequence[str] | None = None,
                                  not_types: Sequence[str] | None = None,
                                  senders: Sequence[str] | None = None,
                                  not_senders: Sequence[str] | None = None,
                                  ) -> list[tuple[str, int]]:
        """Event ids of a room in stream order. ``from_pos`` is exclusive going
        forwards, and the first position *not* returned going backwards."""
        if backwards and from_pos is not None and to_pos is not None:
            recent = self._recent_timeline(room_id, from_pos, to_pos, limit, types, not_types,
                                           senders, not_senders)
            if recent is not None:
                return recent
        clauses = ["room_id = ?", "outlier = 0"]  # purged state events are outliers
        args: list[Any] = [room_id]
        if backwards:
            if from_pos is not None:
                clauses.append("stream_ordering <= ?")
                args.append(from_pos)
            if to_pos is not None:
                clauses.append("stream_ordering > ?")
                args.append(to_pos)
        else:
            if from_pos is not None:
                clauses.append("stream_ordering > ?")
                args.append(from_pos)
            if to_pos is not None:
                clauses.append("stream_ordering <= ?")
                args.append(to_pos)
        for column, values, negate in (("type", types, False), ("type", not_types, True),
                                       ("sender", senders, False),
                                       ("sender", not_senders, True)):
            if values is None:
                continue
            if not values:
                if not negate:
                    return []
                continue
            exact = [v for v in values if "*" not in v]
            wildcards = [v.replace("*", "%") for v in values if "*" in v]
            parts = []
            if exact:
                parts.append(f"{column} IN ({','.join('?' * len(exact))})")
                args.extend(exact)
            for pattern in wildcards:
                parts.append(f"{column} LIKE ?")
                args.append(pattern)
            joined = " OR ".join(parts)
            clauses.append(f"NOT ({joined})" if negate else f"({joined})")
        order = "DESC" if backwards else "ASC"
        args.append(limit)
        rows = await self.db.fetchall(
            f"SELECT event_id, stream_ordering FROM events WHERE {' AND '.join(clauses)}"
            f" ORDER BY stream_ordering {order} LIMIT ?", *args)
        return [(r[0], r[1]) for r in rows]

    def _recent_timeline(self, room_id: str, upper: int, lower: int, limit: int,
                         types: Sequence[str] | None, not_types: Sequence[str] | None,
                         senders: Sequence[str] | None, not_senders: Sequence[str] | None,
                         ) -> list[tuple[str, int]] | None:
        """Serve an incremental sync's "events in (lower, upper]" from memory
        when this process holds every event of the room after ``lower``."""
        ring = self._timelines.get(room_id)
        if ring is None or lower < ring[0]:
            return None
        out: list[tuple[str, int]] = []
        for position, event_id, etype, sender in reversed(ring[1]):
            if position > upper:
                continue
            if position <= lower or len(out) >= limit:
                break
            if types is not None and not _type_matches(etype, types):
                continue
            if not_types and _type_matches(etype, not_types):
                continue
            if senders is not None and sender not in senders:
                continue
            if not_senders and sender in not_senders:
                continue
            out.append((event_id, position))
        return out

    async def count_events_between(self, room_id: str, lower: int, upper: int,
                                   types: Sequence[str], not_sender: str) -> int:
        """How many events of ``types`` not sent by ``not_sender`` are in (lower, upper]."""
        ring = self._timelines.get(room_id)
        if ring is not None and lower >= ring[0]:
            count = 0
            for position, _, etype, sender in reversed(ring[1]):
                if position <= lower:
                    break
                if position <= upper and etype in types and sender != not_sender:
                    count += 1
            return count
        marks = ",".join("?" * len(types))
        value = await self.db.fetchval(
            f"SELECT COUNT(*) FROM events WHERE room_id = ? AND stream_ordering > ?"
            f" AND stream_ordering <= ? AND sender != ? AND type IN ({marks}) AND outlier = 0",
            room_id, lower, upper, not_sender, *types)
        return int(value or 0)

    async def get_event_at_ts(self, room_id: str, ts: int, forwards: bool) -> str | None:
        if forwards:
            sql = ("SELECT event_id FROM events WHERE room_id = ? AND origin_server_ts >= ?"
                   " ORDER BY origin_server_ts ASC, stream_ordering ASC LIMIT 1")
        else:
            sql = ("SELECT event_id FROM events WHERE room_id = ? AND origin_server_ts <= ?"
                   " ORDER BY origin_server_ts DESC, stream_ordering DESC LIMIT 1")
        value = await self.db.fetchval(sql, room_id, ts)
        return str(value) if value is not None else None

    def get_recent_txn_event(self, user_id: str, device_id: str, txn_id: str) -> str | None:
        """The event a transaction sent, if this process persisted it lately."""
        found = self._recent_txns.get((user_id, device_id, txn_id))
        return str(found) if found is not None else None

    async def get_txn_event(self, user_id: str, device_id: str, txn_id: str) -> str | None:
        recent = self.get_recent_txn_event(user_id, device_id, txn_id)
        if recent is not None:
            return recent
        value = await self.db.fetchval(
            "SELECT event_id FROM event_txn_ids WHERE user_id = ? AND device_id = ?"
            " AND txn_id = ?", user_id, device_id, txn_id)
        return str(value) if value is not None else None

    async def get_rooms_with_events_between(self, room_ids: Sequence[str], from_pos: int,
                                            to_pos: int) -> set[str]:
        if not room_ids or from_pos >= to_pos:
            return set()
        out: set[str] = set()
        unknown = []
        for room_id in room_ids:
            ring = self._timelines.get(room_id)
            if ring is None or from_pos < ring[0]:
                unknown.append(room_id)
            else:
                for entry in reversed(ring[1]):
                    if entry[0] <= from_pos:
                        break
                    if entry[0] <= to_pos:
                        out.add(room_id)
                        break
        for start in range(0, len(unknown), 200):
            chunk = unknown[start:start + 200]
            marks = ",".join("?" * len(chunk))
            rows = await self.db.fetchall(
                f"SELECT DISTINCT room_id FROM events WHERE stream_ordering > ?"
                f" AND stream_ordering <= ? AND room_id IN ({marks})", from_pos, to_pos, *chunk)
            out.update(r[0] for r in rows)
        return out

    async def membership_changes_between(
            self, room_ids: Sequence[str], from_pos: int, to_pos: int,
    ) -> list[tuple[int, str, str]]:
        """(position, room id, user id) of every membership event in ``room_ids``
        with a position in (``from_pos``, ``to_pos``]; callers narrow per room."""
        if not room_ids or from_pos >= to_pos:
            return []
        out: list[tuple[int, str, str]] = []
        for start in range(0, len(room_ids), 200):
            chunk = list(room_ids[start:start + 200])
            marks = ",".join("?" * len(chunk))
            rows = await self.db.fetchall(
                f"SELECT stream_ordering, room_id, state_key FROM events"
                f" WHERE type = 'm.room.member' AND stream_ordering > ?"
                f" AND stream_ordering <= ? AND room_id IN ({marks})",
                from_pos, to_pos, *chunk)
            out.extend((int(r[0]), r[1], r[2]) for r in rows)
        return out

    async def persist_event(self, ptxn: PositionTransaction, event: Event, *,
                            instance_name: str, state_group: int,
                            replaces_state: str | None,
                            txn_key: tuple[str, str, str] | None) -> int:
        """Write one event and everything derived from it; returns its position."""
        txn = ptxn.txn
        position = await ptxn.next_position()
        pdu_json = orjson.dumps(event.get_pdu_json()).decode()
        txn.defer(
            "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
            " depth, origin_server_ts, membership, replaces_state, instance_name, json)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            position, event.event_id, event.room_id, event.type, event.state_key, event.sender,
            event.depth, event.origin_server_ts, event.membership if event.type ==
            "m.room.member" else None, replaces_state, instance_name, pdu_json)
        await txn.executemany(
            "INSERT INTO event_edges (event_id, prev_event_id) VALUES (?, ?)",
            [(event.event_id, p) for p in dict.fromkeys(event.prev_event_ids)])
        await txn.executemany(
            "INSERT INTO event_auth (event_id, auth_id) VALUES (?, ?)",
            [(event.event_id, a) for a in dict.fromkeys(event.auth_event_ids)])
        if event.prev_event_ids:
            marks = ",".join("?" * len(event.prev_event_ids))
            txn.defer(
                f"DELETE FROM room_forward_extremities WHERE room_id = ?"
                f" AND event_id IN ({marks})", event.room_id, *event.prev_event_ids)
        txn.defer(
            "INSERT INTO room_forward_extremities (room_id, event_id) VALUES (?, ?)",
            event.room_id, event.event_id)
        txn.defer(
            "INSERT INTO event_to_state_groups (event_id, state_group) VALUES (?, ?)",
            event.event_id, state_group)
        if event.redacts is not None and event.type == "m.room.redaction":
            txn.defer(
                "INSERT INTO redactions (event_id, redacts) VALUES (?, ?)"
                " ON CONFLICT (event_id) DO NOTHING", event.event_id, event.redacts)
        if event.state_key is not None:
            self.state.write_current_state(txn, event)
            if event.type == "m.room.member":
                self.memberships.write_membership(txn, event, position)
        if txn_key is not None:
            txn.defer(
                "INSERT INTO event_txn_ids (user_id, device_id, txn_id, room_id, event_id,"
                " inserted_ts) VALUES (?, ?, ?, ?, ?, ?)",
                txn_key[0], txn_key[1], txn_key[2], event.room_id, event.event_id,
                event.origin_server_ts)
        if replaces_state:
            event.unsigned["replaces_state"] = replaces_state
        ptxn.add_row(position, EventsRow(
            event.event_id, event.room_id, event.type, event.state_key, event.sender,
            str(event.membership) if event.type == "m.room.member" else None,
            event.redacts if event.type == "m.room.redaction" else None,
            json=pdu_json, room_version=event.room_version.identifier,
            state_group=state_group, replaces_state=replaces_state,
            txn=list(txn_key) if txn_key else None))
        return position

    def event_persisted(self, stored: StoredEvent) -> None:
        """Fill the writer's caches with what it just committed (it computed
        them itself); everything that others must invalidate comes back as an
        ``events`` row (:meth:`on_events_rows`), here too."""
        self._events.put(stored.event.event_id, stored)
        event = stored.event
        if stored.txn_key is not None:
            self._recent_txns.put(stored.txn_key, event.event_id)
        extremities = self._extremities.peek(event.room_id)
        if extremities is not None:
            self._extremities.put(event.room_id, [
                e for e in extremities if e not in event.prev_event_ids] + [event.event_id])

    def on_events_rows(self, writer: str, rows: Sequence[tuple[int, EventsRow]]) -> None:
        """Apply ``events`` stream rows to this process's caches (every process,
        the room's writer included)."""
        mine = writer == self.instance_name
        for position, row in rows:
            self._append_to_timeline(position, row)
            if not mine and self.fill_from_rows and row.json is not None:
                # Readers of this process will ask for it: no need to read it back.
                self._events.put(row.event_id, self._stored_from_row(position, row))
            if not mine:
                # The writer keeps its own extremities exact.
                self._extremities.invalidate(row.room_id)
            if row.redacts is not None:
                # The redacted event is served pruned from now on.
                self._invalidations += 1
                self._events.invalidate(row.redacts)

    @staticmethod
    def _stored_from_row(position: int, row: EventsRow) -> StoredEvent:
        assert row.json is not None and row.room_version is not None
        event = Event(orjson.loads(row.json), get_room_version(row.room_version),
                      event_id=row.event_id)
        if row.replaces_state:
            event.unsigned["replaces_state"] = row.replaces_state
        txn_key = (row.txn[0], row.txn[1], row.txn[2]) if row.txn else None
        return StoredEvent(event, position, row.state_group, None, txn_key)

    def _append_to_timeline(self, position: int, row: EventsRow) -> None:
        ring = self._timelines.peek(row.room_id)
        entry = (position, row.event_id, row.type, row.sender)
        if ring is not None and ring[1] and ring[1][-1][0] >= position:
            return  # already there
        if ring is None:
            # Start the ring: this process follows every event of the room from
            # now on, so it holds every event after this one's predecessor.
            self._timelines.put(row.room_id, (position - 1, [entry]))
            return
        ring[1].append(entry)
        if len(ring[1]) > RECENT_EVENTS_PER_ROOM:
            dropped = ring[1].pop(0)
            self._timelines.put(row.room_id, (dropped[0], ring[1]))
