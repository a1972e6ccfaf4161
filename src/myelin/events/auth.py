"""The authorization rules for events, for every room version.

:func:`check_auth` decides whether an event is allowed given the room state
relevant to it (create, power levels, join rules, the sender's and target's
memberships, third-party invites).  It is written once, following the v12
text of the rules, with room-version flags selecting the older behaviour
(v1 aliases/redaction rules, v7 knocking, v8 restricted joins, v10 integer
power levels, v11 implicit creator, v12 creators with infinite power).

Checks that need keys or storage are deliberately not here: event signatures,
the ``join_authorised_via_users_server`` signature (rule 4.2/5.2) and whether
auth events were themselves rejected are the caller's business.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import nacl.exceptions
import nacl.signing

from myelin.events.canonical import (
    CanonicalJSONError,
    encode_canonical_json,
    unpadded_b64decode,
    unpadded_urlsafe_b64decode,
)
from myelin.events.event import Event
from myelin.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion

__all__ = [
    "AuthError",
    "StateKey",
    "auth_types_for_event",
    "check_auth",
    "check_auth_events_list",
    "get_creators",
    "get_named_level",
    "get_power_levels",
    "get_send_level",
    "get_user_power_level",
    "is_valid_user_id",
]

StateKey = tuple[str, str]
AuthEvents = Mapping[StateKey, Event]

CREATE = ("m.room.create", "")
POWER_LEVELS = ("m.room.power_levels", "")
JOIN_RULES = ("m.room.join_rules", "")

#: Power of v12 room creators: greater than any integer.
INFINITE_POWER = math.inf

_INT_KEYS = ("users_default", "events_default", "state_default", "ban", "redact", "kick", "invite")
# Levels used when the power levels event (or the key in it) is absent.
_NAMED_DEFAULTS = {"ban": 50, "kick": 50, "redact": 50, "invite": 0}
_STRINGY_INT = re.compile(r"^\s*[+-]?[0-9]+\s*$")


class AuthError(Exception):
    """The event is not allowed by the authorization rules."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _domain(id_: str) -> str:
    # Server names may contain ':' (ports, IPv6); the domain is everything
    # after the first colon.
    _, sep, domain = id_.partition(":")
    return domain if sep else ""


def is_valid_user_id(user_id: object) -> bool:
    """Loose user id grammar check: ``@localpart:server`` with both non-empty."""
    if not isinstance(user_id, str) or not user_id.startswith("@") or len(user_id) > 255:
        return False
    local, sep, server = user_id[1:].partition(":")
    return bool(sep and local and server)


# --------------------------------------------------------------------------
# Power level helpers


