"""Read receipts (the `receipts` stream)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from myelin.storage.caches import Cache, CacheRegistry
from myelin.storage.engines import Database
from myelin.storage.id_generators import StreamIdGenerator
from myelin.storage.stream_rows import ReceiptsRow

MAIN_THREAD = ""  # receipts without a thread_id ("unthreaded")


@dataclass(frozen=True)
class Receipt:
    stream_id: int
    room_id: str
    receipt_type: str
    user_id: str
    thread_id: str
    event_id: str
    data: dict[str, Any]


class ReceiptStore:
    def __init__(self, db: Database, id_gen: StreamIdGenerator, instance_name: str,
                 caches: CacheRegistry) -> None:
        self.db = db
        self.id_gen = id_gen
        self.instance_name = instance_name
        self._read_positions: Cache[tuple[str, str], int | None] = caches.register(
            "read_positions", 100_000)

    async def upsert(self, room_id: str, receipt_type: str, user_id: str, thread_id: str,
                     event_id: str, event_stream_ordering: int | None,
                     data: dict[str, Any]) -> int:
        async with self.id_gen.transaction() as ptxn:
            position = await ptxn.next_position()
            await ptxn.txn.execute(
                "INSERT INTO receipts (stream_id, instance_name, room_id, receipt_type, user_id,"
                " thread_id, event_id, event_stream_ordering, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET"
                " stream_id = excluded.stream_id, instance_name = excluded.instance_name,"
                " event_id = excluded.event_id,"
                " event_stream_ordering = excluded.event_stream_ordering, data = excluded.data",
                position, self.instance_name, room_id, receipt_type, user_id, thread_id,
                event_id, event_stream_ordering, orjson.dumps(data).decode())
            ptxn.add_row(position, ReceiptsRow(room_id, receipt_type, user_id, thread_id,
                                               event_id))
        return position

    async def get_read_position(self, room_id: str, user_id: str) -> int | None:
        """The stream position of the newest event this user has read in the room
        (public or private read receipt, any thread). Cached: /sync asks per room."""
        key = (room_id, user_id)
        if key in self._read_positions:
            return self._read_positions.get(key)  # type: ignore[no-any-return]
        generation = self._read_positions.generation
        value = await self.db.fetchval(
            "SELECT MAX(event_stream_ordering) FROM receipts WHERE room_id = ? AND user_id = ?"
            " AND receipt_type IN ('m.read', 'm.read.private')", room_id, user_id)
        position = int(value) if value is not None else None
        self._read_positions.put_if(generation, key, position)
        return position

    async def get_read_positions_by_thread(self, user_id: str, room_ids: Sequence[str],
                                           ) -> dict[str, dict[str, int]]:
        """room -> thread_id (MAIN_THREAD for unthreaded) -> the stream position of
        the newest event the user read there (m.read or m.read.private)."""
        out: dict[str, dict[str, int]] = {}
        for start in range(0, len(room_ids), 200):
            chunk = list(room_ids[start:start + 200])
            marks = ",".join("?" * len(chunk))
            rows = await self.db.fetchall(
                f"SELECT room_id, thread_id, MAX(event_stream_ordering) FROM receipts"
                f" WHERE user_id = ? AND receipt_type IN ('m.read', 'm.read.private')"
                f" AND room_id IN ({marks}) GROUP BY room_id, thread_id", user_id, *chunk)
            for room_id, thread_id, position in rows:
                if position is not None:
                    out.setdefault(room_id, {})[thread_id] = int(position)
        return out

    def on_receipts_rows(self, writer: str, rows: Sequence[tuple[int, ReceiptsRow]]) -> None:
        """``receipts`` rows from any writer: the readers' read positions moved."""
        for _, row in rows:
            self._read_positions.invalidate((row.room_id, row.user_id))

    async def get_for_rooms(self, room_ids: Sequence[str], from_id: int | None, to_id: int,
                            ) -> list[Receipt]:
        if not room_ids:
            return []
        out: list[Receipt] = []
        for start in range(0, len(room_ids), 200):
            chunk = list(room_ids[start:start + 200])
            marks = ",".join("?" * len(chunk))
            lower = "" if from_id is None else " AND stream_id > ?"
            args: list[Any] = [*chunk, to_id] + ([] if from_id is None else [from_id])
            rows = await self.db.fetchall(
                f"SELECT stream_id, room_id, receipt_type, user_id, thread_id, event_id, data"
                f" FROM receipts WHERE room_id IN ({marks}) AND stream_id <= ?{lower}", *args)
            out.extend(Receipt(r[0], r[1], r[2], r[3], r[4], r[5], orjson.loads(r[6]))
                       for r in rows)
        return out

    async def rooms_with_receipts_between(self, from_id: int, to_id: int,
                                          user_id: str | None = None) -> set[str]:
        """Rooms with receipts in (from_id, to_id] (only ``user_id``'s, if given)."""
        mine = "" if user_id is None else " AND user_id = ?"
        rows = await self.db.fetchall(
            f"SELECT DISTINCT room_id FROM receipts WHERE stream_id > ? AND stream_id <= ?{mine}",
            from_id, to_id, *([] if user_id is None else [user_id]))
        return {r[0] for r in rows}
