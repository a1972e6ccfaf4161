"""The pusher pool: runs the pushers of the users this instance pushes for.

Instances with the ``pusher`` job run it (``pusher_instances``, or main when
that list is empty). Users are sharded over ``pusher_instances`` by the same
stable hash as stream writers (``roles.shard_index``), so each user's
pushers run on exactly one instance.

Each pusher is a :class:`PusherWorker` with its own task, woken when there
is news for its user: the pool follows the events stream and, for each
readable range, asks which users got push actions in it; read receipts wake
the reader's pushers for a badge update. New, changed and deleted pushers
are announced as ``pushers`` rows on the caches stream (``handlers/pushers.py``);
the pool reloads that user's pushers when one arrives. A worker also
re-reads its row before each round, so a pusher deleted without an
announcement (a device logged out) stops at its next notification.

Delivery runs in these tasks, never in the write path: event persistence
only writes ``event_push_actions`` rows (the push actions indexer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from myelin.app.roles import MAIN, shard_index

if TYPE_CHECKING:
    import aiohttp

    from myelin.app.homeserver import HomeServer
    from myelin.events.event import Event
    from myelin.federation.client import IpFilter
    from myelin.storage.stores.push import Pusher
    from myelin.storage.stream_rows import EventsRow, ReceiptsRow

logger = logging.getLogger(__name__)

READ_RECEIPTS = ("m.read", "m.read.private")

PusherKey = tuple[str, str, str]  # (user_id, app_id, pushkey)


class PusherGone(Exception):
    """The pusher was deleted (or rejected by its gateway): stop its worker."""


class PusherWorker:
    """One pusher's loop; subclasses say what a round does (``process``)."""

    def __init__(self, pool: PusherPool, pusher: Pusher) -> None:
        self.pool = pool
        self.hs = pool.hs
        self.pusher = pusher
        self.badge_wanted = False
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def key(self) -> PusherKey:
        return (self.pusher.user_id, self.pusher.app_id, self.pusher.pushkey)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._wakeup.set()

    def wake(self, badge: bool = False) -> None:
        self.badge_wanted = self.badge_wanted or badge
        self._wakeup.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    async def reload(self) -> None:
        """The stored row (position, data); PusherGone when it was deleted."""
        current = await self.hs.stores.pushers.get_pusher(*self.key)
        if current is None or current.kind != self.pusher.kind:
            raise PusherGone()
        self.pusher = current

    async def advance(self, position: int) -> None:
        if not await self.hs.stores.pushers.advance(*self.key, position):
            raise PusherGone()
        self.pusher = _replace_position(self.pusher, position)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self.reload()
                await self.process()
            except asyncio.CancelledError:
                raise
            except PusherGone:
                self.pool.forget(self)
                return
            except Exception:
                logger.exception("pusher %s/%s failed; trying again shortly",
                                 self.pusher.user_id, self.pusher.app_id)
                await asyncio.sleep(5.0)
                self._wakeup.set()

    async def process(self) -> None:
        raise NotImplementedError


def _replace_position(pusher: Pusher, position: int) -> Pusher:
    from dataclasses import replace

    return replace(pusher, last_stream_ordering=position)


