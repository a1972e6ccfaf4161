"""Sync filters: stored per user, or given inline; validated and read here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from myelin.domain import bad_json, not_found, parse_json_object

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

DEFAULT_TIMELINE_LIMIT = 10


def _str_list(value: Any, name: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_json(f"{name} must be a list of strings")
    return list(value)


def _id_list(value: Any, name: str, sigil: str) -> list[str] | None:
    """A list of room ids (``!...``; from room version 12 without a server
    part) or user ids (``@local:server``)."""
    ids = _str_list(value, name)
    for item in ids or ():
        if not item.startswith(sigil) or len(item) < 2 or (sigil == "@" and ":" not in item):
            raise bad_json(f"{name} must contain only {'room' if sigil == '!' else 'user'}"
                           f" IDs, not {item!r}")
    return ids


def _bool(raw: dict[str, Any], key: str, name: str) -> bool:
    """A boolean filter field: JSON true or false, not "true" or 1."""
    value = raw.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_json(f"{name}.{key} must be a boolean")
    return value


def _matches(value: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        if pattern == value:
            return True
        if pattern.endswith("*") and value.startswith(pattern[:-1]):
            return True
    return False


@dataclass
class EventFilter:
    """The common event filter: limit, types, senders, rooms (and their negations)."""

    limit: int | None = None
    types: list[str] | None = None
    not_types: list[str] = field(default_factory=list)
    senders: list[str] | None = None
    not_senders: list[str] = field(default_factory=list)
    rooms: list[str] | None = None
    not_rooms: list[str] = field(default_factory=list)
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    # Only meaningful on room.timeline of a /sync filter: per-thread counts.
    unread_thread_notifications: bool = False

    @classmethod
    def parse(cls, raw: Any, name: str) -> EventFilter:
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise bad_json(f"{name} must be an object")
        limit = raw.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 0):
            raise bad_json(f"{name}.limit must be a non-negative integer")
        return cls(
            limit=limit,
            types=_str_list(raw.get("types"), f"{name}.types"),
            not_types=_str_list(raw.get("not_types"), f"{name}.not_types") or [],
            senders=_id_list(raw.get("senders"), f"{name}.senders", "@"),
            not_senders=_id_list(raw.get("not_senders"), f"{name}.not_senders", "@") or [],
            rooms=_id_list(raw.get("rooms"), f"{name}.rooms", "!"),
            not_rooms=_id_list(raw.get("not_rooms"), f"{name}.not_rooms", "!") or [],
            lazy_load_members=_bool(raw, "lazy_load_members", name),
            include_redundant_members=_bool(raw, "include_redundant_members", name),
            unread_thread_notifications=raw.get("unread_thread_notifications") is True,
        )

    def allows_type(self, event_type: str) -> bool:
        if _matches(event_type, self.not_types):
            return False
        return self.types is None or _matches(event_type, self.types)

    def allows(self, event_type: str, sender: str | None = None,
               room_id: str | None = None) -> bool:
        if not self.allows_type(event_type):
            return False
        if sender is not None:
            if sender in self.not_senders:
                return False
            if self.senders is not None and sender not in self.senders:
                return False
        return room_id is None or self.allows_room(room_id)

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    @property
    def blocks_everything(self) -> bool:
        return self.limit == 0 or self.types == [] or "*" in self.not_types


@dataclass
class SyncFilter:
    timeline: EventFilter
    state: EventFilter
    ephemeral: EventFilter
    room_account_data: EventFilter
    presence: EventFilter
    account_data: EventFilter
    rooms: list[str] | None
    not_rooms: list[str]
    include_leave: bool
    event_fields: list[str] | None
    event_format: str

    @property
    def timeline_limit(self) -> int:
        return self.timeline.limit if self.timeline.limit is not None else \
            DEFAULT_TIMELINE_LIMIT

    @property
    def lazy_load_members(self) -> bool:
        return self.state.lazy_load_members

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> SyncFilter:
        room = raw.get("room") or {}
        if not isinstance(room, dict):
            raise bad_json("room must be an object")
        event_fields = _str_list(raw.get("event_fields"), "event_fields")
        event_format = raw.get("event_format", "client")
        if event_format not in ("client", "federation"):
            raise bad_json("event_format must be client or federation")
        return cls(
            timeline=EventFilter.parse(room.get("timeline"), "room.timeline"),
            state=EventFilter.parse(room.get("state"), "room.state"),
            ephemeral=EventFilter.parse(room.get("ephemeral"), "room.ephemeral"),
            room_account_data=EventFilter.parse(room.get("account_data"), "room.account_data"),
            presence=EventFilter.parse(raw.get("presence"), "presence"),
            account_data=EventFilter.parse(raw.get("account_data"), "account_data"),
            rooms=_id_list(room.get("rooms"), "room.rooms", "!"),
            not_rooms=_id_list(room.get("not_rooms"), "room.not_rooms", "!") or [],
            include_leave=_bool(room, "include_leave", "room"),
            event_fields=event_fields,
            event_format=event_format,
        )


class FilterHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def create(self, user_id: str, body: dict[str, Any]) -> str:
        SyncFilter.parse(body)  # refuse what we could not apply later
        return str(await self.hs.stores.accounts.add_filter(user_id, body))

    async def get(self, user_id: str, filter_id: str) -> dict[str, Any]:
        try:
            number = int(filter_id)
        except ValueError:
            raise not_found("No such filter") from None
        found = await self.hs.stores.accounts.get_filter(user_id, number)
        if found is None:
            raise not_found("No such filter")
        return found

    async def resolve(self, user_id: str, value: str | None) -> SyncFilter:
        """A ``filter`` query parameter: a stored filter id or inline JSON."""
        if not value:
            return SyncFilter.parse({})
        if value.lstrip().startswith("{"):
            return SyncFilter.parse(parse_json_object(value, "filter"))
        return SyncFilter.parse(await self.get(user_id, value))
