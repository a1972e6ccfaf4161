"""The redaction algorithm ("pruning") for every room version.

Redaction strips an event down to the keys the protocol needs to keep the room
DAG and its authorization working.  It is used both when a redaction is
applied and, more importantly, to compute the signed form and the reference
hash of every event, so it must match other servers byte for byte.

Four variants exist in the spec (v1, v6, v8/v9 and v11 fragments); they are
selected by flags on :class:`~myelin.events.room_versions.RoomVersion`.
"""

from __future__ import annotations

import copy
from typing import Any

from myelin.events.room_versions import RoomVersion

__all__ = ["prune_event_dict"]

# Top-level keys kept by every version.
_COMMON_TOP_LEVEL = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "auth_events",
        "origin_server_ts",
    }
)
# Dropped by the v11 rules: they were never used by the protocol.
_PRE_V11_EXTRA_TOP_LEVEL = frozenset({"prev_state", "origin", "membership"})

_POWER_LEVEL_KEYS = (
    "ban",
    "events",
    "events_default",
    "kick",
    "redact",
    "state_default",
    "users",
    "users_default",
)


def _allowed_content_keys(event_type: str, rv: RoomVersion) -> frozenset[str] | None:
    """Content keys kept for ``event_type``; ``None`` means keep everything."""
    if event_type == "m.room.member":
        keys = {"membership"}
        if rv.restricted_join_rule_fix:
            keys.add("join_authorised_via_users_server")
        return frozenset(keys)
    if event_type == "m.room.create":
        # v11 keeps the whole create content (room_version, m.federate, ...)
        # because the auth rules depend on it.
        return None if rv.updated_redaction_rules else frozenset({"creator"})
    if event_type == "m.room.join_rules":
        return frozenset({"join_rule", "allow"} if rv.restricted_join_rule else {"join_rule"})
    if event_type == "m.room.power_levels":
        keys = set(_POWER_LEVEL_KEYS)
        if rv.updated_redaction_rules:
            keys.add("invite")
        return frozenset(keys)
    if event_type == "m.room.history_visibility":
        return frozenset({"history_visibility"})
    if event_type == "m.room.aliases" and rv.special_case_aliases_auth:
        return frozenset({"aliases"})
    if event_type == "m.room.redaction" and rv.updated_redaction_rules:
        return frozenset({"redacts"})
    return frozenset()


def prune_event_dict(pdu: dict[str, Any], room_version: RoomVersion) -> dict[str, Any]:
    """Return a redacted deep copy of ``pdu`` according to ``room_version``.

    The input is not modified.  ``unsigned`` is dropped like any other
    non-listed key; callers that want to keep local metadata (e.g.
    ``redacted_because``) add it back themselves.
    """
    keep = _COMMON_TOP_LEVEL
    if not room_version.updated_redaction_rules:
        keep = keep | _PRE_V11_EXTRA_TOP_LEVEL
    out: dict[str, Any] = {k: copy.deepcopy(v) for k, v in pdu.items() if k in keep}

    content = pdu.get("content")
    if "content" in out:
        if not isinstance(content, dict):
            # Malformed content cannot carry protected keys; an empty object
            # is the only sensible redacted form.
            out["content"] = {}
        else:
            allowed = _allowed_content_keys(str(pdu.get("type", "")), room_version)
            if allowed is None:
                new_content = copy.deepcopy(content)
            else:
                new_content = {k: copy.deepcopy(v) for k, v in content.items() if k in allowed}
            if (
                room_version.updated_redaction_rules
                and pdu.get("type") == "m.room.member"
                and isinstance(content.get("third_party_invite"), dict)
                and "signed" in content["third_party_invite"]
            ):
                # v11: the signed block of a third-party invite is needed to
                # re-check the invite's auth rule after redaction.
                new_content["third_party_invite"] = {
                    "signed": copy.deepcopy(content["third_party_invite"]["signed"])
                }
            out["content"] = new_content
    return out
