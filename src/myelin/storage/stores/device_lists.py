"""Device list changes (the `device_lists` stream)."""

from __future__ import annotations

from myelin.storage.engines import Database
from myelin.storage.id_generators import StreamIdGenerator
from myelin.storage.stream_rows import DeviceListsRow


class DeviceListStore:
    def __init__(self, db: Database, id_gen: StreamIdGenerator) -> None:
        self.db = db
        self.id_gen = id_gen

    async def record_change(self, user_id: str, device_id: str) -> int:
        async with self.id_gen.transaction() as ptxn:
            position = await ptxn.next_position()
            await ptxn.txn.execute(
                "INSERT INTO device_lists_stream (stream_id, user_id, device_id)"
                " VALUES (?, ?, ?)", position, user_id, device_id)
            ptxn.add_row(position, DeviceListsRow(user_id, device_id))
        return position

    async def users_changed_between(self, from_id: int, to_id: int) -> set[str]:
        rows = await self.db.fetchall(
            "SELECT DISTINCT user_id FROM device_lists_stream WHERE stream_id > ?"
            " AND stream_id <= ?", from_id, to_id)
        return {r[0] for r in rows}

    async def latest_position_for_user(self, user_id: str) -> int:
        """The newest change to ``user_id``'s list (0 if none): the
        ``stream_id`` other servers hold our users' device lists at."""
        value = await self.db.fetchval(
            "SELECT MAX(stream_id) FROM device_lists_stream WHERE user_id = ?", user_id)
        return int(value or 0)
