"""Room upgrades (``POST /rooms/{roomId}/upgrade``): a replacement room in a
new version, built by createRoom, and the old room closed behind it.

Check the upgrader may send ``m.room.tombstone``; name the new room and
send the tombstone (so the new create event's ``predecessor`` points at it;
v12 room ids hash their create event, so there the room comes first);
create the new room (``predecessor`` and the old create content in its
create event, the transferable state and the bans copied, the upgrader
given enough power to set it all up, then the old power levels restored);
move the local aliases, the canonical alias and the directory listing; and
raise the old room's power levels so ordinary users can neither talk nor
invite there any more.

When a user later joins the replacement, their own settings for the old
room (push rules naming it, its tags) follow them
(:meth:`RoomUpgradeHandler.transfer_user_settings`).
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError, Requester, bad_json, forbidden, not_found
from myelin.events.auth import get_creators, get_send_level, get_user_power_level
from myelin.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version
from myelin.handlers.rooms import random_room_localpart

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer
    from myelin.events.event import Event

logger = logging.getLogger(__name__)

# State copied as it is (the spec's recommended list, plus what Synapse also
# carries over: related groups and a space's links).
TRANSFERRED_STATE = ("m.room.server_acl", "m.room.encryption", "m.room.name", "m.room.avatar",
                     "m.room.topic", "m.room.guest_access", "m.room.history_visibility",
                     "m.room.join_rules", "m.room.related_groups")
TRANSFERRED_STATE_TYPES_ANY_KEY = ("m.space.child", "m.space.parent")
# Create content that belongs to one room, not to its lineage.
_CREATE_KEYS_NOT_COPIED = ("creator", "room_version", "predecessor", "additional_creators")


def _int_levels(value: Any) -> Any:
    """Power level values as integers (v10+ refuse the strings older rooms allow)."""
    if isinstance(value, dict):
        return {k: _int_levels(v) for k, v in value.items()}
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return value
    if isinstance(value, float):
        return int(value)
    return value


def _highest_level(power_levels: dict[str, Any]) -> int:
    levels = [100]
    for value in power_levels.values():
        if isinstance(value, int):
            levels.append(value)
        elif isinstance(value, dict):
            levels.extend(v for v in value.values() if isinstance(v, int))
    return max(levels)


class RoomUpgradeHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def upgrade(self, requester: Requester, room_id: str, body: dict[str, Any]) -> str:
        hs = self.hs
        new_version_id = body.get("new_version")
        if not isinstance(new_version_id, str):
            raise bad_json("new_version is required")
        if new_version_id not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION",
                              f"Room version {new_version_id!r} is not supported")
        new_version = get_room_version(new_version_id)
        additional = body.get("additional_creators")
        if additional is not None and (not isinstance(additional, list) or not all(
                isinstance(u, str) and u.startswith("@") and ":" in u for u in additional)):
            raise bad_json("additional_creators must be a list of user ids")
        old_version = await hs.stores.rooms.get_room_version(room_id)
        if old_version is None:
            raise not_found("Unknown room")
        await hs.membership.require_joined(requester.user_id, room_id)
        state = await hs.stores.state.get_current_state_ids(room_id)
        loaded = await hs.stores.events.get_events(state.values())
        events = {k: loaded[eid].event for k, eid in state.items() if eid in loaded}
        user_id = requester.user_id
        auth = {k: events[k] for k in (("m.room.create", ""), ("m.room.power_levels", ""))
                if k in events}
        pl_event = events.get(("m.room.power_levels", ""))
        needed = get_send_level("m.room.tombstone", "", pl_event.content if pl_event else None,
                                old_version)
        if get_user_power_level(user_id, auth, old_version) < needed:
            raise forbidden("You don't have permission to upgrade this room")

        additional = additional if new_version.creators_infinite_power else None
        if new_version.room_id_is_create_event_hash:
            # The new room id hashes its create event: it must exist before
            # the tombstone can name it, and its predecessor names no event.
            new_room_id = await self._create_replacement(
                requester, room_id, old_version, new_version, events, additional, None)
            await self._tombstone(user_id, room_id, new_room_id)
        else:
            # Name the new room first, so its predecessor points at the tombstone.
            new_room_id = f"!{random_room_localpart()}:{hs.server_name}"
            tombstone_id = await self._tombstone(user_id, room_id, new_room_id)
            await self._create_replacement(requester, room_id, old_version, new_version,
                                           events, additional, tombstone_id,
                                           named=new_room_id)
        await self._move_aliases(requester, room_id, new_room_id, events)
        await self._restrict_old_room(user_id, room_id, pl_event)
        # The upgrader joined the new room as its creator, not through a join.
        await self.transfer_user_settings(user_id, new_room_id)
        return new_room_id

    async def _tombstone(self, user_id: str, room_id: str, new_room_id: str) -> str:
        sent = await self.hs.event_creation.send(user_id, room_id, "m.room.tombstone", {
            "body": "This room has been replaced", "replacement_room": new_room_id},
            state_key="")
        return sent.event.event_id

    async def _create_replacement(self, requester: Requester, old_room_id: str,
                                  old_version: RoomVersion, new_version: RoomVersion,
                                  events: dict[tuple[str, str], Event],
                                  additional_creators: list[str] | None,
                                  tombstone_id: str | None, *, named: str | None = None,
                                  ) -> str:
        hs = self.hs
        user_id = requester.user_id
        create = events[("m.room.create", "")]
        creation_content = {k: v for k, v in create.content.items()
                            if k not in _CREATE_KEYS_NOT_COPIED}
        predecessor: dict[str, Any] = {"room_id": old_room_id}
        if tombstone_id is not None:
            predecessor["event_id"] = tombstone_id
        creation_content["predecessor"] = predecessor
        if additional_creators:
            creation_content["additional_creators"] = additional_creators
        creators = {user_id, *(additional_creators or [])} \
            if new_version.creators_infinite_power else set()

        pl_event = events.get(("m.room.power_levels", ""))
        restored = _int_levels(copy.deepcopy(pl_event.content)) if pl_event else None
        if restored is not None:
            users = restored.get("users")
            users = dict(users) if isinstance(users, dict) else {}
            if old_version.creators_infinite_power and not new_version.creators_infinite_power:
                # Old creators had power without an entry: keep them in charge.
                for creator in get_creators({("m.room.create", ""): create}, old_version):
                    users.setdefault(creator, 100)
            for creator in creators:
                users.pop(creator, None)  # v12 refuses power levels for creators
            restored["users"] = users
        setup = copy.deepcopy(restored) if restored is not None else None
        if setup is not None and not new_version.creators_infinite_power:
            # Enough power to copy every state event during setup; the real
            # levels are sent once the room is built.
            setup["users"][user_id] = max(_highest_level(setup),
                                          int(setup["users"].get(user_id, 0)))

        initial_state: list[dict[str, Any]] = []
        for key, event in sorted(events.items()):
            etype, state_key = key
            if (etype in TRANSFERRED_STATE and state_key == "") or \
                    etype in TRANSFERRED_STATE_TYPES_ANY_KEY:
                initial_state.append({"type": etype, "state_key": state_key,
                                      "content": event.content})
        for (etype, state_key), event in sorted(events.items()):
            if etype == "m.room.member" and event.membership == "ban":
                initial_state.append({"type": etype, "state_key": state_key,
                                      "content": {"membership": "ban"}})
        body: dict[str, Any] = {
            "room_version": new_version.identifier,
            "creation_content": creation_content,
            "initial_state": initial_state,
            "preset": "private_chat",
            "visibility": "public" if await hs.stores.rooms.is_room_public(old_room_id)
            else "private",
        }
        if setup is not None:
            body["power_level_content_override"] = setup
        new_room_id, _ = await hs.room_creation.create_room(requester, body, named=named)
        if restored is not None and restored != setup:
            await hs.event_creation.set_state(user_id, new_room_id, "m.room.power_levels", "",
                                              restored)
        if body["visibility"] == "public":
            await hs.stores.rooms.set_room_public(old_room_id, False)
        return new_room_id

    async def _move_aliases(self, requester: Requester, old_room_id: str, new_room_id: str,
                            events: dict[tuple[str, str], Event]) -> None:
        hs = self.hs
        rooms = hs.stores.rooms
        for alias in await rooms.get_aliases_for_room(old_room_id):
            found = await rooms.get_alias(alias)
            creator = found[1] if found else requester.user_id
            await rooms.delete_alias(alias)
            await rooms.create_alias(alias, new_room_id, creator)
        canonical = events.get(("m.room.canonical_alias", ""))
        if canonical is None or not canonical.content:
            return
        try:
            await hs.event_creation.send(requester.user_id, new_room_id,
                                         "m.room.canonical_alias", canonical.content,
                                         state_key="")
            await hs.event_creation.send(requester.user_id, old_room_id,
                                         "m.room.canonical_alias", {}, state_key="")
        except MatrixError as e:
            # Lacking the power to move it leaves the upgrade itself intact.
            logger.info("could not move the canonical alias of %s: %s", old_room_id, e)

    async def _restrict_old_room(self, user_id: str, room_id: str, pl_event: Event | None,
                                 ) -> None:
        content = copy.deepcopy(pl_event.content) if pl_event else {}
        users_default = content.get("users_default", 0)
        try:
            users_default = int(users_default)
        except (TypeError, ValueError):
            users_default = 0
        level = max(50, users_default + 1)
        changed = False
        for key in ("events_default", "invite"):
            try:
                current = int(content.get(key, 0))
            except (TypeError, ValueError):
                current = 0
            if current < level:
                content[key] = level
                changed = True
        if not changed:
            return
        try:
            await self.hs.event_creation.send(user_id, room_id, "m.room.power_levels", content,
                                              state_key="")
        except MatrixError as e:
            logger.info("could not restrict the power levels of %s: %s", room_id, e)

    # -- a user follows the upgrade ----------------------------------------------
    async def transfer_user_settings(self, user_id: str, room_id: str) -> None:
        """Copy ``user_id``'s push rules, tags and ``m.direct`` listing of the
        room ``room_id`` replaces, when they join it (the spec's
        "personalized settings")."""
        hs = self.hs
        create = await hs.stores.state.get_current_state_event(room_id, "m.room.create")
        predecessor = create.content.get("predecessor") if create else None
        old_room_id = predecessor.get("room_id") if isinstance(predecessor, dict) else None
        if not isinstance(old_room_id, str) or old_room_id == room_id:
            return
        if await hs.stores.memberships.get_membership(old_room_id, user_id) is None:
            return
        await self._copy_push_rules(user_id, old_room_id, room_id)
        tags = await hs.account_data.get_tags(user_id, old_room_id)
        if tags and not await hs.account_data.get_tags(user_id, room_id):
            await hs.account_data.put(user_id, room_id, "m.tag", {"tags": tags})
        direct = await hs.account_data.get(user_id, "", "m.direct")
        if direct:
            # A direct chat stays one: listed under the same people.
            changed = {who: [*rooms, room_id] for who, rooms in direct.items()
                       if isinstance(rooms, list) and old_room_id in rooms
                       and room_id not in rooms}
            if changed:
                await hs.account_data.put(user_id, "", "m.direct", {**direct, **changed})

    async def _copy_push_rules(self, user_id: str, old_room_id: str, new_room_id: str) -> None:
        push_rules = self.hs.push_rules
        existing = {(r.kind, r.rule_id) for r in
                    await self.hs.stores.push_rules.get_user_rules(user_id)}
        for rule in await self.hs.stores.push_rules.get_user_rules(user_id):
            if rule.kind == "room" and rule.rule_id == old_room_id:
                new_id, body = new_room_id, {"actions": rule.actions}
            elif rule.kind in ("override", "underride") and old_room_id in rule.rule_id and any(
                    isinstance(c, dict) and c.get("key") == "room_id"
                    and c.get("pattern") == old_room_id for c in rule.conditions):
                new_id = rule.rule_id.replace(old_room_id, new_room_id)
                conditions = [{**c, "pattern": new_room_id} if isinstance(c, dict)
                              and c.get("key") == "room_id" and c.get("pattern") == old_room_id
                              else c for c in rule.conditions]
                body = {"actions": rule.actions, "conditions": conditions}
            else:
                continue
            if (rule.kind, new_id) in existing:
                continue
            try:
                await push_rules.put_rule(user_id, rule.kind, new_id, body, None, None)
                if not rule.enabled:
                    await push_rules.set_enabled(user_id, rule.kind, new_id, False)
            except MatrixError as e:
                logger.info("could not copy push rule %s of %s: %s", rule.rule_id, user_id, e)
