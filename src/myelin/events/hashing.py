"""Content hashes, reference hashes and event ids (server-server API,
"Signing Events").

* The *content hash* covers the whole unredacted event and lets a receiver
  detect that it was given a redacted copy.
* The *reference hash* covers the redacted event (so it survives redaction)
  and is the event id in room versions 3 and later.
"""

from __future__ import annotations

import hashlib
from typing import Any

from myelin.events.canonical import (
    encode_canonical_json,
    unpadded_b64decode,
    unpadded_b64encode,
    unpadded_urlsafe_b64encode,
)
from myelin.events.redaction import prune_event_dict
from myelin.events.room_versions import EventFormat, RoomVersion

__all__ = [
    "add_content_hash",
    "check_content_hash",
    "compute_content_hash",
    "compute_event_id",
    "compute_reference_hash",
]


def _strict(room_version: RoomVersion | None) -> bool:
    # Old room versions may legitimately contain floats or huge ints; we
    # still need to hash them to interoperate.
    return room_version is None or room_version.strict_canonicaljson


def compute_content_hash(pdu: dict[str, Any], room_version: RoomVersion | None = None) -> bytes:
    """SHA-256 of the canonical JSON of ``pdu`` without unsigned/signatures/hashes."""
    stripped = {k: v for k, v in pdu.items() if k not in ("unsigned", "signatures", "hashes")}
    return hashlib.sha256(encode_canonical_json(stripped, strict=_strict(room_version))).digest()


def add_content_hash(
    pdu: dict[str, Any], room_version: RoomVersion | None = None
) -> dict[str, Any]:
    """Return a shallow copy of ``pdu`` with ``hashes.sha256`` set."""
    out = dict(pdu)
    out["hashes"] = {"sha256": unpadded_b64encode(compute_content_hash(pdu, room_version))}
    return out


def check_content_hash(pdu: dict[str, Any], room_version: RoomVersion | None = None) -> bool:
    """Whether ``hashes.sha256`` matches the event.

    ``False`` means the event was (or has to be treated as) redacted.
    """
    hashes = pdu.get("hashes")
    if not isinstance(hashes, dict) or not isinstance(hashes.get("sha256"), str):
        return False
    try:
        claimed = unpadded_b64decode(hashes["sha256"])
    except ValueError:
        return False
    return claimed == compute_content_hash(pdu, room_version)


def compute_reference_hash(pdu: dict[str, Any], room_version: RoomVersion) -> bytes:
    """SHA-256 of the redacted event minus ``signatures`` and ``unsigned``."""
    pruned = prune_event_dict(pdu, room_version)
    if room_version.event_format != EventFormat.V1:
        # From v3 on the event id *is* this hash, so it cannot be an input;
        # a stray ``event_id`` (e.g. from Event.get_dict()) is ignored.
        pruned.pop("event_id", None)
    pruned.pop("signatures", None)
    pruned.pop("unsigned", None)
    return hashlib.sha256(encode_canonical_json(pruned, strict=_strict(room_version))).digest()


def compute_event_id(pdu: dict[str, Any], room_version: RoomVersion) -> str:
    """Event id for formats 2 (v3) and 3 (v4+).

    Format 1 (v1/v2) ids are chosen by the origin server and carried in the
    event, so asking for one is a programming error (``ValueError``).
    """
    if room_version.event_format == EventFormat.V1:
        raise ValueError(f"room version {room_version.identifier} events carry their own event_id")
    digest = compute_reference_hash(pdu, room_version)
    if room_version.event_format == EventFormat.V2:
        return "$" + unpadded_b64encode(digest)
    return "$" + unpadded_urlsafe_b64encode(digest)