class PusherPool:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        config = hs.config
        self.instances = list(config.pusher_instances) or [MAIN]
        self.me = config.instance_name
        self.workers: dict[PusherKey, PusherWorker] = {}
        self._http: aiohttp.ClientSession | None = None
        self._ip_filter: IpFilter | None = None
        self._scanned: int | None = None
        self._events_wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reloads: set[asyncio.Task[None]] = set()

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            from myelin.push.http import make_session

            self._http = make_session(self.ip_filter, self.hs.config.push.insecure_tls)
        return self._http

    @property
    def ip_filter(self) -> IpFilter:
        if self._ip_filter is None:
            from myelin.federation.client import IpFilter

            config = self.hs.config.federation
            self._ip_filter = IpFilter(config.ip_range_blocklist, config.ip_range_whitelist)
        return self._ip_filter

    def is_mine(self, user_id: str) -> bool:
        return self.instances[shard_index(user_id, len(self.instances))] == self.me

    # -- lifecycle -------------------------------------------------------------
    def follow(self) -> None:
        """Hear of events, receipts and pusher changes (before the follower starts)."""
        self.hs.follower.on_visible("events", self._on_events_rows)
        self.hs.follower.on_visible("receipts", self._on_receipts_rows)
        self.hs.caches.register_invalidator("pushers", self._on_pushers_changed)

    async def start(self) -> None:
        self._scanned = self.hs.streams.view.position("events")
        for pusher in await self.hs.stores.pushers.all_pushers(self.kinds()):
            if self.is_mine(pusher.user_id):
                self._start_worker(pusher)
        logger.info("pusher pool: %d pushers", len(self.workers))
        self._task = asyncio.get_running_loop().create_task(self._scan_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        for task in list(self._reloads):
            task.cancel()
        for worker in list(self.workers.values()):
            await worker.stop()
        self.workers.clear()
        if self._http is not None:
            await self._http.close()

    def kinds(self) -> list[str]:
        kinds = ["http"]
        email = self.hs.config.email
        if email is not None and email.enable_notifs:
            kinds.append("email")
        return kinds

    def _start_worker(self, pusher: Pusher) -> None:
        worker: PusherWorker
        if pusher.kind == "http":
            from myelin.push.http import HttpPusher

            worker = HttpPusher(self, pusher)
        elif pusher.kind == "email":
            from myelin.push.mailer import EmailPusher

            worker = EmailPusher(self, pusher)
        else:
            return
        self.workers[worker.key] = worker
        worker.start()

    def forget(self, worker: PusherWorker) -> None:
        if self.workers.get(worker.key) is worker:
            del self.workers[worker.key]

    async def remove(self, pusher: Pusher) -> None:
        """Delete a pusher (rejected pushkey, unsubscribe) and announce it."""
        await self.hs.stores.pushers.delete_pusher(pusher.user_id, pusher.app_id,
                                                   pusher.pushkey)
        await self.hs.invalidate_cache("pushers", [pusher.user_id])

    # -- waking ------------------------------------------------------------------
    def _on_events_rows(self, writer: str, rows: Sequence[tuple[int, EventsRow]]) -> None:
        self._events_wakeup.set()

    def _on_receipts_rows(self, writer: str, rows: Sequence[tuple[int, ReceiptsRow]]) -> None:
        for _, row in rows:
            if row.receipt_type in READ_RECEIPTS:
                self._wake_user(row.user_id, badge=True)

    def _wake_user(self, user_id: str, badge: bool = False) -> None:
        for key, worker in list(self.workers.items()):
            if key[0] == user_id:
                worker.wake(badge)

    async def _scan_forever(self) -> None:
        while True:
            await self._events_wakeup.wait()
            self._events_wakeup.clear()
            try:
                upto = self.hs.streams.view.position("events")
                assert self._scanned is not None
                if upto <= self._scanned:
                    continue
                users = await self.hs.stores.push_actions.users_with_actions(self._scanned,
                                                                             upto)
                self._scanned = upto
                for user_id in users:
                    self._wake_user(user_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("pusher pool: scanning new push actions failed")
                await asyncio.sleep(1.0)
                self._events_wakeup.set()

    def _on_pushers_changed(self, keys: list[Any] | None) -> None:
        task = asyncio.get_running_loop().create_task(self._reload_users(keys))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload_users(self, keys: list[Any] | None) -> None:
        try:
            users = [k for k in keys or [] if isinstance(k, str) and self.is_mine(k)]
            for user_id in users:
                kinds = self.kinds()
                stored = {(p.user_id, p.app_id, p.pushkey): p
                          for p in await self.hs.stores.pushers.get_pushers(user_id)
                          if p.kind in kinds}
                for key in [k for k in self.workers if k[0] == user_id and k not in stored]:
                    await self.workers.pop(key).stop()
                for key, pusher in stored.items():
                    worker = self.workers.get(key)
                    if worker is not None and worker.pusher.kind != pusher.kind:
                        await self.workers.pop(key).stop()
                        worker = None
                    if worker is None:
                        self._start_worker(pusher)
                    else:
                        worker.wake()
        except Exception:
            logger.exception("pusher pool: reloading pushers failed")

    # -- what notifications say ----------------------------------------------------
    async def badge_count(self, user_id: str) -> int:
        """The unread count a badge shows: rooms with unread notifications
        (``push.group_unread_count_by_room``, the default) or the
        notifications themselves, plus rooms the user is invited to."""
        memberships = self.hs.stores.memberships
        joined = await memberships.get_rooms_for_user(user_id)
        invited = await memberships.get_rooms_for_user(user_id, ("invite",))
        upto = self.hs.streams.view.position("events")
        unread = await self.hs.push_actions.unread_counts(
            user_id, {m.room_id: (0, upto) for m in joined})
        by_room = self.hs.config.push.group_unread_count_by_room
        badge = len(invited)
        for room in unread.values():
            count = room.main.notification_count + sum(
                t.notification_count for t in room.threads.values())
            badge += (1 if count else 0) if by_room else count
        return badge

    async def room_labels(self, event: Event) -> tuple[str | None, str | None, str | None]:
        """(room name, canonical alias, the sender's display name) now."""
        state = self.hs.stores.state
        name_event = await state.get_current_state_event(event.room_id, "m.room.name")
        alias_event = await state.get_current_state_event(event.room_id,
                                                          "m.room.canonical_alias")
        member = await state.get_current_state_event(event.room_id, "m.room.member",
                                                     event.sender)
        name = name_event.content.get("name") if name_event else None
        alias = alias_event.content.get("alias") if alias_event else None
        display = member.content.get("displayname") if member else None
        return (name if isinstance(name, str) and name else None,
                alias if isinstance(alias, str) and alias else None,
                display if isinstance(display, str) and display else None)
