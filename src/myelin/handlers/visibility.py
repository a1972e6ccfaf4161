"""History visibility: which events and state a user may see.

Applied on every read path (timeline, /messages, /context, /event, state).
The decision for each event uses the room state after that event (its
``m.room.history_visibility`` and the user's membership then), and the user's
membership now.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from myelin.events.event import Event
from myelin.storage.stores.events import Membership, StoredEvent

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer


# history_visibility values from the most to the least restrictive.
_PERMISSIVENESS = {"joined": 0, "invited": 1, "shared": 2, "world_readable": 3}


class VisibilityHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.events

    async def _was_ever_joined(self, room_id: str, user_id: str, before: int) -> bool:
        return bool(await self.store.db.fetchval(
            "SELECT 1 FROM events WHERE room_id = ? AND type = 'm.room.member'"
            " AND state_key = ? AND membership = 'join' AND stream_ordering <= ? LIMIT 1",
            room_id, user_id, before))

    async def filter_events(self, user_id: str, events: Sequence[StoredEvent],
                            membership_now: Membership | None = None,
                            ) -> list[StoredEvent]:
        if not events:
            return []
        room_id = events[0].event.room_id
        if membership_now is None:
            membership_now = await self.hs.stores.memberships.get_membership(room_id, user_id)
        current = membership_now.membership if membership_now else None
        left_at = membership_now.stream_ordering if membership_now and current in (
            "leave", "ban") else None
        ever_joined: bool | None = None
        groups = await self.hs.stores.state.get_state_group_for_events(
            [e.event.event_id for e in events])
        state_cache: dict[int, tuple[str, str | None]] = {}
        out = []
        for stored in events:
            event = stored.event
            if event.type == "m.room.member" and event.state_key == user_id:
                out.append(stored)
                continue
            group = groups.get(event.event_id)
            if group is None:
                continue
            if group not in state_cache:
                state = await self.hs.stores.state.get_state_for_group(group)
                visibility = "shared"
                hv_id = state.get(("m.room.history_visibility", ""))
                member_id = state.get(("m.room.member", user_id))
                loaded = await self.store.get_events([i for i in (hv_id, member_id) if i])
                if hv_id and hv_id in loaded:
                    value = loaded[hv_id].event.content.get("history_visibility")
                    if isinstance(value, str):
                        visibility = value
                membership_then = None
                if member_id and member_id in loaded:
                    membership_then = loaded[member_id].event.membership
                state_cache[group] = (visibility, membership_then)
            visibility, membership_then = state_cache[group]
            if event.type == "m.room.history_visibility" and event.state_key == "":
                # Whoever could see the room under the old setting or the new
                # one sees the change itself: use the more permissive.
                visibility = await self._before_or_after(event, visibility)
            if visibility == "world_readable" or membership_then == "join":
                out.append(stored)
            elif visibility == "invited" and membership_then == "invite":
                out.append(stored)
            elif visibility == "shared":
                if current == "join":
                    out.append(stored)
                elif left_at is not None and stored.stream_ordering <= left_at:
                    if ever_joined is None:
                        ever_joined = await self._was_ever_joined(room_id, user_id, left_at)
                    if ever_joined:
                        out.append(stored)
        return out

    async def _before_or_after(self, event: Event, after: str) -> str:
        before = "shared"
        replaced = event.unsigned.get("replaces_state")
        if isinstance(replaced, str):
            previous = await self.store.get_event(replaced)
            value = previous.event.content.get("history_visibility") if previous else None
            if isinstance(value, str):
                before = value
        return max(before, after, key=lambda v: _PERMISSIVENESS.get(v, 0))

    async def can_see_event(self, user_id: str, stored: StoredEvent) -> bool:
        return bool(await self.filter_events(user_id, [stored]))

    async def is_world_readable(self, room_id: str) -> bool:
        event = await self.hs.stores.state.get_current_state_event(
            room_id, "m.room.history_visibility")
        return bool(event and event.content.get("history_visibility") == "world_readable")
