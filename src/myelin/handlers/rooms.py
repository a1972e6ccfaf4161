"""Creating rooms: the create event, presets, power levels and initial state."""

from __future__ import annotations

import copy
import logging
import re
import secrets
import string
import time
from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError, Requester, bad_json, forbidden, too_large
from myelin.events.auth import AuthError, auth_types_for_event, check_auth
from myelin.events.canonical import CanonicalJSONError, encode_canonical_json
from myelin.events.event import Event
from myelin.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version
from myelin.handlers.events import MAX_PDU_SIZE, PendingEvent
from myelin.storage.stores.events import StateMap

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)

PRESETS: dict[str, dict[str, Any]] = {
    "private_chat": {"join_rules": "invite", "history_visibility": "shared",
                     "guest_access": "can_join", "invitees_are_admins": False},
    "trusted_private_chat": {"join_rules": "invite", "history_visibility": "shared",
                             "guest_access": "can_join", "invitees_are_admins": True},
    "public_chat": {"join_rules": "public", "history_visibility": "shared",
                    "guest_access": None, "invitees_are_admins": False},
}

_ALIAS_LOCALPART = re.compile(r"^[^\s:#]+$")


def default_power_levels(creator: str, creators_implicit: bool) -> dict[str, Any]:
    return {
        "users": {} if creators_implicit else {creator: 100},
        "users_default": 0,
        "events": {
            "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
            "m.room.server_acl": 100, "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "historical": 100,
        "notifications": {"room": 50},
    }


def check_third_party_invites(invites: Any) -> list[Any]:
    """The shape of ``invite_3pid`` (checked before anything is created);
    the identity server is asked in ``handlers/identity.py``."""
    if invites is None or invites == []:
        return []
    if not isinstance(invites, list):
        raise bad_json("invite_3pid must be a list")
    for invite in invites:
        if not isinstance(invite, dict) or not all(
                isinstance(invite.get(key), str) for key in ("id_server", "medium", "address")):
            raise bad_json("invite_3pid entries need string id_server, medium and address")
    return invites


def random_room_localpart() -> str:
    return "".join(secrets.choice(string.ascii_letters) for _ in range(18))


CREATE_ATTEMPTS = 3


class RoomCreationHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        # creator -> origin_server_ts of their last create event here: strictly
        # increasing, so one user's create events (and v12 room ids) differ.
        self._last_create_ts: dict[str, int] = {}

    def _create_ts(self, user_id: str) -> int:
        ts = max(int(time.time() * 1000), self._last_create_ts.get(user_id, 0) + 1)
        self._last_create_ts[user_id] = ts
        if len(self._last_create_ts) > 10_000:
            self._last_create_ts = {user_id: ts}
        return ts

    async def create_room(self, requester: Requester, body: dict[str, Any], *,
                          named: str | None = None) -> tuple[str, str | None]:
        """Create a room from a ``/createRoom`` body; ``named`` is its id, chosen in
        advance (an upgrade's tombstone points there first; not for v12,
        whose room id is its create event's hash)."""
        hs = self.hs
        user_id = requester.user_id
        version_id = body.get("room_version", hs.config.default_room_version)
        if not isinstance(version_id, str):
            raise bad_json("room_version must be a string")
        if version_id not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION",
                              f"Room version {version_id!r} is not supported")
        room_version = get_room_version(version_id)
        visibility = body.get("visibility", "private")
        if visibility not in ("public", "private"):
            raise bad_json("visibility must be public or private")
        preset_name = body.get("preset") or ("public_chat" if visibility == "public"
                                             else "private_chat")
        if preset_name not in PRESETS:
            raise bad_json(f"Unknown preset {preset_name!r}")
        preset = PRESETS[preset_name]
        creation_content = body.get("creation_content") or {}
        initial_state = body.get("initial_state") or []
        invitees = body.get("invite") or []
        override = body.get("power_level_content_override")
        for name, value, kind in (("creation_content", creation_content, dict),
                                  ("initial_state", initial_state, list),
                                  ("invite", invitees, list)):
            if not isinstance(value, kind):
                raise bad_json(f"{name} must be a {'object' if kind is dict else 'list'}")
        if override is not None and not isinstance(override, dict):
            raise bad_json("power_level_content_override must be an object")
        for invitee in invitees:
            if not isinstance(invitee, str) or not invitee.startswith("@") or ":" not in invitee:
                raise bad_json(f"Invalid user ID to invite: {invitee!r}")
        invites_3pid = check_third_party_invites(body.get("invite_3pid"))
        for state in initial_state:
            if not isinstance(state, dict) or not isinstance(state.get("type"), str) \
                    or not isinstance(state.get("content", {}), dict) \
                    or not isinstance(state.get("state_key", ""), str):
                raise bad_json("initial_state entries need a type, a content object and a"
                               " string state_key")
        for key in ("name", "topic", "room_alias_name"):
            if key in body and not isinstance(body[key], str):
                raise bad_json(f"{key} must be a string")

        if room_version.creators_infinite_power:
            # v12 creators have no power level entry; auth would reject the
            # power levels event only after the room exists, half-built.
            creators = {user_id}
            extra = creation_content.get("additional_creators")
            if isinstance(extra, list):
                creators.update(u for u in extra if isinstance(u, str))
            users = (override or {}).get("users")
            if isinstance(users, dict) and creators & set(users):
                raise bad_json("power_level_content_override cannot give room creators a "
                               "power level in this room version")

        self._check_contents(room_version, [creation_content, override or {},
                                            *(st.get("content", {}) for st in initial_state),
                                            {"name": body.get("name")},
                                            {"topic": body.get("topic")}])
        for invitee in invitees:
            if hs.is_mine(invitee) and await hs.stores.accounts.get_user(invitee) is None \
                    and not await hs.appservices.query_user(invitee):
                raise MatrixError(404, "M_NOT_FOUND", f"Unknown user {invitee}")

        # Asked before the room exists: an unusable identity server creates nothing.
        resolved_3pid = await hs.identity.resolve(invites_3pid) if invites_3pid else []

        alias = None
        alias_name = body.get("room_alias_name")
        if alias_name:
            if not _ALIAS_LOCALPART.match(alias_name):
                raise MatrixError(400, "M_INVALID_PARAM", "Invalid characters in room alias")
            alias = f"#{alias_name}:{hs.server_name}"
            if await hs.stores.rooms.get_alias(alias) is not None:
                raise MatrixError(400, "M_ROOM_IN_USE", "Room alias already taken")

        # Build every initial event in memory, authorising each against the
        # state the previous ones make, then persist them in one transaction:
        # a room either exists whole or not at all.
        create_content = copy.deepcopy(creation_content)
        create_content["room_version"] = version_id
        if not room_version.implicit_room_creator:
            create_content["creator"] = user_id
        else:
            create_content.pop("creator", None)
        for attempt in range(CREATE_ATTEMPTS):
            draft = _RoomDraft(hs, room_version, user_id)
            room_id = draft.add_create(create_content, self._create_ts(user_id), named)
            await self._draft_initial_state(draft, body, room_version, preset, alias, invitees,
                                            override, initial_state)
            try:
                await hs.persister.persist_batch(
                    draft.pending(), new_room=(version_id, user_id, visibility == "public"))
                break
            except MatrixError as e:
                # Another createRoom of this user made the same create event in
                # the same millisecond (another process): build it again, later.
                if not e.extra.get("room_id_taken") or attempt == CREATE_ATTEMPTS - 1 \
                        or named is not None:
                    raise
        if alias is not None:
            await hs.stores.rooms.create_alias(alias, room_id, user_id)
        for invitee in invitees:
            extra = {"is_direct": True} if body.get("is_direct") else {}
            await hs.membership.update_membership(requester, room_id, invitee, "invite",
                                                  extra_content=extra, ratelimit=False)
        if resolved_3pid:
            await hs.identity.send(requester, room_id, resolved_3pid)
        return room_id, alias

    @staticmethod
    def _check_contents(room_version: RoomVersion, contents: list[dict[str, Any]]) -> None:
        """Refuse, before anything exists, contents that could never be sent."""
        for content in contents:
            try:
                size = len(encode_canonical_json(content,
                                                 strict=room_version.strict_canonicaljson))
            except CanonicalJSONError as e:
                raise bad_json(f"Invalid event content: {e}") from None
            if size > MAX_PDU_SIZE - 1024:
                raise too_large(f"Event content is {size} bytes; events are limited to "
                                f"{MAX_PDU_SIZE}")

    async def _draft_initial_state(self, draft: _RoomDraft, body: dict[str, Any],
                                   room_version: RoomVersion, preset: dict[str, Any],
                                   alias: str | None, invitees: list[str],
                                   override: dict[str, Any] | None,
                                   initial_state: list[dict[str, Any]]) -> None:
        user_id = draft.sender
        # The creator joins, then power levels, the alias, the preset's
        # rules, the client's initial state, name and topic — the order the
        # spec gives for createRoom.
        draft.add("m.room.member", await self.hs.membership.member_content(user_id, "join"),
                  user_id)
        power_levels = default_power_levels(user_id, room_version.room_id_is_create_event_hash)
        if preset["invitees_are_admins"]:
            for invitee in invitees:
                power_levels["users"][invitee] = 100
        if override:
            power_levels.update(copy.deepcopy(override))
        draft.add("m.room.power_levels", power_levels)
        if alias is not None:
            draft.add("m.room.canonical_alias", {"alias": alias})
        given = {(s["type"], s.get("state_key", "")) for s in initial_state}
        if ("m.room.join_rules", "") not in given:
            draft.add("m.room.join_rules", {"join_rule": preset["join_rules"]})
        if ("m.room.history_visibility", "") not in given:
            draft.add("m.room.history_visibility",
                      {"history_visibility": preset["history_visibility"]})
        if preset["guest_access"] and ("m.room.guest_access", "") not in given:
            draft.add("m.room.guest_access", {"guest_access": preset["guest_access"]})
        for state in initial_state:
            draft.add(state["type"], state.get("content", {}), state.get("state_key", ""))
        if body.get("name"):
            draft.add("m.room.name", {"name": body["name"]})
        if body.get("topic"):
            draft.add("m.room.topic", {"topic": body["topic"]})


