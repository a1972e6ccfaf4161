"""The legacy ``/initialSync`` and ``/rooms/{roomId}/initialSync``: a snapshot
of every room of a user, or of one room, assembled from room reads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from myelin.domain import Requester

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer


class InitialSyncHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def _account_data(self, user_id: str) -> dict[str, dict[str, dict[str, Any]]]:
        """room_id ('' for global) -> type -> content, everything up to now."""
        return await self.hs.stores.account_data.changed_since(
            user_id, None, self.hs.streams.position("account_data"))

    async def room_initial_sync(self, requester: Requester, room_id: str, limit: int,
                                ) -> dict[str, Any]:
        hs = self.hs
        membership, _ = await hs.room_reads.membership_for_read(requester, room_id)
        messages = await hs.room_reads.paginate(requester, room_id, from_token=None,
                                                to_token=None, backwards=True, limit=limit,
                                                event_filter=None)
        messages["chunk"].reverse()
        messages["start"], messages["end"] = messages.get("end", messages["start"]), \
            messages["start"]
        state = await hs.room_reads.get_state(requester, room_id)
        visibility = "private"
        if await hs.stores.rooms.is_room_public(room_id):
            visibility = "public"
        account_data = await self._account_data(requester.user_id)
        return {
            "room_id": room_id,
            "membership": membership.membership if membership else "leave",
            "messages": messages,
            "state": state,
            "visibility": visibility,
            "presence": [],
            "account_data": [{"type": t, "content": c}
                             for t, c in account_data.get(room_id, {}).items()],
        }

    async def initial_sync(self, requester: Requester, limit: int) -> dict[str, Any]:
        hs = self.hs
        rooms = []
        for membership in await hs.stores.memberships.get_rooms_for_user(
                requester.user_id, ("join", "invite")):
            if membership.membership == "invite":
                rooms.append({"room_id": membership.room_id, "membership": "invite"})
                continue
            rooms.append(await self.room_initial_sync(requester, membership.room_id, limit))
        account_data = await self._account_data(requester.user_id)
        return {
            "end": str(hs.streams.current_token()),
            "rooms": rooms,
            "presence": [],
            "account_data": [{"type": t, "content": c}
                             for t, c in account_data.get("", {}).items()],
        }
