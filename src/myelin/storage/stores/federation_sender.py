"""Outbound federation's tables: destinations' backoff and catch-up, the
senders' stream positions and the outbox of durable EDUs (migration 018)."""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from myelin.storage.engines import Database, Transaction

_outbox_serial = itertools.count()


@dataclass(frozen=True)
class DestinationState:
    destination: str
    retry_last_ts: int
    retry_interval: int
    last_successful_stream_ordering: int | None
    failure_ts: int | None = None


_DESTINATION_COLUMNS = ("destination, retry_last_ts, retry_interval,"
                        " last_successful_stream_ordering, failure_ts")


def _destination(row: Any) -> DestinationState:
    return DestinationState(row[0], int(row[1]), int(row[2]),
                            None if row[3] is None else int(row[3]),
                            None if row[4] is None else int(row[4]))


@dataclass(frozen=True)
class OutboxEntry:
    outbox_id: str
    destination: str
    edu_type: str
    content: dict[str, Any]


class FederationSenderStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- destinations ------------------------------------------------------
    async def get_destination(self, destination: str) -> DestinationState | None:
        row = await self.db.fetchone(
            f"SELECT {_DESTINATION_COLUMNS} FROM federation_destinations WHERE destination = ?",
            destination)
        return None if row is None else _destination(row)

    async def set_retry(self, destination: str, retry_last_ts: int, retry_interval: int) -> None:
        """Record a failure's backoff, or (both 0) that the destination is up again."""
        failure_ts = retry_last_ts if retry_interval else None
        await self.db.execute(
            "INSERT INTO federation_destinations (destination, retry_last_ts, retry_interval,"
            " failure_ts) VALUES (?, ?, ?, ?) ON CONFLICT (destination) DO UPDATE SET"
            " retry_last_ts = excluded.retry_last_ts,"
            " retry_interval = excluded.retry_interval,"
            " failure_ts = CASE WHEN excluded.retry_interval = 0 THEN NULL"
            " ELSE COALESCE(federation_destinations.failure_ts, excluded.failure_ts) END",
            destination, retry_last_ts, retry_interval, failure_ts)

    async def set_last_successful(self, destination: str, stream_ordering: int) -> None:
        """Everything meant for ``destination`` up to ``stream_ordering`` has arrived
        (never moves back: transactions may be acknowledged out of order after a
        catch-up)."""
        await self.db.execute(
            "INSERT INTO federation_destinations (destination, last_successful_stream_ordering)"
            " VALUES (?, ?) ON CONFLICT (destination) DO UPDATE SET"
            " last_successful_stream_ordering = CASE"
            " WHEN federation_destinations.last_successful_stream_ordering IS NULL"
            " OR federation_destinations.last_successful_stream_ordering"
            " < excluded.last_successful_stream_ordering"
            " THEN excluded.last_successful_stream_ordering"
            " ELSE federation_destinations.last_successful_stream_ordering END",
            destination, stream_ordering)

    async def destinations_behind(self) -> list[str]:
        """Destinations with a room whose newest queued event they have not
        acknowledged: what a sender must catch up after a restart."""
        rows = await self.db.fetchall(
            "SELECT DISTINCT r.destination FROM federation_destination_rooms r"
            " LEFT JOIN federation_destinations d ON d.destination = r.destination"
            " WHERE d.last_successful_stream_ordering IS NULL"
            " OR r.stream_ordering > d.last_successful_stream_ordering")
        return [r[0] for r in rows]

    async def rooms_to_catch_up(self, destination: str, after: int | None,
                                limit: int) -> list[tuple[str, int]]:
        """(room, newest queued stream ordering) of the rooms beyond ``after``, oldest first."""
        if after is None:
            rows = await self.db.fetchall(
                "SELECT room_id, stream_ordering FROM federation_destination_rooms"
                " WHERE destination = ? ORDER BY stream_ordering LIMIT ?", destination, limit)
        else:
            rows = await self.db.fetchall(
                "SELECT room_id, stream_ordering FROM federation_destination_rooms"
                " WHERE destination = ? AND stream_ordering > ? ORDER BY stream_ordering LIMIT ?",
                destination, after, limit)
        return [(r[0], int(r[1])) for r in rows]

    async def list_destinations(self, limit: int, offset: int, *, order_by: str = "destination",
                                backwards: bool = False, search: str | None = None,
                                ) -> tuple[list[DestinationState], int]:
        """A page of destinations for the admin API (``order_by`` is a column
        name the caller checked)."""
        where, args = "", []
        if search:
            where, args = " WHERE destination LIKE ?", [f"%{search}%"]
        order = "DESC" if backwards else "ASC"
        rows = await self.db.fetchall(
            f"SELECT {_DESTINATION_COLUMNS} FROM federation_destinations{where}"
            f" ORDER BY {order_by} {order}, destination {order} LIMIT ? OFFSET ?",
            *args, limit, offset)
        total = await self.db.fetchval(
            f"SELECT COUNT(*) FROM federation_destinations{where}", *args)
        return [_destination(r) for r in rows], int(total)

    async def destination_rooms(self, destination: str, limit: int, offset: int, *,
                                backwards: bool = False) -> tuple[list[tuple[str, int]], int]:
        order = "DESC" if backwards else "ASC"
        rows = await self.db.fetchall(
            f"SELECT room_id, stream_ordering FROM federation_destination_rooms"
            f" WHERE destination = ? ORDER BY room_id {order} LIMIT ? OFFSET ?",
            destination, limit, offset)
        total = await self.db.fetchval(
            "SELECT COUNT(*) FROM federation_destination_rooms WHERE destination = ?",
            destination)
        return [(r[0], int(r[1])) for r in rows], int(total)

    # -- queueing events ---------------------------------------------------
    async def record_queued(self, instance_name: str, position: int | None,
                            queued: Iterable[tuple[str, str, int]]) -> None:
        """In one transaction: the newest event per (destination, room) queued, and how
        far this sender has read the events stream — so a crash after it never
        forgets an event it did not send (catch-up finds it)."""
        rows = list(queued)
        async with self.db.transaction() as txn:
            if rows:
                await txn.executemany(
                    "INSERT INTO federation_destination_rooms (destination, room_id,"
                    " stream_ordering) VALUES (?, ?, ?) ON CONFLICT (destination, room_id)"
                    " DO UPDATE SET stream_ordering = excluded.stream_ordering"
                    " WHERE federation_destination_rooms.stream_ordering"
                    " < excluded.stream_ordering", rows)
            if position is not None:
                await self._set_position(txn, instance_name, "events", position)

    # -- stream positions --------------------------------------------------
    async def get_position(self, instance_name: str, stream: str) -> int | None:
        value = await self.db.fetchval(
            "SELECT position FROM federation_stream_positions WHERE instance_name = ?"
            " AND stream_name = ?", instance_name, stream)
        return None if value is None else int(value)

    async def set_position(self, instance_name: str, stream: str, position: int) -> None:
        async with self.db.transaction() as txn:
            await self._set_position(txn, instance_name, stream, position)

    @staticmethod
    async def _set_position(txn: Any, instance_name: str, stream: str, position: int) -> None:
        await txn.execute(
            "INSERT INTO federation_stream_positions (instance_name, stream_name, position)"
            " VALUES (?, ?, ?) ON CONFLICT (instance_name, stream_name)"
            " DO UPDATE SET position = excluded.position", instance_name, stream, position)

    # -- the outbox --------------------------------------------------------
    async def add_to_outbox(self, entries: Sequence[tuple[str, str, dict[str, Any]]], *,
                            position: tuple[str, str, int] | None = None) -> None:
        """Queue (destination, edu_type, content) EDUs that must survive restarts;
        with ``position`` (instance, stream, position), record in the same
        transaction how far the sender has turned that stream into EDUs."""
        async with self.db.transaction() as txn:
            if entries:
                await add_to_outbox(txn, entries)
            if position is not None:
                await self._set_position(txn, *position)

    async def get_outbox(self, destination: str, limit: int) -> list[OutboxEntry]:
        rows = await self.db.fetchall(
            "SELECT outbox_id, destination, edu_type, content FROM federation_outbox"
            " WHERE destination = ? ORDER BY created_ts, outbox_id LIMIT ?", destination, limit)
        return [OutboxEntry(r[0], r[1], r[2], orjson.loads(r[3])) for r in rows]

    async def outbox_destinations(self) -> list[str]:
        rows = await self.db.fetchall("SELECT DISTINCT destination FROM federation_outbox")
        return [r[0] for r in rows]

    async def delete_from_outbox(self, outbox_ids: Sequence[str]) -> None:
        for start in range(0, len(outbox_ids), 200):
            chunk = list(outbox_ids[start:start + 200])
            marks = ",".join("?" * len(chunk))
            await self.db.execute(
                f"DELETE FROM federation_outbox WHERE outbox_id IN ({marks})", *chunk)


async def add_to_outbox(txn: Transaction, entries: Sequence[tuple[str, str, dict[str, Any]]],
                        ) -> None:
    """The outbox insert, inside a caller's transaction (the to-device store's)."""
    now = int(time.time() * 1000)
    # Ids sort in the order this process wrote them (a device's updates must
    # arrive in order); the random tail keeps other processes' ids apart.
    await txn.executemany(
        "INSERT INTO federation_outbox (outbox_id, destination, edu_type, content,"
        " created_ts) VALUES (?, ?, ?, ?, ?)",
        [(f"{now:013d}{next(_outbox_serial):09d}{secrets.token_hex(4)}", destination,
          edu_type, orjson.dumps(content).decode(), now)
         for destination, edu_type, content in entries])
