"""Presence: online / unavailable / offline, set explicitly or by syncing.

A user who syncs is online; one whose last sync is older than
``SYNC_TIMEOUT_S`` and who has no sync in flight goes offline; an online user
idle for ``IDLE_TIMEOUT_S`` becomes unavailable. The `presence` stream's
writer applies the timeouts in a periodic sweep; changes are rows on the
stream. Every process tells the writer who is syncing there with USER_SYNC
commands (the writer hears its own the same way), and forwards explicit
changes to it over HTTP replication.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError, forbidden, not_found
from myelin.replication.commands import Command, UserSyncCommand
from myelin.replication.http import ReplicationEndpoint
from myelin.storage.caches import Cache
from myelin.storage.stores.presence import PresenceState
from myelin.storage.stream_rows import PresenceRow

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)

STATES = ("online", "unavailable", "offline")
SYNC_TIMEOUT_S = 30.0
IDLE_TIMEOUT_S = 300.0
SWEEP_INTERVAL_S = 5.0
# A process re-announces a user who keeps syncing this often; the writer
# forgets a "syncing" claim not renewed for USER_SYNC_EXPIRY_S (a dead worker).
USER_SYNC_REFRESH_S = 10.0
USER_SYNC_EXPIRY_S = 60.0
# A remote user (m.presence over federation) whose server said nothing more for
# this long goes offline here: its server may be gone without saying so.
REMOTE_PRESENCE_TIMEOUT_S = 30 * 60.0


def now_ms() -> int:
    return int(time.time() * 1000)


class SetPresence(ReplicationEndpoint):
    NAME = "presence"
    STREAM = "presence"

    @staticmethod
    async def handle(hs: HomeServer, p: dict[str, Any]) -> Any:
        await hs.presence.apply_state(p["user_id"], p["state"], p["status_msg"],
                                      keep_status=p["keep_status"], from_sync=p["from_sync"])
        return {}


class SetRemotePresence(ReplicationEndpoint):
    """A remote user's presence as their server sent it (federation/edus.py)."""

    NAME = "remote_presence"
    STREAM = "presence"

    @staticmethod
    async def handle(hs: HomeServer, p: dict[str, Any]) -> Any:
        await hs.presence.apply_remote(p["user_id"], p["state"], p["status_msg"],
                                       int(p["last_active_ago"]), bool(p["currently_active"]))
        return {}


class PresenceHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.presence
        self.instance_name = hs.config.instance_name
        # Syncs in flight in this process, per user, and when we last told the writer.
        self._syncing: dict[str, int] = {}
        self._announced: dict[str, float] = {}
        # On the writer: user -> instance -> when it last said the user syncs there.
        self._syncing_at: dict[str, dict[str, float]] = {}
        # Syncing asks for the syncing user's presence on every request: the
        # states this process has read or written; other writers' rows drop them.
        self._cache: Cache[str, PresenceState | None] = hs.caches.register("presence", 100_000)
        # user -> time (ms) of their last sync that changed nothing others could see:
        # kept here instead of on the stream, so it wakes nobody (not even themselves).
        self._synced_at: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        hs.bus.subscribe(self._on_command)

    async def start(self) -> None:
        tasks = [self._refresh_forever()]
        if self.hs.roles.is_writer("presence"):
            tasks.append(self._sweep_forever())
        self._tasks = [asyncio.create_task(t) for t in tasks]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def get_state(self, user_id: str) -> PresenceState | None:
        if user_id in self._cache:
            return self._cache.get(user_id)  # type: ignore[no-any-return]
        generation = self._cache.generation
        state = (await self.store.get([user_id])).get(user_id)
        self._cache.put_if(generation, user_id, state)
        return state

    async def _write(self, user_id: str, state: str, status_msg: str | None,
                     last_active_ts: int, last_user_sync_ts: int, currently_active: bool,
                     ) -> None:
        position = await self.store.update(user_id, state, status_msg, last_active_ts,
                                           last_user_sync_ts, currently_active)
        self._cache.put(user_id, PresenceState(user_id, position, state, status_msg,
                                               last_active_ts, last_user_sync_ts,
                                               currently_active))

    def on_presence_rows(self, writer: str, rows: Sequence[tuple[int, PresenceRow]]) -> None:
        if writer == self.instance_name:
            return  # the writer cached what it wrote
        for _, row in rows:
            self._cache.invalidate(row.user_id)

    async def set_state(self, user_id: str, state: str, status_msg: str | None = None,
                        *, keep_status: bool = False, from_sync: bool = False) -> None:
        if state not in STATES:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown presence state {state!r}")
        if from_sync and not self.hs.roles.is_writer("presence"):
            current = await self.get_state(user_id)
            if current is not None and current.state == state and \
                    current.currently_active == (state == "online"):
                return  # nothing changes: the USER_SYNC we sent keeps it fresh
        await self.hs.replication.call(SetPresence, {
            "user_id": user_id, "state": state, "status_msg": status_msg,
            "keep_status": keep_status, "from_sync": from_sync})

    async def apply_state(self, user_id: str, state: str, status_msg: str | None = None,
                          *, keep_status: bool = False, from_sync: bool = False) -> None:
        """On the presence writer: change a user's presence."""
        current = await self.get_state(user_id)
        now = now_ms()
        if keep_status and current is not None:
            status_msg = current.status_msg
        last_active = now if state == "online" else (current.last_active_ts if current else now)
        last_sync = now if from_sync else (current.last_user_sync_ts if current else now)
        if from_sync and current is not None and current.state == state and \
                current.status_msg == status_msg and \
                current.currently_active == (state == "online"):
            self._synced_at[user_id] = now  # nothing a client could notice has changed
            return
        await self._write(user_id, state, status_msg, last_active, last_sync,
                          state == "online")

    async def apply_remote(self, user_id: str, state: str, status_msg: str | None,
                           last_active_ago: int, currently_active: bool) -> None:
        """On the presence writer: a remote user's presence. ``last_user_sync_ts``
        records when we heard it, for the remote timeout of the sweep."""
        now = now_ms()
        current = await self.get_state(user_id)
        last_active = now - last_active_ago
        if current is not None and current.state == state and \
                current.status_msg == status_msg and \
                current.currently_active == currently_active:
            # Nothing a client would notice: refresh the timeout without a row.
            self._synced_at[user_id] = now
            return
        await self._write(user_id, state, status_msg, last_active, now, currently_active)

    # -- who is syncing --------------------------------------------------------
    def sync_started(self, user_id: str) -> None:
        self._syncing[user_id] = self._syncing.get(user_id, 0) + 1
        now = time.monotonic()
        if now - self._announced.get(user_id, -USER_SYNC_REFRESH_S) >= USER_SYNC_REFRESH_S:
            self._announced[user_id] = now
            self.hs.bus.publish(UserSyncCommand(self.instance_name, user_id, True, now_ms()))

    def sync_finished(self, user_id: str) -> None:
        count = self._syncing.get(user_id, 0) - 1
        if count <= 0:
            self._syncing.pop(user_id, None)
            self._announced.pop(user_id, None)
            self.hs.bus.publish(UserSyncCommand(self.instance_name, user_id, False, now_ms()))
        else:
            self._syncing[user_id] = count

    async def _refresh_forever(self) -> None:
        """Keep telling the writer about long-polls still open here."""
        while True:
            await asyncio.sleep(USER_SYNC_REFRESH_S)
            now = time.monotonic()
            for user_id in list(self._syncing):
                self._announced[user_id] = now
                self.hs.bus.publish(UserSyncCommand(self.instance_name, user_id, True,
                                                    now_ms()))

    def _on_command(self, command: Command) -> None:
        if not isinstance(command, UserSyncCommand) or not self.hs.roles.is_writer("presence"):
            return
        instances = self._syncing_at.setdefault(command.user_id, {})
        if command.active:
            instances[command.instance] = time.monotonic()
        else:
            instances.pop(command.instance, None)
            if not instances:
                del self._syncing_at[command.user_id]
        self._synced_at[command.user_id] = max(self._synced_at.get(command.user_id, 0),
                                               command.last_sync_ms)

    def _is_syncing(self, user_id: str) -> bool:
        """Whether some process said recently that ``user_id`` syncs there."""
        instances = self._syncing_at.get(user_id)
        if not instances:
            return False
        now = time.monotonic()
        for instance, at in list(instances.items()):
            if now - at > USER_SYNC_EXPIRY_S:
                del instances[instance]  # not renewed: that process is gone
        if not instances:
            del self._syncing_at[user_id]
        return bool(instances)

    async def user_syncing(self, user_id: str, set_presence: str) -> None:
        if set_presence == "offline":
            return
        current = await self.get_state(user_id)
        if current is not None and current.state == "unavailable" and set_presence == "online" \
                and now_ms() - current.last_active_ts < IDLE_TIMEOUT_S * 1000 \
                and not current.currently_active:
            set_presence = "unavailable"  # an explicit "away" sticks while syncing
        await self.set_state(user_id, set_presence, keep_status=True, from_sync=True)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                await self.sweep()
            except Exception:
                logger.exception("presence sweep failed")

    async def sweep(self) -> None:
        now = now_ms()
        for state in await self.store.all_active():
            if not self.hs.is_mine(state.user_id):
                heard_at = max(state.last_user_sync_ts, self._synced_at.get(state.user_id, 0))
                if now - heard_at > REMOTE_PRESENCE_TIMEOUT_S * 1000:
                    await self._write(state.user_id, "offline", state.status_msg,
                                      state.last_active_ts, state.last_user_sync_ts, False)
                continue
            if self._is_syncing(state.user_id):
                continue
            synced_at = max(state.last_user_sync_ts, self._synced_at.get(state.user_id, 0))
            # Syncing while online counts as activity.
            active_at = max(state.last_active_ts, synced_at) if state.state == "online" \
                else state.last_active_ts
            if now - synced_at > SYNC_TIMEOUT_S * 1000:
                await self._write(state.user_id, "offline", state.status_msg,
                                  state.last_active_ts, state.last_user_sync_ts, False)
            elif state.state == "online" and now - active_at > IDLE_TIMEOUT_S * 1000:
                await self._write(state.user_id, "unavailable", state.status_msg,
                                  state.last_active_ts, state.last_user_sync_ts, False)

    async def can_see(self, viewer: str, user_id: str) -> bool:
        if viewer == user_id:
            return True
        mine = {m.room_id for m in await self.hs.stores.memberships.get_rooms_for_user(viewer)}
        theirs = {m.room_id for m in await self.hs.stores.memberships.get_rooms_for_user(user_id)}
        return bool(mine & theirs)

    @staticmethod
    def format(state: PresenceState, *, include_user: bool = False) -> dict[str, Any]:
        content: dict[str, Any] = {
            "presence": state.state,
            "last_active_ago": max(0, now_ms() - state.last_active_ts),
            "currently_active": state.currently_active,
        }
        if state.status_msg is not None:
            content["status_msg"] = state.status_msg
        if include_user:
            content["user_id"] = state.user_id
        return content

    async def presence_for(self, viewer: str, user_id: str) -> dict[str, Any]:
        """``user_id``'s presence as ``viewer`` may see it (GET presence): M_FORBIDDEN
        without a shared room, M_NOT_FOUND for an unknown user, offline if never set."""
        if not await self.can_see(viewer, user_id):
            raise forbidden("You are not allowed to see their presence")
        state = await self.get_state(user_id)
        if state is None:
            if self.hs.is_mine(user_id) and \
                    await self.hs.stores.accounts.get_user(user_id) is None:
                raise not_found("Unknown user")
            return {"presence": "offline"}
        return self.format(state)
