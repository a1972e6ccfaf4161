"""Presence of local users (the `presence` stream)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from myelin.storage.engines import Database
from myelin.storage.id_generators import StreamIdGenerator
from myelin.storage.stream_rows import PresenceRow


@dataclass(frozen=True)
class PresenceState:
    user_id: str
    stream_id: int
    state: str
    status_msg: str | None
    last_active_ts: int
    last_user_sync_ts: int
    currently_active: bool


class PresenceStore:
    def __init__(self, db: Database, id_gen: StreamIdGenerator) -> None:
        self.db = db
        self.id_gen = id_gen

    async def update(self, user_id: str, state: str, status_msg: str | None,
                     last_active_ts: int, last_user_sync_ts: int,
                     currently_active: bool) -> int:
        async with self.id_gen.transaction() as ptxn:
            position = await ptxn.next_position()
            await ptxn.txn.execute(
                "INSERT INTO presence (user_id, stream_id, state, status_msg, last_active_ts,"
                " last_user_sync_ts, currently_active) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id,"
                " state = excluded.state, status_msg = excluded.status_msg,"
                " last_active_ts = excluded.last_active_ts,"
                " last_user_sync_ts = excluded.last_user_sync_ts,"
                " currently_active = excluded.currently_active",
                user_id, position, state, status_msg, last_active_ts, last_user_sync_ts,
                int(currently_active))
            ptxn.add_row(position, PresenceRow(user_id, state))
        return position

    async def get(self, user_ids: Sequence[str]) -> dict[str, PresenceState]:
        out: dict[str, PresenceState] = {}
        for start in range(0, len(user_ids), 200):
            chunk = list(user_ids[start:start + 200])
            marks = ",".join("?" * len(chunk))
            rows = await self.db.fetchall(
                f"SELECT user_id, stream_id, state, status_msg, last_active_ts,"
                f" last_user_sync_ts, currently_active FROM presence"
                f" WHERE user_id IN ({marks})", *chunk)
            for r in rows:
                out[r[0]] = PresenceState(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]))
        return out

    async def changed_between(self, from_id: int, to_id: int) -> list[PresenceState]:
        rows = await self.db.fetchall(
            "SELECT user_id, stream_id, state, status_msg, last_active_ts, last_user_sync_ts,"
            " currently_active FROM presence WHERE stream_id > ? AND stream_id <= ?",
            from_id, to_id)
        return [PresenceState(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]

    async def all_active(self) -> list[PresenceState]:
        rows = await self.db.fetchall(
            "SELECT user_id, stream_id, state, status_msg, last_active_ts, last_user_sync_ts,"
            " currently_active FROM presence WHERE state != 'offline'")
        return [PresenceState(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]
