"""Spaces and room previews: ``/hierarchy`` (a space's rooms, walked through
``m.space.child`` state) and ``/room_summary`` (one room, for someone who may
not be in it).

Both show a room only to a requester who may peek at it: a member (or
invitee), or anyone when the room is world readable or its join rule lets
them in or knock (``public``, ``knock``, or a ``restricted`` /
``knock_restricted`` rule whose allowed rooms they are joined to). A child
this server is not in is asked of its ``via`` servers over federation
(:meth:`SpaceHandler._remote_child`: their ``/hierarchy``, which also
summarises its children). :meth:`SpaceHandler.federation_hierarchy` is what
we answer other servers with.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError, Requester, forbidden, not_found
from myelin.storage.stores.events import StateMap

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer
    from myelin.events.event import Event

DEFAULT_HIERARCHY_LIMIT = 50
MAX_HIERARCHY_LIMIT = 100
DEFAULT_MAX_DEPTH = 50
# A walk stops after this many rooms, however deep or wide the spaces are.
MAX_ROOMS_WALKED = 1000

_PEEKABLE_JOIN_RULES = ("public", "knock")
_RESTRICTED_JOIN_RULES = ("restricted", "knock_restricted")


@dataclass(frozen=True)
class _Child:
    room_id: str
    event: Event
    suggested: bool


def _valid_order(value: object) -> str | None:
    """A child's ``order``: up to 50 printable ASCII characters, else ignored."""
    if isinstance(value, str) and len(value) <= 50 and all(0x20 <= ord(c) <= 0x7E
                                                          for c in value):
        return value
    return None


def _stripped(event: Event) -> dict[str, Any]:
    return {"type": event.type, "state_key": event.state_key, "content": event.content,
            "sender": event.sender, "origin_server_ts": event.origin_server_ts}


class SpaceHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    # -- who may peek --------------------------------------------------------
    async def _state_content(self, state: StateMap, etype: str) -> dict[str, Any]:
        event_id = state.get((etype, ""))
        stored = await self.hs.stores.events.get_event(event_id) if event_id else None
        return stored.event.content if stored else {}

    async def _allowed_room_ids(self, state: StateMap) -> list[str]:
        join_rules = await self._state_content(state, "m.room.join_rules")
        if join_rules.get("join_rule") not in _RESTRICTED_JOIN_RULES:
            return []
        allow = join_rules.get("allow")
        return [a["room_id"] for a in allow if isinstance(a, dict)
                and a.get("type") == "m.room_membership" and isinstance(a.get("room_id"), str)] \
            if isinstance(allow, list) else []

    async def may_peek(self, user_id: str | None, room_id: str, state: StateMap) -> bool:
        if user_id is not None:
            membership = await self.hs.stores.memberships.get_membership(room_id, user_id)
            if membership is not None and membership.membership in ("join", "invite"):
                return True
        history = await self._state_content(state, "m.room.history_visibility")
        if history.get("history_visibility") == "world_readable":
            return True
        join_rule = (await self._state_content(state, "m.room.join_rules")).get("join_rule")
        if join_rule in _PEEKABLE_JOIN_RULES:
            return True
        if join_rule in _RESTRICTED_JOIN_RULES and user_id is not None:
            for allowed in await self._allowed_room_ids(state):
                membership = await self.hs.stores.memberships.get_membership(allowed, user_id)
                if membership is not None and membership.membership == "join":
                    return True
        return False

    async def _entry(self, room_id: str, state: StateMap) -> dict[str, Any]:
        counts = await self.hs.stores.rooms.get_joined_member_counts([room_id])
        entry = await self.hs.directory.room_summary(room_id, counts.get(room_id, 0))
        entry.pop("_alt_aliases", None)
        allowed = await self._allowed_room_ids(state)
        if allowed:
            entry["allowed_room_ids"] = allowed
        return entry

    # -- /room_summary ---------------------------------------------------------
    async def room_summary(self, requester: Requester | None, room_id_or_alias: str,
                           ) -> dict[str, Any]:
        room_id = await self.hs.membership.resolve_room(room_id_or_alias)
        version = await self.hs.stores.rooms.get_room_version(room_id)
        user_id = requester.user_id if requester else None
        state = await self.hs.stores.state.get_current_state_ids(room_id) if version else {}
        if version is None or not state or not await self.may_peek(user_id, room_id, state):
            # The same answer whether the room exists or not: nothing leaks.
            raise not_found("Room not found.")
        entry = await self._entry(room_id, state)
        entry["room_version"] = version.identifier
        algorithm = (await self._state_content(state, "m.room.encryption")).get("algorithm")
        if isinstance(algorithm, str):
            entry["encryption"] = algorithm
        if user_id is not None:
            membership = await self.hs.stores.memberships.get_membership(room_id, user_id)
            entry["membership"] = membership.membership if membership else "leave"
        return entry

    # -- /hierarchy --------------------------------------------------------------
    async def _children(self, state: StateMap) -> list[_Child]:
        """A space's children in the spec's order: valid ``order`` first, then
        by the child event's timestamp, then by room id."""
        ids = [eid for (etype, _), eid in state.items() if etype == "m.space.child"]
        loaded = await self.hs.stores.events.get_events(ids)
        children = []
        for stored in loaded.values():
            event = stored.event
            via = event.content.get("via")
            if not isinstance(via, list) or not via or event.state_key is None \
                    or not event.state_key.startswith("!"):
                continue  # no via: removed from the space
            children.append(_Child(event.state_key, event,
                                   event.content.get("suggested") is True))

        def key(child: _Child) -> tuple[int, str, int, str]:
            order = _valid_order(child.event.content.get("order"))
            return (0 if order is not None else 1, order or "",
                    child.event.origin_server_ts, child.room_id)

        return sorted(children, key=key)

    async def _remote_child(self, room_id: str, via: list[str], suggested_only: bool,
                            known: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        """A child room this server is not in: its summary from the space
        answers of its ``via`` servers (``known`` keeps the child summaries
        each answer brought, so a remote space's children cost no more requests)."""
        if room_id in known:
            return known[room_id]
        answer = await self.hs.federation_queries.hierarchy(via, room_id, suggested_only)
        if answer is None:
            return None
        for child in answer.get("children") or []:
            if isinstance(child, dict) and isinstance(child.get("room_id"), str):
                known.setdefault(child["room_id"], child)
        room: dict[str, Any] = answer["room"]
        known[room_id] = room
        return room

    async def _may_see_remote(self, user_id: str, entry: dict[str, Any]) -> bool:
        """The requester's filter on a remote server's summary (it already
        left out what our server may not see)."""
        if entry.get("world_readable") is True or \
                entry.get("join_rule") in (*_PEEKABLE_JOIN_RULES, None):
            return True
        membership = await self.hs.stores.memberships.get_membership(entry["room_id"],
                                                                     user_id)
        if membership is not None and membership.membership in ("join", "invite"):
            return True
        if entry.get("join_rule") in _RESTRICTED_JOIN_RULES:
            for allowed in entry.get("allowed_room_ids") or []:
                if not isinstance(allowed, str):
                    continue
                membership = await self.hs.stores.memberships.get_membership(allowed, user_id)
                if membership is not None and membership.membership == "join":
                    return True
        return False

    @staticmethod
    def _remote_children(entry: dict[str, Any],
                         suggested_only: bool) -> list[tuple[str, list[str]]]:
        """(room id, via) of a remote summary's ``children_state``."""
        out = []
        for state in entry.get("children_state") or []:
            if not isinstance(state, dict) or not isinstance(state.get("state_key"), str):
                continue
            content = state.get("content")
            if not isinstance(content, dict):
                continue
            via = content.get("via")
            if not isinstance(via, list) or not via or not state["state_key"].startswith("!"):
                continue
            if suggested_only and content.get("suggested") is not True:
                continue
            out.append((state["state_key"], [v for v in via if isinstance(v, str)]))
        return out

    async def hierarchy(self, requester: Requester, room_id: str, *, suggested_only: bool,
                        max_depth: int | None, limit: int | None, from_token: str | None,
                        ) -> dict[str, Any]:
        depth_limit = DEFAULT_MAX_DEPTH if max_depth is None else min(max_depth,
                                                                       DEFAULT_MAX_DEPTH)
        page_size = min(limit or DEFAULT_HIERARCHY_LIMIT, MAX_HIERARCHY_LIMIT)
        offset = 0
        if from_token is not None:
            offset = self._check_token(from_token, depth_limit, suggested_only)
        if await self.hs.stores.rooms.get_room_version(room_id) is None:
            raise forbidden("You are not allowed to view this room.")
        root_state = await self.hs.stores.state.get_current_state_ids(room_id)
        if not await self.may_peek(requester.user_id, room_id, root_state):
            raise forbidden("You are not allowed to view this room.")
        rooms: list[dict[str, Any]] = []
        seen = {room_id}
        known_remote: dict[str, dict[str, Any]] = {}
        # Each room to show: (room id, depth, its local state, or its remote summary).
        queue: deque[tuple[str, int, StateMap | None, dict[str, Any] | None]] = deque(
            [(room_id, 0, root_state, None)])
        while queue and len(rooms) < MAX_ROOMS_WALKED:
            current, depth, state, summary = queue.popleft()
            children: list[tuple[str, list[str]]]
            entry: dict[str, Any]
            if summary is not None or state is None:
                summary = summary or {}
                entry = {k: v for k, v in summary.items() if k != "children_state"}
                children = self._remote_children(summary, suggested_only) \
                    if entry.get("room_type") == "m.space" else []
                wanted = {r for r, _ in children}
                entry["children_state"] = [
                    c for c in summary.get("children_state") or []
                    if isinstance(c, dict) and c.get("state_key") in wanted]
            else:
                entry = await self._entry(current, state)
                is_space = entry.get("room_type") == "m.space"
                local_children = await self._children(state) if is_space else []
                if suggested_only:
                    local_children = [c for c in local_children if c.suggested]
                entry["children_state"] = [_stripped(c.event) for c in local_children]
                children = [(c.room_id, [v for v in c.event.content["via"]
                                         if isinstance(v, str)]) for c in local_children]
            rooms.append(entry)
            if depth >= depth_limit:
                continue
            for child_id, via in children:
                if child_id in seen:
                    continue  # loops happen: each room once
                seen.add(child_id)
                if await self.hs.stores.rooms.get_room_version(child_id) is None:
                    remote = await self._remote_child(child_id, via, suggested_only,
                                                      known_remote)
                    if remote is not None and await self._may_see_remote(
                            requester.user_id, remote):
                        queue.append((child_id, depth + 1, None, remote))
                    continue
                child_state = await self.hs.stores.state.get_current_state_ids(child_id)
                if await self.may_peek(requester.user_id, child_id, child_state):
                    queue.append((child_id, depth + 1, child_state, None))
        page = rooms[offset:offset + page_size]
        response: dict[str, Any] = {"rooms": page}
        if offset + page_size < len(rooms):
            response["next_batch"] = f"h{offset + page_size}_{depth_limit}_{int(suggested_only)}"
        return response

    # -- /_matrix/federation/v1/hierarchy ---------------------------------------
    async def server_may_see(self, origin: str, room_id: str, state: StateMap) -> bool:
        """Could a user of ``origin`` peek at or join the room? (The requesting
        server filters further for its own user.)"""
        if await self.may_peek(None, room_id, state):
            return True
        join_rule = (await self._state_content(state, "m.room.join_rules")).get("join_rule")
        if join_rule in _RESTRICTED_JOIN_RULES:
            return True  # allowed_room_ids go with the summary: the origin decides
        suffix = ":" + origin
        return any(m.user_id.endswith(suffix) for m in await self.hs.stores.memberships
                   .get_members(room_id, ("join", "invite")))

    async def federation_hierarchy(self, origin: str, room_id: str,
                                   suggested_only: bool) -> dict[str, Any]:
        """The space and its direct children we know, for another server."""
        if await self.hs.stores.rooms.get_room_version(room_id) is None:
            raise not_found("Room does not exist.")
        state = await self.hs.stores.state.get_current_state_ids(room_id)
        if not state or not await self.server_may_see(origin, room_id, state):
            raise not_found("Room does not exist.")
        room = await self._entry(room_id, state)
        is_space = room.get("room_type") == "m.space"
        children = await self._children(state) if is_space else []
        if suggested_only:
            children = [c for c in children if c.suggested]
        room["children_state"] = [_stripped(c.event) for c in children]
        summaries: list[dict[str, Any]] = []
        inaccessible: list[str] = []
        for child in children:
            if await self.hs.stores.rooms.get_room_version(child.room_id) is None:
                continue  # not ours to describe
            child_state = await self.hs.stores.state.get_current_state_ids(child.room_id)
            if not child_state or not await self.server_may_see(origin, child.room_id,
                                                                child_state):
                inaccessible.append(child.room_id)
                continue
            summary = await self._entry(child.room_id, child_state)
            grandchildren = await self._children(child_state) \
                if summary.get("room_type") == "m.space" else []
            if suggested_only:
                grandchildren = [c for c in grandchildren if c.suggested]
            summary["children_state"] = [_stripped(c.event) for c in grandchildren]
            summaries.append(summary)
        return {"room": room, "children": summaries, "inaccessible_children": inaccessible}

    @staticmethod
    def _check_token(token: str, depth_limit: int, suggested_only: bool) -> int:
        try:
            offset, depth, suggested = token[1:].split("_")
            values = int(offset), int(depth), bool(int(suggested))
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", "Unknown pagination token") from None
        if not token.startswith("h") or values[0] < 0:
            raise MatrixError(400, "M_INVALID_PARAM", "Unknown pagination token")
        if values[1] != depth_limit or values[2] != suggested_only:
            raise MatrixError(400, "M_INVALID_PARAM",
                              "suggested_only and max_depth cannot change on paginated requests")
        return values[0]