def _parse_level(value: object, rv: RoomVersion) -> int | None:
    """Interpret a power level value; ``None`` if it is not a valid level here."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if rv.enforce_int_power_levels:
        return None
    if isinstance(value, str):
        # v1-v9 "stringy" power levels: optional sign, leading zeroes and
        # surrounding whitespace are all accepted.
        return int(value.strip()) if _STRINGY_INT.match(value) else None
    if isinstance(value, float) and rv.floaty_power_levels:
        # v1-v5 "floaty" power levels are truncated; non-finite is invalid.
        return int(value) if math.isfinite(value) else None
    return None


def get_power_levels(auth_events: AuthEvents) -> dict[str, Any] | None:
    """The content of the current ``m.room.power_levels`` event, if any."""
    pl = auth_events.get(POWER_LEVELS)
    return pl.content if pl is not None else None


def _room_version(auth_events: AuthEvents, default: RoomVersion | None) -> RoomVersion:
    if default is not None:
        return default
    create = auth_events.get(CREATE)
    if create is None:
        raise AuthError("no m.room.create event in auth events")
    return create.room_version


def get_creators(auth_events: AuthEvents, room_version: RoomVersion | None = None) -> set[str]:
    """The room's creators: ``content.creator`` (v1-v10), the create sender
    (v11+), plus ``content.additional_creators`` (v12)."""
    create = auth_events.get(CREATE)
    if create is None:
        return set()
    rv = room_version or create.room_version
    if rv.implicit_room_creator:
        creators = {create.sender}
    else:
        creator = create.content.get("creator")
        creators = {creator} if isinstance(creator, str) else set()
    if rv.creators_infinite_power:
        extra = create.content.get("additional_creators")
        if isinstance(extra, list):
            creators.update(u for u in extra if isinstance(u, str))
    return creators


def get_user_power_level(
    user_id: str, auth_events: AuthEvents, room_version: RoomVersion | None = None
) -> int | float:
    """The power level of ``user_id`` (``math.inf`` for v12 creators)."""
    rv = _room_version(auth_events, room_version)
    creators = get_creators(auth_events, rv)
    if rv.creators_infinite_power and user_id in creators:
        return INFINITE_POWER
    pl = get_power_levels(auth_events)
    if pl is None:
        # Without a power levels event the creator has 100, everyone else 0.
        return 100 if user_id in creators else 0
    users = pl.get("users")
    if isinstance(users, dict) and user_id in users:
        level = _parse_level(users[user_id], rv)
        if level is not None:
            return level
    default = _parse_level(pl.get("users_default", 0), rv)
    return default if default is not None else 0


def get_named_level(
    name: str, auth_events: AuthEvents, room_version: RoomVersion | None = None
) -> int:
    """``ban``, ``kick``, ``redact``, ``invite`` (or any top-level) level."""
    rv = _room_version(auth_events, room_version)
    default = _NAMED_DEFAULTS.get(name, 0)
    pl = get_power_levels(auth_events)
    if pl is None or name not in pl:
        return default
    level = _parse_level(pl[name], rv)
    return level if level is not None else default


def get_send_level(
    event_type: str,
    state_key: str | None,
    power_levels: Mapping[str, Any] | None,
    room_version: RoomVersion,
) -> int:
    """The *required power level* to send ``event_type`` (a state event if
    ``state_key`` is not ``None``), given the power levels content (``None``
    when the room has no power levels event)."""
    if power_levels is None:
        # Spec: state_default is 0 when there is no power levels event at all.
        return 0
    events = power_levels.get("events")
    if isinstance(events, dict) and event_type in events:
        level = _parse_level(events[event_type], room_version)
        if level is not None:
            return level
    if state_key is not None:
        level = _parse_level(power_levels.get("state_default", 50), room_version)
        return 50 if level is None else level
    level = _parse_level(power_levels.get("events_default", 0), room_version)
    return 0 if level is None else level


# --------------------------------------------------------------------------
# Auth events selection


def auth_types_for_event(
    event_type: str,
    state_key: str | None,
    sender: str,
    content: Mapping[str, Any],
    room_version: RoomVersion,
) -> list[StateKey]:
    """The state keys whose current events belong in a new event's ``auth_events``
    (server-server API, "Auth events selection")."""
    if event_type == "m.room.create":
        return []
    keys: list[StateKey] = []
    if not room_version.room_id_is_create_event_hash:
        # v12 rooms imply the create event through the room id instead.
        keys.append(CREATE)
    keys.append(POWER_LEVELS)
    keys.append(("m.room.member", sender))
    if event_type == "m.room.member" and state_key is not None:
        if ("m.room.member", state_key) not in keys:
            keys.append(("m.room.member", state_key))
        membership = content.get("membership")
        if membership in ("join", "invite", "knock"):
            keys.append(JOIN_RULES)
        if membership == "invite":
            tpi = content.get("third_party_invite")
            if isinstance(tpi, dict):
                signed = tpi.get("signed")
                if isinstance(signed, dict) and isinstance(signed.get("token"), str):
                    keys.append(("m.room.third_party_invite", signed["token"]))
        if membership == "join" and room_version.restricted_join_rule:
            via = content.get("join_authorised_via_users_server")
            if isinstance(via, str) and ("m.room.member", via) not in keys:
                keys.append(("m.room.member", via))
    return keys


def check_auth_events_list(event: Event, auth_events: Sequence[Event]) -> None:
    """Rules about the event's own ``auth_events`` list (rule 2/3 in the spec):
    no duplicate keys, only keys the selection algorithm allows, a create
    event present (pre-v12), and matching room ids.

    Whether the listed events were themselves rejected is left to the caller.
    """
    rv = event.room_version
    if event.type == "m.room.create":
        return
    allowed = set(
        auth_types_for_event(event.type, event.state_key, event.sender, event.content, rv)
    )
    seen: set[StateKey] = set()
    for ae in auth_events:
        if ae.state_key is None:
            raise AuthError(f"auth event {ae.event_id} is not a state event")
        key = (ae.type, ae.state_key)
        if key in seen:
            raise AuthError(f"duplicate auth event for {key}")
        seen.add(key)
        if key not in allowed:
            raise AuthError(f"unexpected auth event for {key}")
        if ae.room_id != event.room_id:
            raise AuthError(f"auth event {ae.event_id} is from another room")
    if not rv.room_id_is_create_event_hash and CREATE not in seen:
        raise AuthError("no m.room.create event among auth events")


# --------------------------------------------------------------------------
# The rules


def check_auth(event: Event, auth_events: AuthEvents) -> None:
    """Raise :class:`AuthError` unless ``event`` passes the authorization rules
    against ``auth_events`` (state keyed by ``(type, state_key)``).

    For v12 rooms the map must still contain the ``m.room.create`` event even
    though it is not listed in the event's ``auth_events``.
    """
    rv = event.room_version

    if event.type == "m.room.create":
        _check_create(event, rv)
        return

    create = auth_events.get(CREATE)
    if create is None:
        raise AuthError("no m.room.create event in auth events")
    if rv.room_id_is_create_event_hash and event.room_id != "!" + create.event_id[1:]:
        raise AuthError("room_id is not the create event's id")
    for key, ae in auth_events.items():
        if ae.room_id != event.room_id:
            raise AuthError(f"auth event for {key} is from another room")

    if create.content.get("m.federate", True) is False and _domain(event.sender) != _domain(
        create.sender
    ):
        raise AuthError("room is not federated and sender is from another server")

    if rv.special_case_aliases_auth and event.type == "m.room.aliases":
        if event.state_key is None:
            raise AuthError("m.room.aliases without state_key")
        if event.state_key != _domain(event.sender):
            raise AuthError("m.room.aliases state_key does not match sender's domain")
        return

    if event.type == "m.room.member":
        _check_membership(event, auth_events, rv, create)
        return

    sender_level = get_user_power_level(event.sender, auth_events, rv)
    if _membership_of(auth_events, event.sender) != "join":
        raise AuthError("sender is not joined to the room")

    if event.type == "m.room.third_party_invite":
        if sender_level < get_named_level("invite", auth_events, rv):
            raise AuthError("sender cannot invite")
        return

    required = get_send_level(event.type, event.state_key, get_power_levels(auth_events), rv)
    if required > sender_level:
        raise AuthError(f"sender's power level is too low to send {event.type}")

    if (
        event.state_key is not None
        and event.state_key.startswith("@")
        and event.state_key != event.sender
    ):
        raise AuthError("state_key starting with @ must be the sender")

    if event.type == "m.room.power_levels":
        _check_power_levels(event, auth_events, rv, sender_level)
        return

    if rv.redaction_auth_rule and event.type == "m.room.redaction":
        if sender_level >= get_named_level("redact", auth_events, rv):
            return
        if event.redacts is not None and _domain(event.redacts) == _domain(event.event_id):
            return
        raise AuthError("sender cannot redact this event")


def _check_create(event: Event, rv: RoomVersion) -> None:
    if event.prev_event_ids:
        raise AuthError("create event has prev_events")
    if rv.room_id_is_create_event_hash:
        if event.get("room_id") is not None:
            raise AuthError("v12 create event must not have a room_id")
    elif _domain(event.room_id) != _domain(event.sender):
        raise AuthError("create event room_id domain does not match sender")
    if "room_version" in event.content:
        version = event.content["room_version"]
        if not isinstance(version, str) or version not in KNOWN_ROOM_VERSIONS:
            raise AuthError(f"unknown room_version {version!r}")
    if not rv.implicit_room_creator and "creator" not in event.content:
        raise AuthError("create event has no creator")
    if rv.creators_infinite_power and "additional_creators" in event.content:
        extra = event.content["additional_creators"]
        if not isinstance(extra, list) or not all(is_valid_user_id(u) for u in extra):
            raise AuthError("additional_creators must be a list of user ids")


def _membership_of(auth_events: AuthEvents, user_id: str) -> str | None:
    ev = auth_events.get(("m.room.member", user_id))
    return ev.membership if ev is not None else None


def _check_membership(
    event: Event, auth_events: AuthEvents, rv: RoomVersion, create: Event
) -> None:
    target = event.state_key
    membership = event.membership
    if target is None or membership is None:
        raise AuthError("member event needs a state_key and content.membership")

    sender_membership = _membership_of(auth_events, event.sender)
    target_membership = _membership_of(auth_events, target)
    jr_event = auth_events.get(JOIN_RULES)
    # No join rules event means the room is invite-only.
    join_rule = jr_event.content.get("join_rule", "invite") if jr_event else "invite"

    if membership == "join":
        # "The creator" (v1-v10) / "the sender of the create event" (v11+);
        # v12 additional creators are not special here and join normally.
        creator = create.sender if rv.implicit_room_creator else create.content.get("creator")
        if event.prev_event_ids == [create.event_id] and target == creator:
            return
        if event.sender != target:
            raise AuthError("cannot make another user join")
        if sender_membership == "ban":
            raise AuthError("sender is banned")
        if join_rule == "invite" or (rv.knock_join_rule and join_rule == "knock"):
            if sender_membership in ("invite", "join"):
                return
            raise AuthError("room is invite-only")
        if (rv.restricted_join_rule and join_rule == "restricted") or (
            rv.knock_restricted and join_rule == "knock_restricted"
        ):
            if sender_membership in ("invite", "join"):
                return
            via = event.content.get("join_authorised_via_users_server")
            if not isinstance(via, str):
                raise AuthError("restricted join without join_authorised_via_users_server")
            if _membership_of(auth_events, via) != "join":
                raise AuthError("authorising user is not joined")
            if get_user_power_level(via, auth_events, rv) < get_named_level(
                "invite", auth_events, rv
            ):
                raise AuthError("authorising user cannot invite")
            return
        if join_rule == "public":
            return
        raise AuthError(f"cannot join with join_rule {join_rule!r}")

    if membership == "invite":
        if "third_party_invite" in event.content:
            _check_third_party_invite(event, auth_events, target_membership)
            return
        if sender_membership != "join":
            raise AuthError("inviter is not joined")
        if target_membership in ("join", "ban"):
            raise AuthError(f"target is already {target_membership}")
        if get_user_power_level(event.sender, auth_events, rv) >= get_named_level(
            "invite", auth_events, rv
        ):
            return
        raise AuthError("sender's power level is too low to invite")

    if membership == "leave":
        if event.sender == target:
            allowed = {"invite", "join", "knock"} if rv.knock_join_rule else {"invite", "join"}
            if sender_membership in allowed:
                return
            raise AuthError("cannot leave: not invited, joined or knocking")
        if sender_membership != "join":
            raise AuthError("sender is not joined")
        sender_level = get_user_power_level(event.sender, auth_events, rv)
        if target_membership == "ban" and sender_level < get_named_level("ban", auth_events, rv):
            raise AuthError("sender cannot unban")
        if (
            sender_level >= get_named_level("kick", auth_events, rv)
            and get_user_power_level(target, auth_events, rv) < sender_level
        ):
            return
        raise AuthError("sender cannot kick this user")

    if membership == "ban":
        if sender_membership != "join":
            raise AuthError("sender is not joined")
        sender_level = get_user_power_level(event.sender, auth_events, rv)
        if (
            sender_level >= get_named_level("ban", auth_events, rv)
            and get_user_power_level(target, auth_events, rv) < sender_level
        ):
            return
        raise AuthError("sender cannot ban this user")

    if membership == "knock" and rv.knock_join_rule:
        if not (join_rule == "knock" or (rv.knock_restricted and join_rule == "knock_restricted")):
            raise AuthError("room does not allow knocking")
        if event.sender != target:
            raise AuthError("cannot knock on behalf of another user")
        if sender_membership not in ("ban", "invite", "join"):
            return
        raise AuthError(f"cannot knock while {sender_membership}")

    raise AuthError(f"unknown membership {membership!r}")


def _check_third_party_invite(
    event: Event, auth_events: AuthEvents, target_membership: str | None
) -> None:
    if target_membership == "ban":
        raise AuthError("target is banned")
    tpi = event.content["third_party_invite"]
    signed = tpi.get("signed") if isinstance(tpi, dict) else None
    if not isinstance(signed, dict):
        raise AuthError("third_party_invite has no signed block")
    mxid, token = signed.get("mxid"), signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        raise AuthError("signed block needs mxid and token")
    if mxid != event.state_key:
        raise AuthError("signed mxid does not match state_key")
    tpi_event = auth_events.get(("m.room.third_party_invite", token))
    if tpi_event is None:
        raise AuthError("no matching m.room.third_party_invite")
    if tpi_event.sender != event.sender:
        raise AuthError("sender does not match the third party invite's sender")

    public_keys: list[str] = []
    if isinstance(tpi_event.content.get("public_key"), str):
        public_keys.append(tpi_event.content["public_key"])
    extra = tpi_event.content.get("public_keys")
    if isinstance(extra, list):
        public_keys.extend(
            k["public_key"]
            for k in extra
            if isinstance(k, dict) and isinstance(k.get("public_key"), str)
        )
    if not isinstance(signed.get("signatures"), dict):
        raise AuthError("signed block has no signatures")
    try:
        key = third_party_signing_key(signed, public_keys)
    except CanonicalJSONError as e:
        raise AuthError("signed block is not canonical JSON") from e
    if key is not None:
        return
    raise AuthError("no valid signature on the third party invite")


def third_party_signing_key(signed: dict[str, Any], public_keys: list[str]) -> str | None:
    """Which of ``public_keys`` (base64 ed25519) signed the third-party
    ``signed`` block, or None. Raises CanonicalJSONError for a block that is not
    canonical JSON."""
    signatures = signed.get("signatures")
    if not isinstance(signatures, dict):
        return None
    message = encode_canonical_json(
        {k: v for k, v in signed.items() if k not in ("signatures", "unsigned")})
    for key_b64 in public_keys:
        key_bytes = _decode_any_b64(key_b64)
        if key_bytes is None or len(key_bytes) != 32:
            continue
        verify_key = nacl.signing.VerifyKey(key_bytes)
        for server_sigs in signatures.values():
            if not isinstance(server_sigs, dict):
                continue
            for sig_b64 in server_sigs.values():
                sig = _decode_any_b64(sig_b64) if isinstance(sig_b64, str) else None
                if sig is None:
                    continue
                try:
                    verify_key.verify(message, sig)
                except (nacl.exceptions.BadSignatureError, ValueError):
                    continue
                return key_b64
    return None


def _decode_any_b64(text: str) -> bytes | None:
    # Identity servers publish keys in either alphabet.
    for decode in (unpadded_b64decode, unpadded_urlsafe_b64decode):
        try:
            return decode(text)
        except ValueError:
            continue
    return None


def _check_power_levels(
    event: Event, auth_events: AuthEvents, rv: RoomVersion, sender_level: int | float
) -> None:
    content = event.content
    if rv.enforce_int_power_levels:
        for key in _INT_KEYS:
            if key in content and _parse_level(content[key], rv) is None:
                raise AuthError(f"power level {key!r} is not an integer")
        for key in ("events", "notifications"):
            if key in content:
                value = content[key]
                if not isinstance(value, dict) or any(
                    _parse_level(v, rv) is None for v in value.values()
                ):
                    raise AuthError(f"power levels {key!r} must map to integers")

    users = content.get("users", {})
    if not isinstance(users, dict):
        raise AuthError("power levels 'users' is not an object")
    for user_id, level in users.items():
        if not is_valid_user_id(user_id):
            raise AuthError(f"invalid user id {user_id!r} in power levels")
        if _parse_level(level, rv) is None:
            raise AuthError(f"invalid power level for {user_id}")

    if rv.creators_infinite_power:
        creators = get_creators(auth_events, rv)
        if creators & set(users):
            raise AuthError("room creators cannot be given a power level")

    old_event = auth_events.get(POWER_LEVELS)
    if old_event is None:
        return
    old = old_event.content

    def level_of(src: Mapping[str, Any], key: str) -> int | None:
        return _parse_level(src[key], rv) if key in src else None

    for key in _INT_KEYS:
        old_v, new_v = level_of(old, key), level_of(content, key)
        if old_v == new_v:
            continue
        if old_v is not None and old_v > sender_level:
            raise AuthError(f"cannot change {key}: current value above sender's level")
        if new_v is not None and new_v > sender_level:
            raise AuthError(f"cannot change {key}: new value above sender's level")

    maps = ["events"]
    if rv.limit_notifications_power_levels:
        maps.append("notifications")
    for map_key in maps:
        old_map = old.get(map_key)
        new_map = content.get(map_key)
        old_m = old_map if isinstance(old_map, dict) else {}
        new_m = new_map if isinstance(new_map, dict) else {}
        for key in set(old_m) | set(new_m):
            old_v, new_v = level_of(old_m, key), level_of(new_m, key)
            if old_v == new_v:
                continue
            if old_v is not None and old_v > sender_level:
                raise AuthError(f"cannot change {map_key}.{key}: current value too high")
            if new_v is not None and new_v > sender_level:
                raise AuthError(f"cannot change {map_key}.{key}: new value too high")

    old_users_raw = old.get("users")
    old_users = old_users_raw if isinstance(old_users_raw, dict) else {}
    for user_id in set(old_users) | set(users):
        old_v, new_v = level_of(old_users, user_id), level_of(users, user_id)
        if old_v == new_v:
            continue
        if user_id != event.sender and old_v is not None and old_v >= sender_level:
            raise AuthError(f"cannot change the level of {user_id}: not below sender's")
        if new_v is not None and new_v > sender_level:
            raise AuthError(f"cannot give {user_id} a level above sender's")
