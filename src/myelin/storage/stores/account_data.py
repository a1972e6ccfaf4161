"""Per-user account data, global and per room (the `account_data` stream).

Room tags are stored as the ``m.tag`` room account data, which is also how
clients receive them.
"""

from __future__ import annotations

from typing import Any

import orjson

from myelin.storage.engines import Database
from myelin.storage.id_generators import StreamIdGenerator
from myelin.storage.stream_rows import AccountDataRow

GLOBAL = ""


class AccountDataStore:
    def __init__(self, db: Database, id_gen: StreamIdGenerator, instance_name: str) -> None:
        self.db = db
        self.id_gen = id_gen
        self.instance_name = instance_name

    async def put(self, user_id: str, room_id: str, data_type: str,
                  content: dict[str, Any]) -> int:
        async with self.id_gen.transaction() as ptxn:
            position = await ptxn.next_position()
            await ptxn.txn.execute(
                "INSERT INTO account_data (user_id, room_id, account_data_type, stream_id,"
                " instance_name, content) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id, room_id, account_data_type) DO UPDATE SET"
                " stream_id = excluded.stream_id, instance_name = excluded.instance_name,"
                " content = excluded.content",
                user_id, room_id, data_type, position, self.instance_name,
                orjson.dumps(content).decode())
            ptxn.add_row(position, AccountDataRow(user_id, room_id, data_type))
        return position

    async def get(self, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None:
        raw = await self.db.fetchval(
            "SELECT content FROM account_data WHERE user_id = ? AND room_id = ?"
            " AND account_data_type = ?", user_id, room_id, data_type)
        return orjson.loads(raw) if raw is not None else None

    async def changed_since(self, user_id: str, from_id: int | None, to_id: int,
                            ) -> dict[str, dict[str, dict[str, Any]]]:
        """room_id ('' for global) -> type -> content, for rows in (from_id, to_id]."""
        lower = "" if from_id is None else " AND stream_id > ?"
        args: list[Any] = [user_id, to_id] + ([] if from_id is None else [from_id])
        rows = await self.db.fetchall(
            f"SELECT room_id, account_data_type, content FROM account_data WHERE user_id = ?"
            f" AND stream_id <= ?{lower}", *args)
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for room_id, data_type, content in rows:
            out.setdefault(room_id, {})[data_type] = orjson.loads(content)
        return out
