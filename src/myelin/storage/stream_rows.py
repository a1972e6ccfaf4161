"""The typed row of every stream: what a writer announces and a reader applies.

Stores build these as they write (``PositionTransaction.add_row``); the
replication layer carries them between processes and ``updates_since``
reads the same shapes back from the tables.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EventsRow:
    event_id: str
    room_id: str
    type: str
    state_key: str | None
    sender: str
    membership: str | None
    redacts: str | None = None
    # What a reader needs to serve the event without reading it back: set by
    # the writer on the bus, absent from rows read back by updates_since.
    json: str | None = None
    room_version: str | None = None
    state_group: int | None = None
    replaces_state: str | None = None
    txn: list[str] | None = None


@dataclass(frozen=True)
class TypingRow:
    """Who is typing in a room now (the whole list: a lost row heals itself)."""

    room_id: str
    user_ids: list[str]


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
