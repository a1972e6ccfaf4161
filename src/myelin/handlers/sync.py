"""``/sync``: everything that happened to a user between two stream tokens.

The answer for (since, now] is assembled per section, each a provider in
``handlers/sync_sections/`` reading its streams: rooms from `events` (plus
typing, receipts and room account data), presence, global account data,
to-device messages, device lists and key counts. ``now`` is this process's
view of the streams (what it has received), so a sync worker that writes
nothing still answers with everything the writers announced. A request with
nothing new waits on the notifier (registered *before* computing, so a row
landing mid-computation still wakes it) until something arrives or the
timeout passes; it never polls the database.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from myelin.domain import Requester
from myelin.handlers.filters import SyncFilter
from myelin.handlers.sync_sections import SyncSection
from myelin.handlers.sync_sections.others import (
    AccountDataSection,
    DeviceListsSection,
    KeyCountsSection,
    PresenceSection,
    ToDeviceSection,
)
from myelin.handlers.sync_sections.rooms import RoomsSection
from myelin.replication.tokens import StreamPosition, SyncToken

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

MAX_TIMEOUT_MS = 5 * 60 * 1000

# The sections of a response, in the order they are computed (see sync_sections).
SECTIONS: tuple[type[SyncSection], ...] = (RoomsSection, PresenceSection, AccountDataSection,
                                           ToDeviceSection, DeviceListsSection,
                                           KeyCountsSection)


@dataclass
class SyncRequest:
    requester: Requester
    since: SyncToken | None
    now: SyncToken
    filter: SyncFilter
    full_state: bool
    # room -> index of the events writer that persists it (0 with one writer)
    room_writer: Callable[[str], int] = lambda _: 0
    # Users this user ignores (m.ignored_user_list): their events and invites
    # are left out.
    ignored: frozenset[str] = frozenset()

    @property
    def user_id(self) -> str:
        return self.requester.user_id

    def events_upper(self, room_id: str) -> int:
        """How far this sync reads ``room_id``'s events: its persister's position.

        All of a room's events come from one persister, so a room need not
        wait for the slowest writer (the stream's minimum) to be read.
        """
        return self.now.writer_position("events", self.room_writer(room_id))

    def events_lower(self, room_id: str) -> int | None:
        """Where the previous sync left ``room_id`` (None: an initial sync)."""
        if self.since is None:
            return None
        return self.since.writer_position("events", self.room_writer(room_id))

    def moved(self, stream: str) -> bool:
        """Could ``stream`` hold anything new for this request?"""
        return self.since is None or self.since[stream] < self.now[stream]


@dataclass
class SyncResult:
    body: dict[str, Any]
    next_batch: SyncToken
    has_updates: bool = False
    rooms_joined: list[str] = field(default_factory=list)
    newly_joined: set[str] = field(default_factory=set)
    rooms_left: set[str] = field(default_factory=set)
    new_members: set[str] = field(default_factory=set)


class SyncHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.events
        self.sections = [section(hs) for section in SECTIONS]
        self._room_writer: Callable[[str], int] = lambda room_id: hs.roles.writer_index(
            "events", room_id)

    async def sync(self, requester: Requester, since: SyncToken | None, timeout_ms: int,
                   full_state: bool, set_presence: str, sync_filter: SyncFilter,
                   ) -> dict[str, Any]:
        hs = self.hs
        user_id = requester.user_id
        hs.presence.sync_started(user_id)
        try:
            if set_presence in ("online", "unavailable"):
                await hs.presence.user_syncing(user_id, set_presence)
            deadline = time.monotonic() + min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
            while True:
                rooms = [m.room_id for m in
                         await hs.stores.memberships.get_rooms_for_user(user_id)]
                with hs.notifier.listen(user_id, rooms) as listener:
                    now = self._clamp(hs.streams.current_token(), since)
                    request = SyncRequest(requester, since, now, sync_filter, full_state,
                                          self._room_writer,
                                          await hs.account_data.ignored_users(user_id))
                    result = await self._compute(request)
                    remaining = deadline - time.monotonic()
                    if since is None or full_state or result.has_updates or remaining <= 0 \
                            or hs.notifier.stopping:
                        return self._finish(result)
                    if not await listener.wait(remaining):
                        return self._finish(result)
        finally:
            hs.presence.sync_finished(user_id)

    @staticmethod
    def _clamp(now: SyncToken, since: SyncToken | None) -> SyncToken:
        # The in-memory typing stream restarts with the process: a client
        # token from before a restart may be ahead of it; never go backwards.
        if since is not None and since["typing"] > now["typing"]:
            return now.copy_with("typing", since["typing"])
        return now

    @staticmethod
    def _finish(result: SyncResult) -> dict[str, Any]:
        result.body["next_batch"] = str(result.next_batch)
        return result.body

    async def _compute(self, req: SyncRequest) -> SyncResult:
        result = SyncResult({}, req.now)
        for section in self.sections:
            await section.fill(req, result)
        return result


def parse_since(value: str | None) -> SyncToken | None:
    if not value:
        return None
    return SyncToken.parse(value)


__all__ = ["StreamPosition", "SyncHandler", "SyncRequest", "SyncResult", "parse_since"]
