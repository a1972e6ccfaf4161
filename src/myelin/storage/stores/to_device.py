"""To-device messages (the `to_device` stream): an inbox per device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from myelin.storage.engines import Database
from myelin.storage.id_generators import StreamIdGenerator
from myelin.storage.stores.federation_sender import add_to_outbox
from myelin.storage.stream_rows import ToDeviceRow


class ToDeviceStore:
    def __init__(self, db: Database, id_gen: StreamIdGenerator, instance_name: str) -> None:
        self.db = db
        self.id_gen = id_gen
        self.instance_name = instance_name

    async def add_messages(self, sender: str, sender_device: str, txn_id: str | None,
                           messages: Sequence[tuple[str, str, dict[str, Any]]],
                           remote: Sequence[tuple[str, dict[str, Any]]] = ()) -> int | None:
        """Queue (user, device, message) rows, and (destination, m.direct_to_device
        content) EDUs for remote users in the federation outbox, in one transaction;
        None if this txn id was already used."""
        async with self.id_gen.transaction() as ptxn:
            txn = ptxn.txn
            if txn_id is not None:
                seen = await txn.fetchone(
                    "SELECT 1 FROM to_device_txns WHERE user_id = ? AND device_id = ?"
                    " AND txn_id = ?", sender, sender_device, txn_id)
                if seen:
                    return None
                await txn.execute(
                    "INSERT INTO to_device_txns (user_id, device_id, txn_id, inserted_ts)"
                    " VALUES (?, ?, ?, 0)", sender, sender_device, txn_id)
            if remote:
                await add_to_outbox(txn, [(d, "m.direct_to_device", c) for d, c in remote])
            if not messages:
                return None
            position = await ptxn.next_position()
            await txn.executemany(
                "INSERT INTO device_inbox (stream_id, user_id, device_id, instance_name,"
                " message_json) VALUES (?, ?, ?, ?, ?)",
                [(position, user, device, self.instance_name, orjson.dumps(msg).decode())
                 for user, device, msg in messages])
            for user, device in sorted({(u, d) for u, d, _ in messages}):
                ptxn.add_row(position, ToDeviceRow(user, device))
        return position

    async def get_messages(self, user_id: str, device_id: str, from_id: int, to_id: int,
                           limit: int) -> tuple[list[dict[str, Any]], int]:
        """Messages in (from_id, to_id]; returns them and the position reached."""
        rows = await self.db.fetchall(
            "SELECT stream_id, message_json FROM device_inbox WHERE user_id = ?"
            " AND device_id = ? AND stream_id > ? AND stream_id <= ?"
            " ORDER BY stream_id LIMIT ?", user_id, device_id, from_id, to_id, limit)
        if len(rows) < limit:
            return [orjson.loads(r[1]) for r in rows], to_id
        # Stop at a position boundary so no message of a position is split.
        last = rows[-1][0]
        kept = [r for r in rows if r[0] < last] or rows
        reached = kept[-1][0]
        return [orjson.loads(r[1]) for r in kept], reached

    async def delete_up_to(self, user_id: str, device_id: str, up_to: int) -> int:
        return await self.db.execute(
            "DELETE FROM device_inbox WHERE user_id = ? AND device_id = ? AND stream_id <= ?",
            user_id, device_id, up_to)

    async def delete_device_inbox(self, user_id: str, device_id: str) -> None:
        await self.db.execute("DELETE FROM device_inbox WHERE user_id = ? AND device_id = ?",
                              user_id, device_id)
