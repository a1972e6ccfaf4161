"""Content reports: events, rooms and users that users reported to the admins.

Written by the client API's report endpoints; read by the admin API
(``/_synapse/admin/v1/event_reports``, Synapse's shapes: ``id``,
``received_ts``, ``room_id``, ``event_id``, ``user_id``, ``reason``,
``score``), which pages them by id, newest first by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from myelin.storage.engines import Database


@dataclass(frozen=True)
class EventReport:
    id: int
    received_ts: int
    room_id: str
    event_id: str
    user_id: str
    reason: str | None
    content: dict[str, Any]  # the report as sent: reason, score

    @property
    def score(self) -> int | None:
        score = self.content.get("score")
        return score if isinstance(score, int) else None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "received_ts": self.received_ts, "room_id": self.room_id,
                "event_id": self.event_id, "user_id": self.user_id, "reason": self.reason,
                "score": self.score}


@dataclass(frozen=True)
class RoomReport:
    id: int
    received_ts: int
    room_id: str
    user_id: str
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "received_ts": self.received_ts, "room_id": self.room_id,
                "user_id": self.user_id, "reason": self.reason}


@dataclass(frozen=True)
class UserReport:
    id: int
    received_ts: int
    target_user_id: str
    user_id: str
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "received_ts": self.received_ts,
                "target_user_id": self.target_user_id, "user_id": self.user_id,
                "reason": self.reason}


_EVENT_COLUMNS = "id, received_ts, room_id, event_id, user_id, reason, content"
_ROOM_COLUMNS = "id, received_ts, room_id, user_id, reason"
_USER_COLUMNS = "id, received_ts, target_user_id, user_id, reason"


def _event_report(row: Sequence[Any]) -> EventReport:
    return EventReport(int(row[0]), int(row[1]), row[2], row[3], row[4], row[5],
                       orjson.loads(row[6]))


def _room_report(row: Sequence[Any]) -> RoomReport:
    return RoomReport(int(row[0]), int(row[1]), row[2], row[3], row[4])


def _user_report(row: Sequence[Any]) -> UserReport:
    return UserReport(int(row[0]), int(row[1]), row[2], row[3], row[4])


class ReportStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- writes (client API) -----------------------------------------------
    async def _insert(self, sql: str, *args: Any) -> Any:
        # In a transaction: outside one, SQLite would read on a reader thread.
        async with self.db.transaction() as txn:
            return await txn.fetchval(sql, *args)

    async def add_event_report(self, *, received_ts: int, room_id: str, event_id: str,
                               user_id: str, reason: str | None,
                               content: dict[str, Any]) -> int:
        value = await self._insert(
            "INSERT INTO event_reports (received_ts, room_id, event_id, user_id, reason,"
            " content) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            received_ts, room_id, event_id, user_id, reason, orjson.dumps(content).decode())
        return int(value)

    async def add_room_report(self, *, received_ts: int, room_id: str, user_id: str,
                              reason: str | None) -> int:
        value = await self._insert(
            "INSERT INTO room_reports (received_ts, room_id, user_id, reason)"
            " VALUES (?, ?, ?, ?) RETURNING id", received_ts, room_id, user_id, reason)
        return int(value)

    async def add_user_report(self, *, received_ts: int, target_user_id: str, user_id: str,
                              reason: str | None) -> int:
        value = await self._insert(
            "INSERT INTO user_reports (received_ts, target_user_id, user_id, reason)"
            " VALUES (?, ?, ?, ?) RETURNING id", received_ts, target_user_id, user_id, reason)
        return int(value)

    # -- reads (admin API) -------------------------------------------------
    async def _list(self, table: str, columns: str, *, start: int, limit: int,
                    newest_first: bool, filters: dict[str, str | None],
                    ) -> tuple[list[Sequence[Any]], int]:
        where, args = [], []
        for column, value in filters.items():
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        total = await self.db.fetchval(f"SELECT COUNT(*) FROM {table}{clause}", *args)
        order = "DESC" if newest_first else "ASC"
        rows = await self.db.fetchall(
            f"SELECT {columns} FROM {table}{clause} ORDER BY id {order} LIMIT ? OFFSET ?",
            *args, limit, start)
        return list(rows), int(total or 0)

    async def list_event_reports(self, *, start: int = 0, limit: int = 100,
                                 newest_first: bool = True, room_id: str | None = None,
                                 user_id: str | None = None,
                                 ) -> tuple[list[EventReport], int]:
        """A page of event reports and how many match in all (the admin API's
        ``from``/``limit``/``dir``/``room_id``/``user_id``)."""
        rows, total = await self._list("event_reports", _EVENT_COLUMNS, start=start,
                                       limit=limit, newest_first=newest_first,
                                       filters={"room_id": room_id, "user_id": user_id})
        return [_event_report(r) for r in rows], total

    async def get_event_report(self, report_id: int) -> EventReport | None:
        row = await self.db.fetchone(
            f"SELECT {_EVENT_COLUMNS} FROM event_reports WHERE id = ?", report_id)
        return None if row is None else _event_report(row)

    async def delete_event_report(self, report_id: int) -> bool:
        return await self.db.execute("DELETE FROM event_reports WHERE id = ?", report_id) > 0

    async def list_room_reports(self, *, start: int = 0, limit: int = 100,
                                newest_first: bool = True, room_id: str | None = None,
                                user_id: str | None = None,
                                ) -> tuple[list[RoomReport], int]:
        rows, total = await self._list("room_reports", _ROOM_COLUMNS, start=start,
                                       limit=limit, newest_first=newest_first,
                                       filters={"room_id": room_id, "user_id": user_id})
        return [_room_report(r) for r in rows], total

    async def get_room_report(self, report_id: int) -> RoomReport | None:
        row = await self.db.fetchone(
            f"SELECT {_ROOM_COLUMNS} FROM room_reports WHERE id = ?", report_id)
        return None if row is None else _room_report(row)

    async def delete_room_report(self, report_id: int) -> bool:
        return await self.db.execute("DELETE FROM room_reports WHERE id = ?", report_id) > 0

    async def list_user_reports(self, *, start: int = 0, limit: int = 100,
                                newest_first: bool = True, target_user_id: str | None = None,
                                user_id: str | None = None,
                                ) -> tuple[list[UserReport], int]:
        rows, total = await self._list(
            "user_reports", _USER_COLUMNS, start=start, limit=limit,
            newest_first=newest_first,
            filters={"target_user_id": target_user_id, "user_id": user_id})
        return [_user_report(r) for r in rows], total

    async def get_user_report(self, report_id: int) -> UserReport | None:
        row = await self.db.fetchone(
            f"SELECT {_USER_COLUMNS} FROM user_reports WHERE id = ?", report_id)
        return None if row is None else _user_report(row)

    async def delete_user_report(self, report_id: int) -> bool:
        return await self.db.execute("DELETE FROM user_reports WHERE id = ?", report_id) > 0
