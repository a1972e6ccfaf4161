"""The legacy ``/initialSync`` and ``/rooms/{roomId}/initialSync``: a snapshot
of every room of a user, or of one room, assembled from room reads.

Events come in the legacy (r0 "v1") client format: ``user_id`` beside
``sender`` and the ``unsigned`` extras repeated top-level. A room the user
left is shown as it was when they left (its history up to the leave, the state
then), with no presence or receipts; the global snapshot lists such rooms only
when asked with ``archived=true``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError, Requester
from myelin.handlers.serialize import legacy_client_format
from myelin.storage.stores.events import Membership

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

DEPARTED = ("leave", "ban")


class InitialSyncHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def _account_data(self, user_id: str) -> dict[str, dict[str, dict[str, Any]]]:
        """room_id ('' for global) -> type -> content, everything up to now."""
        return await self.hs.stores.account_data.changed_since(
            user_id, None, self.hs.streams.position("account_data"))

    async def _presence(self, user_ids: Iterable[str]) -> list[dict[str, Any]]:
        """``m.presence`` events (with ``user_id`` in the content) of the users
        that have a presence state."""
        states = await self.hs.stores.presence.get(sorted(set(user_ids)))
        return [{"type": "m.presence", "sender": s.user_id,
                 "content": self.hs.presence.format(s, include_user=True)}
                for s in states.values()]

    async def _receipts(self, room_id: str, user_id: str) -> list[dict[str, Any]]:
        receipts = await self.hs.stores.receipts.get_for_rooms(
            [room_id], None, self.hs.streams.position("receipts"))
        edu = self.hs.receipts.to_edu(receipts, user_id)
        return [] if edu is None else [{**edu, "room_id": room_id}]

    async def room_initial_sync(self, requester: Requester, room_id: str, limit: int,
                                *, account_data: dict[str, dict[str, dict[str, Any]]]
                                | None = None) -> dict[str, Any]:
        hs = self.hs
        membership, _ = await hs.room_reads.membership_for_read(requester, room_id)
        departed = membership is not None and membership.membership in DEPARTED
        # Pagination and state already stop at a former member's leave.
        messages = await hs.room_reads.paginate(requester, room_id, from_token=None,
                                                to_token=None, backwards=True, limit=limit,
                                                event_filter=None)
        chunk = [legacy_client_format(e) for e in reversed(messages["chunk"])]
        messages = {"chunk": chunk, "start": messages.get("end", messages["start"]),
                    "end": messages["start"]}
        state = [legacy_client_format(e) for e in
                 await hs.room_reads.get_state(requester, room_id)]
        visibility = "public" if await hs.stores.rooms.is_room_public(room_id) else "private"
        if account_data is None:
            account_data = await self._account_data(requester.user_id)
        presence: list[dict[str, Any]] = []
        receipts: list[dict[str, Any]] = []
        if not departed:
            members = await hs.stores.memberships.get_members(room_id)
            presence = await self._presence(m.user_id for m in members)
            receipts = await self._receipts(room_id, requester.user_id)
        return {
            "room_id": room_id,
            "membership": membership.membership if membership else "leave",
            "messages": messages,
            "state": state,
            "visibility": visibility,
            "presence": presence,
            "receipts": receipts,
            "account_data": [{"type": t, "content": c}
                             for t, c in account_data.get(room_id, {}).items()],
        }

    async def _invited_room(self, requester: Requester, membership: Membership,
                            ) -> dict[str, Any]:
        room: dict[str, Any] = {"room_id": membership.room_id, "membership": "invite"}
        stored = await self.hs.stores.events.get_event(membership.event_id)
        if stored is not None:
            room["inviter"] = stored.event.sender
            room["invite"] = legacy_client_format(await self.hs.serializer.serialize_one(
                stored, user_id=requester.user_id))
        return room

    async def initial_sync(self, requester: Requester, limit: int,
                           archived: bool = False) -> dict[str, Any]:
        hs = self.hs
        user_id = requester.user_id
        wanted = ("join", "invite", *(DEPARTED if archived else ()))
        memberships = await hs.stores.memberships.get_rooms_for_user(user_id, wanted)
        account_data = await self._account_data(user_id)
        rooms = []
        receipts: list[dict[str, Any]] = []
        visible_users = {user_id}
        for membership in memberships:
            room_id = membership.room_id
            if membership.membership == "invite":
                rooms.append(await self._invited_room(requester, membership))
                continue
            try:
                room = await self.room_initial_sync(requester, room_id, limit,
                                                    account_data=account_data)
            except MatrixError:
                continue  # e.g. an invite rejected before ever joining
            # Presence and receipts are given once, for the whole snapshot.
            room.pop("presence")
            receipts.extend(room.pop("receipts"))
            if membership.membership == "join":
                visible_users.update(
                    m.user_id for m in await hs.stores.memberships.get_members(room_id))
            rooms.append(room)
        return {
            "end": str(hs.streams.current_token()),
            "rooms": rooms,
            "presence": await self._presence(visible_users),
            "receipts": receipts,
            "account_data": [{"type": t, "content": c}
                             for t, c in account_data.get("", {}).items()],
        }
