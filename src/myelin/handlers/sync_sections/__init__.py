"""The sections of a ``/sync`` response, one provider each.

Each section reads the streams it is about between the request's ``since``
and ``now`` and writes its part of the body into the :class:`SyncResult`,
saying whether it found anything new (a long-poll answers as soon as one
does). They run in :data:`SECTIONS` order: rooms first, since presence and
device lists need to know which rooms the user is in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from myelin.storage.stores.events import EventStore, MembershipStore

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer
    from myelin.handlers.sync import SyncRequest, SyncResult


class SyncSection:
    """One section of the response: reads its streams, fills its part."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store: EventStore = hs.stores.events

    async def fill(self, req: SyncRequest, result: SyncResult) -> None:
        raise NotImplementedError


async def users_sharing_rooms(memberships: MembershipStore, user_id: str,
                              joined_ids: list[str]) -> set[str]:
    """The user and everyone in one of ``joined_ids`` with them."""
    users = {user_id}
    for room_id in joined_ids:
        users.update(m.user_id for m in await memberships.get_members(room_id))
    return users
