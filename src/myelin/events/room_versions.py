"""Room versions and the feature flags that distinguish them.

Every algorithm in this package (event ids, redaction, auth rules, state
resolution) branches on these flags rather than on the version string, so that
adding a version is a matter of adding a row here.  The flags follow the
differences spelled out in the spec's ``content/rooms/v1..v12.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = [
    "KNOWN_ROOM_VERSIONS",
    "STABLE_ROOM_VERSIONS",
    "EventFormat",
    "RoomVersion",
    "RoomVersions",
    "UnsupportedRoomVersion",
    "get_room_version",
]


class EventFormat:
    """Values for :attr:`RoomVersion.event_format`."""

    #: v1, v2: ``event_id`` is a ``$opaque:domain`` string inside the event.
    V1 = 1
    #: v3: event id is ``$`` + standard unpadded Base64 of the reference hash.
    V2 = 2
    #: v4+: event id is ``$`` + URL-safe unpadded Base64 of the reference hash.
    V3 = 3


@dataclass(frozen=True, slots=True)
class RoomVersion:
    """The behaviour of one room version, as a set of flags."""

    identifier: str
    #: See :class:`EventFormat`.
    event_format: int
    #: 1 (original, v1 only) or 2 (v2+).
    state_res: int
    #: v5+: signing keys must be valid at ``origin_server_ts``.
    enforce_key_validity: bool
    #: v1-v5: ``m.room.aliases`` has its own auth rule and survives redaction.
    special_case_aliases_auth: bool
    #: v1-v2: ``m.room.redaction`` has its own auth rule (redact level or same domain).
    redaction_auth_rule: bool
    #: v6+: events must be strict canonical JSON (no floats, bounded ints).
    strict_canonicaljson: bool
    #: v6+: ``notifications`` in power levels is covered by the auth rules.
    limit_notifications_power_levels: bool
    #: v1-v5: float power levels are truncated rather than invalid.
    floaty_power_levels: bool
    #: v7+: ``knock`` membership and join rule.
    knock_join_rule: bool
    #: v8+: ``restricted`` join rule; ``allow`` survives redaction of join rules.
    restricted_join_rule: bool
    #: v9+: ``join_authorised_via_users_server`` survives redaction of members.
    restricted_join_rule_fix: bool
    #: v10+: ``knock_restricted`` join rule.
    knock_restricted: bool
    #: v10+: power level values must be real integers (no strings).
    enforce_int_power_levels: bool
    #: v11+: the creator is the create event's ``sender``; no ``content.creator``.
    implicit_room_creator: bool
    #: v11+: updated redaction algorithm (and ``redacts`` moves into ``content``).
    updated_redaction_rules: bool
    #: v12: room id is ``!`` + the create event's reference hash; the create
    #: event has no ``room_id`` and is never listed in ``auth_events``.
    room_id_is_create_event_hash: bool
    #: v12: creators (create sender + ``additional_creators``) have infinite power.
    creators_infinite_power: bool
    #: v12: iterative auth checks start from empty state and the full conflicted
    #: set includes the conflicted state subgraph ("hydra").
    hydra_state_res: bool
    #: Whether the version is listed as stable in the spec.
    stable: bool = True


_V1 = RoomVersion(
    identifier="1",
    event_format=EventFormat.V1,
    state_res=1,
    enforce_key_validity=False,
    special_case_aliases_auth=True,
    redaction_auth_rule=True,
    strict_canonicaljson=False,
    limit_notifications_power_levels=False,
    floaty_power_levels=True,
    knock_join_rule=False,
    restricted_join_rule=False,
    restricted_join_rule_fix=False,
    knock_restricted=False,
    enforce_int_power_levels=False,
    implicit_room_creator=False,
    updated_redaction_rules=False,
    room_id_is_create_event_hash=False,
    creators_infinite_power=False,
    hydra_state_res=False,
)


def _derive(base: RoomVersion, identifier: str, **changes: object) -> RoomVersion:
    # Each version "builds on" the previous one in the spec; mirroring that
    # keeps each row down to what actually changed.
    return dataclasses.replace(base, identifier=identifier, **changes)  # type: ignore[arg-type]


_V2 = _derive(_V1, "2", state_res=2)
_V3 = _derive(_V2, "3", event_format=EventFormat.V2, redaction_auth_rule=False)
_V4 = _derive(_V3, "4", event_format=EventFormat.V3)
_V5 = _derive(_V4, "5", enforce_key_validity=True)
_V6 = _derive(
    _V5,
    "6",
    special_case_aliases_auth=False,
    strict_canonicaljson=True,
    limit_notifications_power_levels=True,
    floaty_power_levels=False,
)
_V7 = _derive(_V6, "7", knock_join_rule=True)
_V8 = _derive(_V7, "8", restricted_join_rule=True)
_V9 = _derive(_V8, "9", restricted_join_rule_fix=True)
_V10 = _derive(_V9, "10", knock_restricted=True, enforce_int_power_levels=True)
_V11 = _derive(_V10, "11", implicit_room_creator=True, updated_redaction_rules=True)
_V12 = _derive(
    _V11,
    "12",
    room_id_is_create_event_hash=True,
    creators_infinite_power=True,
    hydra_state_res=True,
)


class RoomVersions:
    """Namespace giving attribute access to each known version."""

    V1 = _V1
    V2 = _V2
    V3 = _V3
    V4 = _V4
    V5 = _V5
    V6 = _V6
    V7 = _V7
    V8 = _V8
    V9 = _V9
    V10 = _V10
    V11 = _V11
    V12 = _V12


KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {
    v.identifier: v for v in (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9, _V10, _V11, _V12)
}

STABLE_ROOM_VERSIONS: dict[str, RoomVersion] = {
    k: v for k, v in KNOWN_ROOM_VERSIONS.items() if v.stable
}


class UnsupportedRoomVersion(KeyError):
    """The room version identifier is not one we implement."""


def get_room_version(identifier: str) -> RoomVersion:
    """Look up a room version by its identifier (e.g. ``"10"``)."""
    try:
        return KNOWN_ROOM_VERSIONS[identifier]
    except (KeyError, TypeError):
        raise UnsupportedRoomVersion(identifier) from None
