"""The first of the checks on receipt of a PDU (server-server API, "Checks
performed on receipt of a PDU"): is it a valid event at all?

Pure: the size limit, the fields every event needs with their types, and
the form the room version's event format requires. Signatures, hashes and
the auth rules come afterwards (federation/event_handler.py).
"""

from __future__ import annotations

from typing import Any

from myelin.events.auth import is_valid_user_id
from myelin.events.canonical import CanonicalJSONError, encode_canonical_json
from myelin.events.room_versions import EventFormat, RoomVersion

__all__ = ["MAX_PDU_SIZE", "PduFormatError", "check_pdu_envelope", "check_pdu_format"]

MAX_PDU_SIZE = 65536
# The spec's limits on fields inside a PDU (characters; we count bytes as Synapse).
MAX_ID_LENGTH = 255
MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10


class PduFormatError(ValueError):
    """Why a PDU is not a valid event (the PDU is dropped)."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def _ref_list(pdu: dict[str, Any], key: str, room_version: RoomVersion, limit: int) -> None:
    value = pdu.get(key)
    if not isinstance(value, list):
        raise PduFormatError(f"{key} must be a list")
    if len(value) > limit:
        raise PduFormatError(f"too many {key} ({len(value)} > {limit})")
    for item in value:
        if room_version.event_format == EventFormat.V1:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                    and isinstance(item[1], dict)):
                raise PduFormatError(f"{key} entries must be [event_id, hashes] pairs")
        elif not isinstance(item, str) or not item.startswith("$"):
            raise PduFormatError(f"{key} entries must be event ids")


def check_pdu_envelope(pdu: Any, room_version: RoomVersion) -> None:
    """The part of :func:`check_pdu_format` that comes before the signatures:
    a JSON object, canonical JSON for the room version, within the size limit."""
    if not isinstance(pdu, dict):
        raise PduFormatError("a PDU must be a JSON object")
    try:
        size = len(encode_canonical_json(pdu, strict=room_version.strict_canonicaljson))
    except CanonicalJSONError as e:
        raise PduFormatError(f"not canonical JSON: {e}") from None
    if size > MAX_PDU_SIZE:
        raise PduFormatError(f"PDU is {size} bytes; the limit is {MAX_PDU_SIZE}",
                             too_large=True)


def check_pdu_format(pdu: Any, room_version: RoomVersion) -> None:
    """Raise :class:`PduFormatError` unless ``pdu`` is a well-formed event of
    ``room_version``."""
    check_pdu_envelope(pdu, room_version)
    for key in ("type", "sender"):
        if not isinstance(pdu.get(key), str):
            raise PduFormatError(f"{key} must be a string")
    is_v12_create = (room_version.room_id_is_create_event_hash
                     and pdu.get("type") == "m.room.create" and pdu.get("state_key") == "")
    if "room_id" in pdu or not is_v12_create:
        if not isinstance(pdu.get("room_id"), str) or not pdu["room_id"].startswith("!"):
            raise PduFormatError("room_id must be a room id")
    if not is_valid_user_id(pdu["sender"]):
        raise PduFormatError("sender must be a user id")
    for key in ("depth", "origin_server_ts"):
        value = pdu.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise PduFormatError(f"{key} must be an integer")
    if not isinstance(pdu.get("content"), dict):
        raise PduFormatError("content must be an object")
    if "state_key" in pdu and not isinstance(pdu["state_key"], str):
        raise PduFormatError("state_key must be a string")
    if not isinstance(pdu.get("hashes"), dict):
        raise PduFormatError("hashes must be an object")
    if not isinstance(pdu.get("signatures"), dict):
        raise PduFormatError("signatures must be an object")
    _ref_list(pdu, "prev_events", room_version, MAX_PREV_EVENTS)
    _ref_list(pdu, "auth_events", room_version, MAX_AUTH_EVENTS)
    if room_version.event_format == EventFormat.V1:
        event_id = pdu.get("event_id")
        if not isinstance(event_id, str) or not event_id.startswith("$") or ":" not in event_id:
            raise PduFormatError("event_id must be an event id")
    for key in ("type", "sender", "state_key", "room_id"):
        value = pdu.get(key)
        if isinstance(value, str) and len(value.encode()) > MAX_ID_LENGTH:
            raise PduFormatError(f"{key} is longer than {MAX_ID_LENGTH} bytes")
