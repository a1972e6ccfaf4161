"""The :class:`Event` wrapper around a PDU dict.

An :class:`Event` gives typed, version-aware access to the fields of a PDU
(for instance ``redacts`` lives at the top level before v11 and in
``content`` afterwards) and knows its own event id.  The PDU is copied on
construction so that later mutation by the caller cannot change an event's
id or hashes behind our back; only :attr:`Event.unsigned` is meant to be
mutated (it is not covered by hashes or signatures).
"""

from __future__ import annotations

import copy
from typing import Any

from myelin.events.canonical import decode_json
from myelin.events.hashing import compute_event_id
from myelin.events.room_versions import EventFormat, RoomVersion

__all__ = ["Event", "InvalidEventError"]


class InvalidEventError(ValueError):
    """The PDU is structurally unusable (missing or mistyped required fields)."""


def _str_field(pdu: dict[str, Any], key: str) -> str:
    value = pdu.get(key)
    if not isinstance(value, str):
        raise InvalidEventError(f"event field {key!r} must be a string")
    return value


def _id_list(pdu: dict[str, Any], key: str, event_format: int) -> list[str]:
    value = pdu.get(key, [])
    if not isinstance(value, list):
        raise InvalidEventError(f"event field {key!r} must be a list")
    out: list[str] = []
    for item in value:
        # Format 1 references are [event_id, {hashes}] pairs; later formats
        # are bare ids.
        if event_format == EventFormat.V1 and isinstance(item, list) and item:
            item = item[0]
        if not isinstance(item, str):
            raise InvalidEventError(f"event field {key!r} contains a non-string id")
        out.append(item)
    return out


class Event:
    """An immutable-ish view of one PDU in a room of a given version."""

    __slots__ = (
        "_pdu",
        "auth_event_ids",
        "content",
        "depth",
        "event_id",
        "origin_server_ts",
        "prev_event_ids",
        "redacts",
        "room_id",
        "room_version",
        "sender",
        "state_key",
        "type",
        "unsigned",
    )

    event_id: str
    room_id: str
    type: str
    state_key: str | None
    sender: str
    content: dict[str, Any]
    prev_event_ids: list[str]
    auth_event_ids: list[str]
    depth: int
    origin_server_ts: int
    redacts: str | None
    unsigned: dict[str, Any]
    room_version: RoomVersion

    def __init__(
        self,
        pdu: dict[str, Any],
        room_version: RoomVersion,
        event_id: str | None = None,
    ) -> None:
        if not isinstance(pdu, dict):
            raise InvalidEventError("a PDU must be a JSON object")
        pdu = copy.deepcopy(pdu)
        unsigned = pdu.pop("unsigned", None)
        self._pdu = pdu
        self.room_version = room_version
        self.unsigned = unsigned if isinstance(unsigned, dict) else {}

        fmt = room_version.event_format
        if event_id is None:
            if fmt == EventFormat.V1:
                event_id = _str_field(pdu, "event_id")
            else:
                event_id = compute_event_id(pdu, room_version)
        self.event_id = event_id

        self.type = _str_field(pdu, "type")
        self.sender = _str_field(pdu, "sender")
        state_key = pdu.get("state_key")
        if state_key is not None and not isinstance(state_key, str):
            raise InvalidEventError("event field 'state_key' must be a string")
        self.state_key = state_key
        content = pdu.get("content", {})
        if not isinstance(content, dict):
            raise InvalidEventError("event field 'content' must be an object")
        self.content = content

        if (
            room_version.room_id_is_create_event_hash
            and self.type == "m.room.create"
            and self.state_key == ""
            and "room_id" not in pdu
        ):
            # v12: the room is named after its create event, which therefore
            # cannot contain the room id itself.
            self.room_id = "!" + event_id[1:]
        else:
            self.room_id = _str_field(pdu, "room_id")

        self.prev_event_ids = _id_list(pdu, "prev_events", fmt)
        self.auth_event_ids = _id_list(pdu, "auth_events", fmt)
        depth = pdu.get("depth", 0)
        ts = pdu.get("origin_server_ts", 0)
        if isinstance(depth, bool) or not isinstance(depth, int):
            raise InvalidEventError("event field 'depth' must be an integer")
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise InvalidEventError("event field 'origin_server_ts' must be an integer")
        self.depth = depth
        self.origin_server_ts = ts

        redacts: Any
        if room_version.updated_redaction_rules:
            redacts = content.get("redacts")
        else:
            redacts = pdu.get("redacts")
        self.redacts = redacts if isinstance(redacts, str) else None

    @classmethod
    def from_json(
        cls, data: str | bytes, room_version: RoomVersion, event_id: str | None = None
    ) -> Event:
        """Parse a JSON PDU and wrap it."""
        pdu = decode_json(data)
        if not isinstance(pdu, dict):
            raise InvalidEventError("a PDU must be a JSON object")
        return cls(pdu, room_version, event_id)

    def is_state(self) -> bool:
        """State events are exactly those with a ``state_key`` (even ``""``)."""
        return self.state_key is not None

    @property
    def membership(self) -> str | None:
        m = self.content.get("membership")
        return m if isinstance(m, str) else None

    @property
    def hashes(self) -> dict[str, Any]:
        h = self._pdu.get("hashes")
        return h if isinstance(h, dict) else {}

    @property
    def signatures(self) -> dict[str, Any]:
        s = self._pdu.get("signatures")
        return s if isinstance(s, dict) else {}

    def get(self, key: str, default: Any = None) -> Any:
        """Raw top-level PDU field (no copy; do not mutate)."""
        return self._pdu.get(key, default)

    def get_pdu_json(self) -> dict[str, Any]:
        """The federation form: a deep copy of the PDU plus ``unsigned`` if any."""
        out = copy.deepcopy(self._pdu)
        if self.unsigned:
            out["unsigned"] = copy.deepcopy(self.unsigned)
        return out

    def get_dict(self) -> dict[str, Any]:
        """Like :meth:`get_pdu_json` but always with ``event_id`` and ``room_id``.

        This is the form local code and clients want.  It is not the hashed
        form for v12 create events (their ``room_id`` is derived), so do not
        feed it back into hashing or signing.
        """
        out = self.get_pdu_json()
        out["event_id"] = self.event_id
        out["room_id"] = self.room_id
        return out

    def shallow_dict(self) -> dict[str, Any]:
        """A top-level copy of the PDU with ``event_id`` and ``room_id``, for
        serving: nested values are shared with this event, so callers may
        replace top-level keys but must not mutate anything below them."""
        out = dict(self._pdu)
        out["event_id"] = self.event_id
        out["room_id"] = self.room_id
        return out

    def __repr__(self) -> str:
        return (
            f"<Event {self.event_id} type={self.type!r} state_key={self.state_key!r} "
            f"sender={self.sender!r}>"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self.event_id == other.event_id and self._pdu == other._pdu

    def __hash__(self) -> int:
        return hash(self.event_id)
