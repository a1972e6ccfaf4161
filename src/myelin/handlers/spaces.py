"""Spaces and room previews: ``/hierarchy`` (a space's rooms, walked through
``m.space.child`` state) and ``/room_summary`` (one room, for someone who may
not be in it).

Both show a room only to a requester who may peek at it: a member (or
invitee), or anyone when the room is world readable or its join rule lets
them in or knock (``public``, ``knock``, or a ``restricted`` /
``knock_restricted`` rule whose allowed rooms they are joined to). Only local
rooms are walked: a child this server does not know is skipped until
federation can ask its ``via`` servers (:meth:`SpaceHandler._remote_child`).
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

    def _remote_child(self, child: _Child) -> None:
        """A child room this server does not know: federation's
        ``/hierarchy`` over ``child.event.content["via"]`` belongs here.
        Until then it is left out."""

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
        queue: deque[tuple[str, int, StateMap]] = deque([(room_id, 0, root_state)])
        while queue and len(rooms) < MAX_ROOMS_WALKED:
            current, depth, state = queue.popleft()
            entry = await self._entry(current, state)
            is_space = entry.get("room_type") == "m.space"
            children = await self._children(state) if is_space else []
            if suggested_only:
                children = [c for c in children if c.suggested]
            entry["children_state"] = [_stripped(c.event) for c in children]
            rooms.append(entry)
            if depth >= depth_limit:
                continue
            for child in children:
                if child.room_id in seen:
                    continue  # loops happen: each room once
                seen.add(child.room_id)
                if await self.hs.stores.rooms.get_room_version(child.room_id) is None:
                    self._remote_child(child)
                    continue
                child_state = await self.hs.stores.state.get_current_state_ids(child.room_id)
                if await self.may_peek(requester.user_id, child.room_id, child_state):
                    queue.append((child.room_id, depth + 1, child_state))
        page = rooms[offset:offset + page_size]
        response: dict[str, Any] = {"rooms": page}
        if offset + page_size < len(rooms):
            response["next_batch"] = f"h{offset + page_size}_{depth_limit}_{int(suggested_only)}"
        return response

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
