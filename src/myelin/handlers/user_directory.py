"""The user directory: ``POST /user_directory/search`` and keeping it current.

Who may find whom: a searcher finds users who share a joined room with them
(read live from ``room_memberships``, so a leave hides at once), users joined
to public rooms (``users_in_public_rooms``: a public join rule or
world-readable history), or, with ``user_directory.search_all_users``, every
local user; never deactivated users, nor locked ones unless ``show_locked_users``. Names come from
``user_directory``, written with every profile change in the profile's own
transaction (``AccountStore``).

``users_in_public_rooms`` is kept by one instance, the one named by
``update_user_directory_from_worker`` (the ``user_dir`` job): it follows the
events stream, and for each membership, join-rules or history-visibility
event re-derives the affected rows from the room's current state, in order,
up to the stream's readable position (below it every event is committed), storing how far it got
in the same transaction. After a restart it goes on from that position, so no
change is missed; re-deriving from current state makes applying an event
twice harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from myelin.domain import Requester, bad_json, invalid_param
from myelin.storage.fts import parse_query
from myelin.storage.stream_rows import EventsRow

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
# Events read per transaction while catching up.
CATCH_UP_BATCH = 500
WATCHED_TYPES = ("m.room.member", "m.room.join_rules", "m.room.history_visibility")
# What makes a room's members findable by anyone (as Synapse has it): a
# public join rule, or history anyone may read.
PUBLICITY_TYPES = ("m.room.join_rules", "m.room.history_visibility")


class UserDirectoryHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.user_directory
        self.config = hs.config.user_directory
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.position: int | None = None  # how far the updater has applied the stream

    # -- search --------------------------------------------------------------
    async def search(self, requester: Requester, body: dict[str, Any]) -> dict[str, Any]:
        term = body.get("search_term")
        if not isinstance(term, str):
            raise bad_json("search_term must be a string")
        limit = body.get("limit", DEFAULT_LIMIT)
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise bad_json("limit must be an integer")
        if limit < 0:
            raise invalid_param("limit must not be negative")
        limit = min(limit, MAX_LIMIT)
        if not self.config.enabled:
            return {"limited": False, "results": []}
        entries = await self.store.search(requester.user_id, parse_query(term), limit + 1,
                                          search_all_users=self.config.search_all_users,
                                          show_locked_users=self.config.show_locked_users)
        if self.config.prefer_local_users:
            # Stable: keeps the rank order within local and within remote users.
            entries.sort(key=lambda e: not self.hs.is_mine(e.user_id))
        results = []
        for entry in entries[:limit]:
            result: dict[str, Any] = {"user_id": entry.user_id}
            if entry.display_name is not None:
                result["display_name"] = entry.display_name
            if entry.avatar_url is not None:
                result["avatar_url"] = entry.avatar_url
            results.append(result)
        return {"limited": len(entries) > limit, "results": results}

    # -- keeping users_in_public_rooms current (the user_dir job) --------------
    def follow(self) -> None:
        """Hear of new events (call before the follower starts)."""
        self.hs.follower.on_visible("events", self._on_events_rows)

    def start_updater(self) -> None:
        """Start applying the stream (once the follower knows where it is)."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop_updater(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    def _on_events_rows(self, writer: str, rows: Sequence[tuple[int, EventsRow]]) -> None:
        if any(row.type in WATCHED_TYPES for _, row in rows):
            self._wakeup.set()

    async def _run(self) -> None:
        while True:
            try:
                if self.position is None:
                    self.position = await self.store.get_position()
                if self.position is None:
                    await self._rebuild()
                await self._catch_up()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("user directory: update failed; retrying")
                await asyncio.sleep(1.0)
                continue
            await self._wakeup.wait()
            self._wakeup.clear()

    async def _is_public(self, room_id: str) -> bool:
        state = self.hs.stores.state
        rules = await state.get_current_state_event(room_id, "m.room.join_rules")
        if rules is not None and rules.content.get("join_rule") == "public":
            return True
        history = await state.get_current_state_event(room_id, "m.room.history_visibility")
        return bool(history and history.content.get("history_visibility") == "world_readable")

    async def _rebuild(self) -> None:
        """First start: entries for users older than the directory, and the
        members of every public room; then follow the stream from here."""
        upto = self.hs.streams.view.position("events")
        while True:
            users = await self.store.users_without_entry(1000)
            if not users:
                break
            async with self.hs.db.transaction() as txn:
                for user_id, display_name, avatar_url in users:
                    await self.store.write_profile(txn, user_id, display_name, avatar_url)
        rows = await self.hs.db.fetchall(
            "SELECT DISTINCT room_id FROM current_state_events"
            " WHERE type IN ('m.room.join_rules', 'm.room.history_visibility')"
            " AND state_key = ''")
        async with self.hs.db.transaction() as txn:
            for (room_id,) in rows:
                await self.store.set_public_room(txn, room_id, await self._is_public(room_id))
            await self.store.set_position(txn, upto)
        self.position = upto
        logger.info("user directory: rebuilt up to events position %d", upto)

    async def _catch_up(self) -> None:
        assert self.position is not None
        while True:
            # Everything at or below the readable position is committed, in
            # every writer's share of the stream.
            upto = self.hs.streams.view.position("events")
            if self.position >= upto:
                return
            rows = await self.hs.db.fetchall(
                "SELECT stream_ordering, room_id, type, state_key FROM events"
                " WHERE stream_ordering > ? AND stream_ordering <= ?"
                " AND type IN ('m.room.member', 'm.room.join_rules',"
                " 'm.room.history_visibility')"
                " ORDER BY stream_ordering LIMIT ?", self.position, upto, CATCH_UP_BATCH)
            reached = int(rows[-1][0]) if len(rows) == CATCH_UP_BATCH else upto
            await self._apply([(r[1], r[2], r[3]) for r in rows], reached)
            self.position = reached

    async def _apply(self, changes: list[tuple[str, str, str | None]], reached: int) -> None:
        rules_changed = {room for room, etype, key in changes
                         if etype in PUBLICITY_TYPES and key == ""}
        members = {(room, key) for room, etype, key in changes
                   if etype == "m.room.member" and key and room not in rules_changed}
        public = {room: await self._is_public(room)
                  for room in rules_changed | {room for room, _ in members}}
        async with self.hs.db.transaction() as txn:
            for room_id in rules_changed:
                await self.store.set_public_room(txn, room_id, public[room_id])
            for room_id, user_id in members:
                membership = await txn.fetchval(
                    "SELECT membership FROM room_memberships WHERE room_id = ? AND user_id = ?",
                    room_id, user_id)
                await self.store.set_public_member(txn, room_id, user_id,
                                                   public[room_id] and membership == "join")
            await self.store.set_position(txn, reached)