class _RoomDraft:
    """A new room's first events, built and authorised in memory."""

    def __init__(self, hs: HomeServer, room_version: RoomVersion, sender: str) -> None:
        self.hs = hs
        self.room_version = room_version
        self.sender = sender
        self.events: list[Event] = []
        self.by_id: dict[str, Event] = {}
        self.state: StateMap = {}
        self.room_id = ""

    def _authorise_and_keep(self, event: Event) -> None:
        keys = set(auth_types_for_event(event.type, event.state_key, event.sender,
                                        event.content, self.room_version))
        keys.add(("m.room.create", ""))
        auth_map = {k: self.by_id[self.state[k]] for k in keys if k in self.state}
        try:
            check_auth(event, auth_map)
        except AuthError as e:
            raise forbidden(str(e)) from None
        self.events.append(event)
        self.by_id[event.event_id] = event
        if event.state_key is not None:
            self.state[(event.type, event.state_key)] = event.event_id

    def add_create(self, content: dict[str, Any], origin_server_ts: int,
                   room_id: str | None = None) -> str:
        fields: dict[str, Any] = {
            "sender": self.sender, "type": "m.room.create", "state_key": "",
            "content": content, "prev_events": [], "auth_events": [], "depth": 1,
            "origin_server_ts": origin_server_ts,
        }
        if not self.room_version.room_id_is_create_event_hash:
            fields["room_id"] = room_id or f"!{random_room_localpart()}:{self.hs.server_name}"
        event = self.hs.event_creation.build_and_sign(self.room_version, fields)
        self._authorise_and_keep(event)
        self.room_id = event.room_id
        return event.room_id

    def add(self, etype: str, content: dict[str, Any], state_key: str = "") -> Event:
        last = self.events[-1]
        keys = auth_types_for_event(etype, state_key, self.sender, content, self.room_version)
        fields: dict[str, Any] = {
            "room_id": self.room_id, "sender": self.sender, "type": etype,
            "content": content, "state_key": state_key, "prev_events": [last.event_id],
            "auth_events": [self.state[k] for k in keys if k in self.state],
            "depth": last.depth + 1, "origin_server_ts": int(time.time() * 1000),
        }
        event = self.hs.event_creation.build_and_sign(self.room_version, fields, self.by_id)
        self._authorise_and_keep(event)
        return event

    def pending(self) -> list[PendingEvent]:
        first, *rest = self.events
        return [PendingEvent(first, {}, None), *(PendingEvent(e, None) for e in rest)]
