"""What the room DAG needs beyond local events: inbound /send transactions,
rejected and soft-failed remote events, and events written outside the live
stream (outliers and backfilled history).

Outliers, soft-failed and backfilled events take *negative* stream orderings
(as Synapse does for backfill): they never appear on the ``events`` stream
(no client is woken for them, sync never sees them) and backfilled history
sorts before everything the room already had, so ``/messages`` paginating
backwards reaches it in order.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from myelin.events.event import Event
from myelin.storage.engines import Database, Transaction
from myelin.storage.stores.events import StateMap

_BACKFILL_STREAM = "events_backfill"


class FederationStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- /send transactions ---------------------------------------------------
    async def get_txn_response(self, origin: str, txn_id: str) -> dict[str, Any] | None:
        raw = await self.db.fetchval(
            "SELECT response_json FROM federation_inbound_txns WHERE origin = ? AND txn_id = ?",
            origin, txn_id)
        return orjson.loads(raw) if raw is not None else None  # type: ignore[no-any-return]

    async def store_txn_response(self, origin: str, txn_id: str,
                                 response: dict[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO federation_inbound_txns (origin, txn_id, response_json, received_ts)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (origin, txn_id) DO NOTHING",
            origin, txn_id, orjson.dumps(response).decode(), int(time.time() * 1000))

    # -- rejections, soft failures -------------------------------------------
    async def record_rejection(self, event_id: str, room_id: str, reason: str) -> None:
        await self.db.execute(
            "INSERT INTO rejections (event_id, room_id, reason, rejected_ts) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (event_id) DO NOTHING",
            event_id, room_id, reason[:500], int(time.time() * 1000))

    async def get_rejections(self, event_ids: Iterable[str]) -> dict[str, str]:
        """The rejection reason of each of ``event_ids`` that was rejected."""
        ids = list(dict.fromkeys(event_ids))
        out: dict[str, str] = {}
        for start in range(0, len(ids), 200):
            chunk = ids[start:start + 200]
            marks = ",".join("?" * len(chunk))
            rows = await self.db.fetchall(
                f"SELECT event_id, reason FROM rejections WHERE event_id IN ({marks})", *chunk)
            out.update({r[0]: r[1] for r in rows})
        return out

    async def is_soft_failed(self, event_id: str) -> bool:
        return bool(await self.db.fetchval(
            "SELECT 1 FROM soft_failed_events WHERE event_id = ?", event_id))

    async def has_events(self, event_ids: Iterable[str]) -> set[str]:
        """Which of ``event_ids`` are stored (timeline, outlier or soft-failed)."""
        ids = list(dict.fromkeys(event_ids))
        out: set[str] = set()
        for start in range(0, len(ids), 200):
            chunk = ids[start:start + 200]
            marks = ",".join("?" * len(chunk))
            rows = await self.db.fetchall(
                f"SELECT event_id FROM events WHERE event_id IN ({marks})", *chunk)
            out.update(r[0] for r in rows)
        return out

    # -- rooms we learn about over federation --------------------------------
    @staticmethod
    async def ensure_room(txn: Transaction, room_id: str, version: str, creator: str,
                          created_ts: int) -> None:
        await txn.execute(
            "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts)"
            " VALUES (?, ?, ?, 0, ?) ON CONFLICT (room_id) DO NOTHING",
            room_id, version, creator, created_ts)

    # -- events outside the live stream --------------------------------------
    async def allocate_negative_positions(self, txn: Transaction, count: int) -> list[int]:
        """``count`` fresh positions, each below every position handed out so far,
        in decreasing order."""
        if count <= 0:
            return []
        if self.db.engine == "postgres":
            out = []
            for _ in range(count):
                out.append(-int(await txn.fetchval("SELECT nextval('events_backfill_seq')")))
            return out
        # SQLite has one writer connection: reading and writing the mark inside
        # the transaction cannot race another writer.
        low = await txn.fetchval("SELECT MIN(stream_ordering) FROM events")
        mark = await txn.fetchval(
            "SELECT position FROM stream_high_water WHERE stream_name = ?", _BACKFILL_STREAM)
        start = min(int(low or 0), -int(mark or 0), 0)
        out = [start - 1 - i for i in range(count)]
        await txn.execute(
            "INSERT INTO stream_high_water (stream_name, position) VALUES (?, ?)"
            " ON CONFLICT (stream_name) DO UPDATE SET position = excluded.position",
            _BACKFILL_STREAM, -out[-1])
        return out

    async def write_offstream_event(self, txn: Transaction, event: Event, position: int, *,
                                    instance_name: str, outlier: bool,
                                    state_group: int | None,
                                    soft_failed: bool = False) -> None:
        """Write an event that changes neither the room's current state nor its
        forward extremities: an outlier (state unknown), a soft-failed event
        (an outlier with its state) or backfilled history (in the timeline,
        below everything else)."""
        pdu_json = orjson.dumps(event.get_pdu_json()).decode()
        await txn.execute(
            "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
            " depth, origin_server_ts, membership, replaces_state, instance_name, json, outlier)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?) ON CONFLICT (event_id) DO "
            + ("NOTHING" if outlier else
               # An outlier we now find in the history takes its place there.
               "UPDATE SET outlier = 0, stream_ordering = excluded.stream_ordering"
               " WHERE events.outlier = 1"),
            position, event.event_id, event.room_id, event.type, event.state_key, event.sender,
            event.depth, event.origin_server_ts,
            event.membership if event.type == "m.room.member" else None, instance_name,
            pdu_json, 1 if outlier else 0)
        await txn.executemany(
            "INSERT INTO event_edges (event_id, prev_event_id) VALUES (?, ?)"
            " ON CONFLICT DO NOTHING", [(event.event_id, p) for p in event.prev_event_ids])
        await txn.executemany(
            "INSERT INTO event_auth (event_id, auth_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(event.event_id, a) for a in event.auth_event_ids])
        if state_group is not None:
            await txn.execute(
                "INSERT INTO event_to_state_groups (event_id, state_group) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING", event.event_id, state_group)
        if not outlier and event.redacts is not None and event.type == "m.room.redaction":
            await txn.execute(
                "INSERT INTO redactions (event_id, redacts) VALUES (?, ?)"
                " ON CONFLICT (event_id) DO NOTHING", event.event_id, event.redacts)
        if soft_failed:
            await txn.execute(
                "INSERT INTO soft_failed_events (event_id, room_id) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING", event.event_id, event.room_id)

    @staticmethod
    async def rewrite_current_state(txn: Transaction, room_id: str, state: StateMap,
                                    members: Sequence[tuple[Event, int]]) -> None:
        """Make the room's current state exactly ``state`` (after a fork was
        resolved); ``members`` are the membership events in it with their
        stream positions, for the room's membership table."""
        await txn.execute("DELETE FROM current_state_events WHERE room_id = ?", room_id)
        await txn.executemany(
            "INSERT INTO current_state_events (room_id, type, state_key, event_id)"
            " VALUES (?, ?, ?, ?)", [(room_id, t, k, e) for (t, k), e in state.items()])
        await txn.executemany(
            "INSERT INTO room_memberships (room_id, user_id, membership, event_id,"
            " stream_ordering, forgotten) VALUES (?, ?, ?, ?, ?, 0)"
            " ON CONFLICT (room_id, user_id) DO UPDATE SET"
            " membership = excluded.membership, event_id = excluded.event_id,"
            " stream_ordering = excluded.stream_ordering",
            [(room_id, ev.state_key, str(ev.membership), ev.event_id, pos)
             for ev, pos in members])

    async def unapply_redaction(self, redaction_id: str) -> None:
        """A remote redaction its sender had no right to apply: stored, but
        redacting nothing."""
        await self.db.execute("DELETE FROM redactions WHERE event_id = ?", redaction_id)

    async def delete_forward_extremities(self, room_id: str, event_ids: Sequence[str]) -> None:
        marks = ",".join("?" * len(event_ids))
        await self.db.execute(
            f"DELETE FROM room_forward_extremities WHERE room_id = ? AND event_id IN ({marks})",
            room_id, *event_ids)

    # -- the DAG, read -------------------------------------------------------
    async def get_prev_event_ids(self, event_ids: Sequence[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for start in range(0, len(event_ids), 200):
            chunk = list(event_ids[start:start + 200])
            marks = ",".join("?" * len(chunk))
            rows = await self.db.fetchall(
                f"SELECT event_id, prev_event_id FROM event_edges WHERE event_id IN ({marks})",
                *chunk)
            for event_id, prev in rows:
                out.setdefault(event_id, []).append(prev)
        return out

    async def get_backward_extremities(self, room_id: str) -> list[tuple[str, int]]:
        """Prev events we do not have of the room's timeline events (where
        backfill continues), with the depth of the event that points at them,
        oldest first."""
        rows = await self.db.fetchall(
            "SELECT ed.prev_event_id, MIN(e.depth) FROM event_edges ed"
            " JOIN events e ON e.event_id = ed.event_id"
            " WHERE e.room_id = ? AND e.outlier = 0 AND NOT EXISTS"
            " (SELECT 1 FROM events p WHERE p.event_id = ed.prev_event_id AND p.outlier = 0)"
            " AND NOT EXISTS (SELECT 1 FROM rejections r WHERE r.event_id = ed.prev_event_id)"
            " GROUP BY ed.prev_event_id ORDER BY MIN(e.depth) LIMIT 20", room_id)
        return [(r[0], int(r[1])) for r in rows]

    async def get_earliest_state_group(self, room_id: str) -> tuple[int, str] | None:
        """(state group, event id) of the room's oldest timeline event with a state."""
        row = await self.db.fetchone(
            "SELECT sg.state_group, e.event_id FROM events e"
            " JOIN event_to_state_groups sg ON sg.event_id = e.event_id"
            " WHERE e.room_id = ? AND e.outlier = 0 ORDER BY e.stream_ordering LIMIT 1",
            room_id)
        return (int(row[0]), str(row[1])) if row else None

    async def is_outlier(self, event_id: str) -> bool:
        return bool(await self.db.fetchval(
            "SELECT outlier FROM events WHERE event_id = ?", event_id))
