"""Relations between events and threads: the rows the relations indexer
writes, and the reads behind ``/relations``, ``/threads`` and bundled
aggregations.

``event_relations`` holds one row per child event (its parent, rel_type,
type, sender, room, stream position and thread). ``threads`` holds one row
per thread root (latest reply, reply count), kept exact by the indexer so
``/threads`` orders by activity without scanning replies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from myelin.storage.engines import Database, Transaction

# Relations and the recursion of /relations go at most this deep.
MAX_RECURSION_DEPTH = 3


@dataclass(frozen=True)
class RelationRow:
    """A child event as the aggregations need it (without loading it)."""

    event_id: str
    parent_id: str
    rel_type: str
    event_type: str
    sender: str
    origin_server_ts: int
    stream_ordering: int


@dataclass(frozen=True)
class ThreadSummary:
    thread_id: str
    latest_event_id: str
    latest_stream_ordering: int
    count: int


def _chunks(items: Sequence[str], size: int = 200) -> list[list[str]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


class RelationStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- writes (inside the event's own transaction) -------------------------
    @staticmethod
    async def relation_of(txn: Transaction, event_id: str) -> tuple[str, str | None] | None:
        """(rel_type, thread_id) of an event that is itself a child, if it is."""
        row = await txn.fetchone(
            "SELECT rel_type, thread_id FROM event_relations WHERE event_id = ?", event_id)
        return (row[0], row[1]) if row else None

    @staticmethod
    async def add_relation(txn: Transaction, *, event_id: str, parent_id: str, rel_type: str,
                           event_type: str, sender: str, room_id: str, stream_ordering: int,
                           origin_server_ts: int, thread_id: str | None) -> None:
        txn.defer(
            "INSERT INTO event_relations (event_id, parent_id, rel_type, event_type, sender,"
            " room_id, stream_ordering, origin_server_ts, thread_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
            event_id, parent_id, rel_type, event_type, sender, room_id, stream_ordering,
            origin_server_ts, thread_id)
        if rel_type == "m.thread":
            # Positions of one room only grow on its persister: the new reply is the latest.
            txn.defer(
                "INSERT INTO threads (thread_id, room_id, latest_event_id,"
                " latest_stream_ordering, reply_count) VALUES (?, ?, ?, ?, 1)"
                " ON CONFLICT (thread_id) DO UPDATE SET"
                " latest_event_id = excluded.latest_event_id,"
                " latest_stream_ordering = excluded.latest_stream_ordering,"
                " reply_count = threads.reply_count + 1",
                parent_id, room_id, event_id, stream_ordering)

    @staticmethod
    async def remove_relation(txn: Transaction, event_id: str, room_id: str) -> str | None:
        """Break a redacted child's relationship; returns its former parent."""
        row = await txn.fetchone(
            "SELECT parent_id, rel_type FROM event_relations WHERE event_id = ? AND room_id = ?",
            event_id, room_id)
        if row is None:
            return None
        parent_id, rel_type = row[0], row[1]
        await txn.execute("DELETE FROM event_relations WHERE event_id = ?", event_id)
        if rel_type == "m.thread":
            latest = await txn.fetchone(
                "SELECT event_id, stream_ordering FROM event_relations"
                " WHERE parent_id = ? AND rel_type = 'm.thread'"
                " ORDER BY stream_ordering DESC LIMIT 1", parent_id)
            if latest is None:
                await txn.execute("DELETE FROM threads WHERE thread_id = ?", parent_id)
            else:
                await txn.execute(
                    "UPDATE threads SET latest_event_id = ?, latest_stream_ordering = ?,"
                    " reply_count = reply_count - 1 WHERE thread_id = ?",
                    latest[0], latest[1], parent_id)
        return str(parent_id)

    # -- reads -----------------------------------------------------------------
    async def get_children(self, room_id: str, parent_id: str, *, rel_type: str | None,
                           event_type: str | None, from_pos: int | None, to_pos: int | None,
                           backwards: bool, limit: int, recurse: bool,
                           ) -> list[tuple[str, int]]:
        """(event_id, stream_ordering) of the children of a parent, in stream
        order; with ``recurse`` their children too (through matching children
        only), up to :data:`MAX_RECURSION_DEPTH`. Bounds as on /messages:
        ``from_pos`` is inclusive backwards, exclusive forwards."""
        filters = ""
        filter_args: list[Any] = []
        if rel_type is not None:
            filters += " AND r.rel_type = ?"
            filter_args.append(rel_type)
        if event_type is not None:
            filters += " AND r.event_type = ?"
            filter_args.append(event_type)
        bounds = ""
        bound_args: list[Any] = []
        lower_op, upper_op = (">", "<=")
        if backwards:
            if from_pos is not None:
                bounds += f" AND c.stream_ordering {upper_op} ?"
                bound_args.append(from_pos)
            if to_pos is not None:
                bounds += f" AND c.stream_ordering {lower_op} ?"
                bound_args.append(to_pos)
        else:
            if from_pos is not None:
                bounds += f" AND c.stream_ordering {lower_op} ?"
                bound_args.append(from_pos)
            if to_pos is not None:
                bounds += f" AND c.stream_ordering {upper_op} ?"
                bound_args.append(to_pos)
        order = "DESC" if backwards else "ASC"
        depth = MAX_RECURSION_DEPTH if recurse else 1
        rows = await self.db.fetchall(
            "WITH RECURSIVE c (event_id, stream_ordering, depth) AS ("
            " SELECT r.event_id, r.stream_ordering, 1 FROM event_relations r"
            f" WHERE r.parent_id = ? AND r.room_id = ?{filters}"
            " UNION ALL"
            " SELECT r.event_id, r.stream_ordering, c.depth + 1 FROM event_relations r"
            f" JOIN c ON r.parent_id = c.event_id WHERE c.depth < ? AND r.room_id = ?{filters})"
            f" SELECT DISTINCT c.event_id, c.stream_ordering FROM c WHERE 1 = 1{bounds}"
            f" ORDER BY c.stream_ordering {order} LIMIT ?",
            parent_id, room_id, *filter_args, depth, room_id, *filter_args, *bound_args, limit)
        return [(r[0], int(r[1])) for r in rows]

    async def get_aggregation_rows(self, parent_ids: Sequence[str], room_id: str,
                                   ) -> list[RelationRow]:
        """Edits and references of these parents (the aggregations that list children)."""
        out: list[RelationRow] = []
        for chunk in _chunks(parent_ids):
            marks = ",".join("?" * len(chunk))
            rows = await self.db.fetchall(
                "SELECT event_id, parent_id, rel_type, event_type, sender, origin_server_ts,"
                " stream_ordering FROM event_relations"
                f" WHERE parent_id IN ({marks}) AND room_id = ?"
                " AND rel_type IN ('m.replace', 'm.reference')"
                " ORDER BY stream_ordering", *chunk, room_id)
            out.extend(RelationRow(r[0], r[1], r[2], r[3], r[4], int(r[5]), int(r[6]))
                       for r in rows)
        return out

    async def get_thread_summaries(self, thread_ids: Sequence[str], room_id: str,
                                   ) -> dict[str, tuple[ThreadSummary, frozenset[str]]]:
        """Each thread's summary and the senders of its replies."""
        out: dict[str, tuple[ThreadSummary, frozenset[str]]] = {}
        for chunk in _chunks(thread_ids):
            marks = ",".join("?" * len(chunk))
            rows = await self.db.fetchall(
                "SELECT thread_id, latest_event_id, latest_stream_ordering, reply_count"
                f" FROM threads WHERE thread_id IN ({marks}) AND room_id = ?", *chunk, room_id)
            if not rows:
                continue
            found = [r[0] for r in rows]
            senders: dict[str, set[str]] = {t: set() for t in found}
            marks = ",".join("?" * len(found))
            for parent_id, sender in await self.db.fetchall(
                    "SELECT DISTINCT parent_id, sender FROM event_relations"
                    f" WHERE parent_id IN ({marks}) AND rel_type = 'm.thread'", *found):
                senders[parent_id].add(sender)
            for r in rows:
                out[r[0]] = (ThreadSummary(r[0], r[1], int(r[2]), int(r[3])),
                             frozenset(senders[r[0]]))
        return out

    async def get_threads(self, room_id: str, *, participant: str | None, before: int | None,
                          limit: int) -> list[tuple[str, int]]:
        """(thread root, latest activity) of a room's threads, most recently
        active first, below ``before``; only those ``participant`` is in."""
        clauses = ["t.room_id = ?"]
        args: list[Any] = [room_id]
        if before is not None:
            clauses.append("t.latest_stream_ordering < ?")
            args.append(before)
        if participant is not None:
            clauses.append(
                "(EXISTS (SELECT 1 FROM events e WHERE e.event_id = t.thread_id"
                " AND e.sender = ?) OR EXISTS (SELECT 1 FROM event_relations r"
                " WHERE r.parent_id = t.thread_id AND r.rel_type = 'm.thread'"
                " AND r.sender = ?))")
            args.extend([participant, participant])
        args.append(limit)
        rows = await self.db.fetchall(
            "SELECT t.thread_id, t.latest_stream_ordering FROM threads t"
            f" WHERE {' AND '.join(clauses)} ORDER BY t.latest_stream_ordering DESC LIMIT ?",
            *args)
        return [(r[0], int(r[1])) for r in rows]
