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
from dataclasses import dataclass
from typing import Any, ClassVar

from myelin.storage.engines import Database

Update = tuple[int, Any]


@dataclass(frozen=True)
class EventsRow:
    event_id: str
    room_id: str
    type: str
    state_key: str | None
    sender: str
    membership: str | None


@dataclass(frozen=True)
class ReceiptsRow:
    room_id: str
    receipt_type: str
    user_id: str
    thread_id: str
    event_id: str


@dataclass(frozen=True)
class PresenceRow:
    user_id: str
    state: str


@dataclass(frozen=True)
class ToDeviceRow:
    user_id: str
    device_id: str


@dataclass(frozen=True)
class AccountDataRow:
    user_id: str
    room_id: str
    data_type: str


@dataclass(frozen=True)
class DeviceListsRow:
    user_id: str
    device_id: str


@dataclass(frozen=True)
class PushRulesRow:
    user_id: str


@dataclass(frozen=True)
class CachesRow:
    cache_name: str
    keys: str


class Stream:
    NAME: ClassVar[str]
    ROW: ClassVar[type]
    # SELECT <position>, <row fields...> FROM <table> WHERE ... ; the writer
    # filter applies where the table records which instance wrote the row.
    QUERY: ClassVar[str]
    WRITER_COLUMN: ClassVar[str | None] = "instance_name"
    POSITION_COLUMN: ClassVar[str] = "stream_id"

    def __init__(self, db: Database) -> None:
        self.db = db

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
    NAME = "events"
    ROW = EventsRow
    QUERY = ("SELECT stream_ordering, event_id, room_id, type, state_key, sender, membership"
             " FROM events")
    POSITION_COLUMN = "stream_ordering"


class ReceiptsStream(Stream):
    NAME = "receipts"
    ROW = ReceiptsRow
    QUERY = "SELECT stream_id, room_id, receipt_type, user_id, thread_id, event_id FROM receipts"


class PresenceStream(Stream):
    NAME = "presence"
    ROW = PresenceRow
    QUERY = "SELECT stream_id, user_id, state FROM presence"
    WRITER_COLUMN = None


class ToDeviceStream(Stream):
    NAME = "to_device"
    ROW = ToDeviceRow
    QUERY = "SELECT stream_id, user_id, device_id FROM device_inbox"


class AccountDataStream(Stream):
    NAME = "account_data"
    ROW = AccountDataRow
    QUERY = "SELECT stream_id, user_id, room_id, account_data_type FROM account_data"


class DeviceListsStream(Stream):
    NAME = "device_lists"
    ROW = DeviceListsRow
    QUERY = "SELECT stream_id, user_id, device_id FROM device_lists_stream"
    WRITER_COLUMN = None


class PushRulesStream(Stream):
    NAME = "push_rules"
    ROW = PushRulesRow
    QUERY = "SELECT stream_id, user_id FROM push_rules_stream"
    WRITER_COLUMN = None


class CachesStream(Stream):
    NAME = "caches"
    ROW = CachesRow
    QUERY = "SELECT stream_id, cache_name, keys FROM cache_invalidation_stream"


STREAM_CLASSES: Sequence[type[Stream]] = (
    EventsStream, ReceiptsStream, PresenceStream, ToDeviceStream, AccountDataStream,
    DeviceListsStream, PushRulesStream, CachesStream,
)
