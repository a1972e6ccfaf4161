"""Stream definitions: each stream's typed row and its ``updates_since``.

``updates_since(writer, from_token, to_token, limit)`` answers "what did
``writer`` write on this stream in (from_token, to_token]" from the database.
The same function serves live replication (a reader that saw a POSITION
fetches the rows it missed) and catch-up after a restart or a gap. It
returns the rows, the token it got up to (``to_token`` unless ``limit`` cut
it short) and whether it was limited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, ClassVar

from myelin.storage.engines import Database
from myelin.storage.stream_rows import (
    AccountDataRow,
    CachesRow,
    DeviceListsRow,
    EventsRow,
    PresenceRow,
    PushRulesRow,
    ReceiptsRow,
    ToDeviceRow,
    TypingRow,
)

Update = tuple[int, Any]


class Stream:
    NAME: ClassVar[str]
    ROW: ClassVar[type]
    # SELECT <position>, <row fields...> FROM <table> WHERE ... ; the writer
    # filter applies where the table records which instance wrote the row.
    QUERY: ClassVar[str]
    WRITER_COLUMN: ClassVar[str | None] = "instance_name"
    POSITION_COLUMN: ClassVar[str] = "stream_id"
    # The table whose position column a writer's generator continues from.
    TABLE: ClassVar[str]
    TABLE_POSITION: ClassVar[str] = "stream_id"

    def __init__(self, db: Database) -> None:
        self.db = db

    async def max_position(self, writer: str) -> int:
        """The highest position ``writer`` has in the table (0 if none)."""
        _, _, source = self.QUERY.partition(" FROM ")
        sql = f"SELECT MAX({self.POSITION_COLUMN}) FROM {source}"
        if self.WRITER_COLUMN:
            value = await self.db.fetchval(f"{sql} WHERE {self.WRITER_COLUMN} = ?", writer)
        else:
            value = await self.db.fetchval(sql)
        return int(value or 0)

    async def updates_since(self, writer: str, from_token: int, to_token: int,
                            limit: int = 1000) -> tuple[list[Update], int, bool]:
        if from_token >= to_token:
            return [], to_token, False
        writer_clause = f" AND {self.WRITER_COLUMN} = ?" if self.WRITER_COLUMN else ""
        args: list[Any] = [from_token, to_token] + ([writer] if self.WRITER_COLUMN else [])
        rows = await self.db.fetchall(
            f"{self.QUERY} WHERE {self.POSITION_COLUMN} > ? AND {self.POSITION_COLUMN} <= ?"
            f"{writer_clause} ORDER BY {self.POSITION_COLUMN} LIMIT ?", *args, limit + 1)
        if len(rows) <= limit:
            return [(r[0], self.ROW(*r[1:])) for r in rows], to_token, False
        # Never split one position's rows across two answers.
        boundary = rows[limit][0]
        kept = [r for r in rows[:limit] if r[0] < boundary]
        if not kept:  # one position holds more than `limit` rows: take it whole
            kept = await self.db.fetchall(
                f"{self.QUERY} WHERE {self.POSITION_COLUMN} = ?{writer_clause}",
                boundary, *([writer] if self.WRITER_COLUMN else []))
            return [(r[0], self.ROW(*r[1:])) for r in kept], boundary, True
        return [(r[0], self.ROW(*r[1:])) for r in kept], kept[-1][0], True


class EventsStream(Stream):
    TABLE = "events"
    TABLE_POSITION = "stream_ordering"
    NAME = "events"
    ROW = EventsRow
    QUERY = ("SELECT e.stream_ordering, e.event_id, e.room_id, e.type, e.state_key, e.sender,"
             " e.membership, r.redacts FROM events e"
             " LEFT JOIN redactions r ON r.event_id = e.event_id")
    POSITION_COLUMN = "e.stream_ordering"
    WRITER_COLUMN = "e.instance_name"


class ReceiptsStream(Stream):
    TABLE = "receipts"
    NAME = "receipts"
    ROW = ReceiptsRow
    QUERY = "SELECT stream_id, room_id, receipt_type, user_id, thread_id, event_id FROM receipts"


class PresenceStream(Stream):
    TABLE = "presence"
    NAME = "presence"
    ROW = PresenceRow
    QUERY = "SELECT stream_id, user_id, state FROM presence"
    WRITER_COLUMN = None


class ToDeviceStream(Stream):
    TABLE = "device_inbox"
    NAME = "to_device"
    ROW = ToDeviceRow
    QUERY = "SELECT stream_id, user_id, device_id FROM device_inbox"


class AccountDataStream(Stream):
    TABLE = "account_data"
    NAME = "account_data"
    ROW = AccountDataRow
    QUERY = "SELECT stream_id, user_id, room_id, account_data_type FROM account_data"


class DeviceListsStream(Stream):
    TABLE = "device_lists_stream"
    NAME = "device_lists"
    ROW = DeviceListsRow
    QUERY = "SELECT stream_id, user_id, device_id FROM device_lists_stream"
    WRITER_COLUMN = None


class PushRulesStream(Stream):
    TABLE = "push_rules_stream"
    NAME = "push_rules"
    ROW = PushRulesRow
    QUERY = "SELECT stream_id, user_id FROM push_rules_stream"
    WRITER_COLUMN = None


class CachesStream(Stream):
    TABLE = "cache_invalidation_stream"
    NAME = "caches"
    ROW = CachesRow
    QUERY = "SELECT stream_id, cache_name, keys FROM cache_invalidation_stream"


STREAM_CLASSES: Sequence[type[Stream]] = (
    EventsStream, ReceiptsStream, PresenceStream, ToDeviceStream, AccountDataStream,
    DeviceListsStream, PushRulesStream, CachesStream,
)

# Every stream's row type, the in-memory typing stream included.
ROW_TYPES: dict[str, type] = {cls.NAME: cls.ROW for cls in STREAM_CLASSES} | {"typing": TypingRow}


def encode_rows(rows: Sequence[Update]) -> list[Any]:
    """Rows for the wire: ``[position, {field: value}]``."""
    return [[position, asdict(row)] for position, row in rows]


def decode_rows(stream: str, raw: Sequence[Any]) -> list[Update]:
    row_type = ROW_TYPES[stream]
    return [(int(position), row_type(**fields)) for position, fields in raw]
