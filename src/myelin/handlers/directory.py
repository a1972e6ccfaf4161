"""The room directory: aliases, and the published room list (``/publicRooms``).

Aliases live in ``room_aliases`` (alias -> room id, with who made it); a
room's presence in the published directory is ``rooms.is_public``. Who may
change either follows the room's power levels: the right to send
``m.room.canonical_alias`` is the right to curate the room's directory
entries, and server admins may always do so.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError, Requester, forbidden, invalid_param, not_found
from myelin.events.auth import get_send_level, get_user_power_level
from myelin.events.event import Event

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)

MAX_ALIAS_LENGTH = 255
# The localpart of an alias: anything printable but whitespace, ':' and '#'.
_ALIAS_LOCALPART = re.compile(r"^[^\s:#]+$")

DEFAULT_PUBLIC_ROOMS_LIMIT = 100
MAX_PUBLIC_ROOMS_LIMIT = 500
_TOKEN_PREFIX = "o"


@dataclass(frozen=True)
class PublicRoomsQuery:
    limit: int | None = None
    since: str | None = None
    search_term: str | None = None
    # None: every type; otherwise the wanted room types (None = rooms without a type).
    room_types: list[str | None] | None = None
    third_party_instance_id: str | None = None
    include_all_networks: bool = False


def _parse_since(token: str | None) -> int:
    if token is None:
        return 0
    if token.startswith(_TOKEN_PREFIX):
        try:
            offset = int(token[len(_TOKEN_PREFIX):])
        except ValueError:
            offset = -1
        if offset >= 0:
            return offset
    raise invalid_param(f"Invalid pagination token {token!r}")


class DirectoryHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.events

    # -- aliases -----------------------------------------------------------
    def check_local_alias(self, alias: str) -> None:
        """``M_INVALID_PARAM`` unless ``alias`` is a well-formed alias on this server."""
        localpart, sep, server = alias[1:].partition(":")
        if not alias.startswith("#") or not sep or not localpart or not server:
            raise invalid_param(f"Room alias {alias!r} is not valid")
        if not _ALIAS_LOCALPART.match(localpart) or len(alias.encode()) > MAX_ALIAS_LENGTH:
            raise invalid_param(f"Room alias {alias!r} is not valid")
        if server != self.hs.server_name:
            raise invalid_param(f"Room alias {alias!r} is not on this server")

    def check_alias_syntax(self, alias: str) -> None:
        localpart, sep, server = alias[1:].partition(":")
        if not alias.startswith("#") or not sep or not localpart or not server:
            raise invalid_param(f"Room alias {alias!r} is not valid")

    async def check_canonical_alias(self, room_id: str, content: dict[str, Any]) -> None:
        """Refuse an ``m.room.canonical_alias`` whose aliases are malformed
        (``M_INVALID_PARAM``) or do not point at the room (``M_BAD_ALIAS``).

        Local aliases are checked against our directory. A remote alias would
        need a federation directory query, which this server cannot make yet:
        it is only checked for syntax."""
        alias = content.get("alias")
        alt_aliases = content.get("alt_aliases", [])
        if alias is not None and not isinstance(alias, str):
            raise invalid_param("alias must be a string")
        if not isinstance(alt_aliases, list) or not all(
                isinstance(a, str) for a in alt_aliases):
            raise invalid_param("alt_aliases must be a list of strings")
        wanted = ([alias] if alias else []) + list(alt_aliases)
        for name in wanted:
            self.check_alias_syntax(name)
        for name in dict.fromkeys(wanted):
            if name.partition(":")[2] != self.hs.server_name:
                continue
            found = await self.hs.stores.rooms.get_alias(name)
            if found is None or found[0] != room_id:
                raise MatrixError(400, "M_BAD_ALIAS",
                                  f"The alias {name!r} does not point to this room.")

    async def create_alias(self, requester: Requester, alias: str, room_id: str) -> None:
        self.check_local_alias(alias)
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise invalid_param("room_id must be a room ID")
        if await self.hs.stores.rooms.get_room_version(room_id) is None:
            raise not_found(f"Room {room_id} not found")
        self.hs.appservices.check_alias_allowed(alias, requester)  # M_EXCLUSIVE
        if not requester.is_admin and requester.appservice_id is None:
            membership = await self.hs.stores.memberships.get_membership(room_id, requester.user_id)
            if membership is None or membership.membership != "join":
                raise forbidden("You must be in the room to create an alias for it")
        if not await self.hs.stores.rooms.create_alias(alias, room_id, requester.user_id):
            raise MatrixError(409, "M_UNKNOWN", f"Room alias {alias} already exists.")

    async def resolve_alias(self, alias: str) -> dict[str, Any]:
        """The room an alias names and servers to join it through: a remote
        alias is asked of its server (``/query/directory``)."""
        self.check_alias_syntax(alias)
        if alias.partition(":")[2] != self.hs.server_name:
            return await self.hs.federation_queries.resolve_alias(alias)
        return await self.resolve_local_alias(alias)

    async def resolve_local_alias(self, alias: str) -> dict[str, Any]:
        found = await self.hs.stores.rooms.get_alias(alias)
        if found is None and self.hs.is_mine(alias) and await self.hs.appservices.query_alias(
                alias):
            # A bridge created the room for this alias when asked.
            found = await self.hs.stores.rooms.get_alias(alias)
        if found is None:
            raise not_found(f"Room alias {alias} not found.")
        return {"room_id": found[0], "servers": await self.servers_in_room(found[0])}

    async def servers_in_room(self, room_id: str) -> list[str]:
        """This server first, then every other server with a joined member."""
        servers = {m.user_id.split(":", 1)[-1]
                   for m in await self.hs.stores.memberships.get_members(room_id)}
        servers.discard(self.hs.server_name)
        return [self.hs.server_name, *sorted(servers)]

    async def delete_alias(self, requester: Requester, alias: str) -> None:
        self.check_alias_syntax(alias)
        found = await self.hs.stores.rooms.get_alias(alias)
        if found is None:
            raise not_found(f"Room alias {alias} not found.")
        room_id, creator = found
        if not (requester.is_admin or creator == requester.user_id
                or await self.can_send_state(requester.user_id, room_id,
                                             "m.room.canonical_alias")):
            raise forbidden("You don't have permission to delete the alias.")
        await self.hs.stores.rooms.delete_alias(alias)
        await self._remove_from_canonical_alias(requester, room_id, alias)

    async def _remove_from_canonical_alias(self, requester: Requester, room_id: str,
                                           alias: str) -> None:
        """Drop a deleted alias from the room's ``m.room.canonical_alias``, if it is
        there and the user may change that event; the alias is gone either way."""
        event = await self.hs.stores.state.get_current_state_event(
            room_id, "m.room.canonical_alias")
        if event is None:
            return
        content = dict(event.content)
        changed = False
        if content.get("alias") == alias:
            del content["alias"]
            changed = True
        alt = content.get("alt_aliases")
        if isinstance(alt, list) and alias in alt:
            content["alt_aliases"] = [a for a in alt if a != alias]
            changed = True
        if not changed:
            return
        try:
            await self.hs.event_creation.send(requester.user_id, room_id,
                                              "m.room.canonical_alias", content, state_key="")
        except MatrixError as e:
            logger.info("alias %s deleted; not updating canonical alias of %s: %s",
                        alias, room_id, e.message)

    async def get_local_aliases(self, requester: Requester, room_id: str) -> list[str]:
        if await self.hs.stores.rooms.get_room_version(room_id) is None:
            raise forbidden("You are not a member of the room.")
        if not requester.is_admin:
            membership = await self.hs.stores.memberships.get_membership(room_id, requester.user_id)
            if (membership is None or membership.membership != "join") and \
                    not await self.hs.visibility.is_world_readable(room_id):
                raise forbidden("You are not a member of the room.")
        return await self.hs.stores.rooms.get_aliases_for_room(room_id)

    # -- permissions -------------------------------------------------------
    async def can_send_state(self, user_id: str, room_id: str, etype: str) -> bool:
        """Whether a joined ``user_id`` has the power to send state ``etype`` now."""
        membership = await self.hs.stores.memberships.get_membership(room_id, user_id)
        if membership is None or membership.membership != "join":
            return False
        room_version = await self.hs.stores.rooms.get_room_version(room_id)
        if room_version is None:
            return False
        state = await self.hs.stores.state.get_current_state_ids(room_id)
        keys = [("m.room.create", ""), ("m.room.power_levels", "")]
        loaded = await self.store.get_events([state[k] for k in keys if k in state])
        auth: dict[tuple[str, str], Event] = {
            k: loaded[state[k]].event for k in keys if k in state and state[k] in loaded}
        if ("m.room.create", "") not in auth:
            return False
        power_levels = auth[("m.room.power_levels", "")].content \
            if ("m.room.power_levels", "") in auth else None
        needed = get_send_level(etype, "", power_levels, room_version)
        return get_user_power_level(user_id, auth, room_version) >= needed

    # -- the published room list ---------------------------------------------
    async def get_visibility(self, room_id: str) -> str:
        if await self.hs.stores.rooms.get_room_version(room_id) is None:
            raise not_found("Room not found")
        return "public" if await self.hs.stores.rooms.is_room_public(room_id) else "private"

    async def set_visibility(self, requester: Requester, room_id: str, visibility: str) -> None:
        if visibility not in ("public", "private"):
            raise invalid_param("visibility must be 'public' or 'private'")
        if await self.hs.stores.rooms.get_room_version(room_id) is None:
            raise not_found("Room not found")
        if not requester.is_admin and not await self.can_send_state(
                requester.user_id, room_id, "m.room.canonical_alias"):
            raise forbidden("You don't have permission to change the room's directory "
                            "visibility.")
        await self.hs.stores.rooms.set_room_public(room_id, visibility == "public")

    async def room_summary(self, room_id: str, joined_members: int) -> dict[str, Any]:
        """One ``/publicRooms`` chunk entry, from the room's current state."""
        state = await self.hs.stores.state.get_current_state_ids(room_id)
        wanted = ("m.room.name", "m.room.topic", "m.room.canonical_alias", "m.room.avatar",
                  "m.room.history_visibility", "m.room.guest_access", "m.room.join_rules",
                  "m.room.create")
        ids = {t: state[(t, "")] for t in wanted if (t, "") in state}
        loaded = await self.store.get_events(ids.values())
        content: dict[str, dict[str, Any]] = {
            t: loaded[eid].event.content for t, eid in ids.items() if eid in loaded}

        def text(etype: str, key: str) -> str | None:
            value = content.get(etype, {}).get(key)
            return value if isinstance(value, str) and value else None

        entry: dict[str, Any] = {
            "room_id": room_id,
            "num_joined_members": joined_members,
            "world_readable": text("m.room.history_visibility", "history_visibility")
            == "world_readable",
            "guest_can_join": text("m.room.guest_access", "guest_access") == "can_join",
            "join_rule": text("m.room.join_rules", "join_rule") or "public",
        }
        for key, value in (("name", text("m.room.name", "name")),
                           ("topic", text("m.room.topic", "topic")),
                           ("canonical_alias", text("m.room.canonical_alias", "alias")),
                           ("avatar_url", text("m.room.avatar", "url")),
                           ("room_type", text("m.room.create", "type"))):
            if value is not None:
                entry[key] = value
        alt = content.get("m.room.canonical_alias", {}).get("alt_aliases")
        entry["_alt_aliases"] = [a for a in alt if isinstance(a, str)] \
            if isinstance(alt, list) else []
        return entry

    async def public_rooms(self, query: PublicRoomsQuery) -> dict[str, Any]:
        offset = _parse_since(query.since)
        limit = query.limit
        if limit is None or limit <= 0:
            limit = DEFAULT_PUBLIC_ROOMS_LIMIT
        limit = min(limit, MAX_PUBLIC_ROOMS_LIMIT)
        # Application services' networks (appservice room directories): one
        # network alone, or every network as well as the server's own list.
        networks = await self.hs.appservices.network_room_ids(
            query.third_party_instance_id, query.include_all_networks)
        if query.include_all_networks:
            room_ids = sorted(set(await self.hs.stores.rooms.get_public_room_ids())
                              | set(networks or ()))
        elif networks is not None:
            room_ids = networks
        else:
            room_ids = await self.hs.stores.rooms.get_public_room_ids()
        counts = await self.hs.stores.rooms.get_joined_member_counts(room_ids)
        entries = []
        term = query.search_term.casefold().strip() if query.search_term else ""
        for room_id in room_ids:
            joined = counts.get(room_id, 0)
            if joined == 0:
                continue  # nobody left to let anyone in
            entry = await self.room_summary(room_id, joined)
            alt_aliases = entry.pop("_alt_aliases")
            if query.room_types is not None and entry.get("room_type") not in query.room_types:
                continue
            if term:
                haystack = [entry.get("name"), entry.get("topic"),
                            entry.get("canonical_alias"), *alt_aliases]
                if not any(isinstance(h, str) and term in h.casefold() for h in haystack):
                    continue
            entries.append(entry)
        # Largest rooms first; the room id keeps the order stable between pages.
        entries.sort(key=lambda e: (-e["num_joined_members"], e["room_id"]))
        page = entries[offset:offset + limit]
        response: dict[str, Any] = {"chunk": page,
                                    "total_room_count_estimate": len(entries)}
        if offset + limit < len(entries):
            response["next_batch"] = f"{_TOKEN_PREFIX}{offset + limit}"
        if offset > 0:
            response["prev_batch"] = f"{_TOKEN_PREFIX}{max(0, offset - limit)}"
        return response
