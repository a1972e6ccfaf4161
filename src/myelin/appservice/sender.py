"""The ``appservice`` job: transactions to every registered service.

It runs on the instance ``notify_appservices_from_worker`` names (main by
default). One task per service with a ``url`` follows the events stream
from the service's stored position, up to the stream's readable position
(below it every event is committed), and picks the events the service is
interested in: sent by or about a user of its namespace (or its sender), in
a room of its room namespace, a room with an alias of its alias namespace,
or a room one of its users is joined to. They go out in stream order, at
most ``MAX_EVENTS`` per transaction, one transaction in flight per service.

The transaction is stored (``appservice_txns``) before it is sent; it is
retried with exponential backoff until the service answers 2xx, and its
acknowledgement deletes it and moves the position in one database
transaction. After a restart the stored transaction is resent as it was,
under its id (services deduplicate by id), and the stream is read on from
the stored position: nothing is sent twice, nothing skipped.

Ephemeral data (typing, receipts, presence) goes to services that asked for
it (``receive_ephemeral`` → ``ephemeral``; MSC2409's unstable flag →
``de.sorunome.msc2409.ephemeral``), with to-device messages for their users
under ``de.sorunome.msc2409.to_device`` as Synapse sends them. It is queued
in memory as the streams' rows arrive (the newest ``MAX_QUEUED_EPHEMERAL``
while a service is down) and joins the next transaction, from then on as
durable as the transaction; what is still queued at a restart is lost, as
ephemeral data may be.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from myelin.appservice.registration import AppService
from myelin.storage.stores.accounts import now_ms
from myelin.storage.stores.appservices import PendingTxn
from myelin.storage.stream_rows import PresenceRow, ReceiptsRow, ToDeviceRow, TypingRow

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)

MAX_EVENTS = 100
MAX_EPHEMERAL = 100
MAX_QUEUED_EPHEMERAL = 10_000
SCAN_BATCH = 500
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0


class AppServiceSender:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.handler = hs.appservices
        self.store = hs.stores.appservices
        self.services = [s for s in self.handler.services if s.url is not None]
        self._wakeups = {s.id: asyncio.Event() for s in self.services}
        self._ephemeral: dict[str, list[dict[str, Any]]] = {s.id: [] for s in self.services}
        self._to_device: dict[str, list[dict[str, Any]]] = {s.id: [] for s in self.services}
        # Stream rows become ephemeral events in arrival order, on one task.
        self._incoming: asyncio.Queue[tuple[str, int, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------
    def follow(self) -> None:
        """Hear of new rows (call before the follower starts)."""
        if not self.services:
            return
        follower = self.hs.follower
        follower.on_visible("events", lambda _w, _rows: self._wake_all())
        if any(s.wants_ephemeral for s in self.services):
            for stream in ("typing", "receipts", "presence", "to_device"):
                follower.on_visible(stream, self._queue_rows(stream))

    def _queue_rows(self, stream: str) -> Any:
        def handle(_writer: str, rows: Sequence[tuple[int, Any]]) -> None:
            for position, row in rows:
                self._incoming.put_nowait((stream, position, row))
        return handle

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for service in self.services:
            self._tasks.append(loop.create_task(self._run(service)))
        if any(s.wants_ephemeral for s in self.services):
            self._tasks.append(loop.create_task(self._ephemeral_loop()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()

    def _wake_all(self) -> None:
        for event in self._wakeups.values():
            event.set()

    # -- one service -------------------------------------------------------------
    async def _run(self, service: AppService) -> None:
        wakeup = self._wakeups[service.id]
        backoff = FIRST_BACKOFF_S
        state: tuple[int, int] | None = None
        while True:
            try:
                if state is None:
                    state = await self.store.get_state(service.id)
                if state is None:
                    # A new service hears of what happens from now on.
                    await self.store.init_state(service.id,
                                                self.hs.streams.view.position("events"))
                    state = await self.store.get_state(service.id)
                    continue
                wakeup.clear()
                pending = await self.store.get_pending(service.id)
                if pending is None:
                    pending, reached = await self._next_txn(service, *state)
                    if pending is None:
                        if reached != state[0]:
                            await self.store.set_position(service.id, reached)
                            state = (reached, state[1])
                        await wakeup.wait()
                        continue
                if not await self.handler.api.push(service, pending.txn_id,
                                                   pending.body.encode()):
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    continue
                backoff = FIRST_BACKOFF_S
                await self.store.complete(service.id, pending)
                state = (pending.events_position, pending.txn_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("appservice %s: sending failed; retrying", service.id)
                state = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _next_txn(self, service: AppService, position: int,
                        last_txn: int) -> tuple[PendingTxn | None, int]:
        """The next transaction (stored, not yet sent) and how far it reaches;
        None when there is nothing to send up to that position."""
        upto = self.hs.streams.view.position("events")
        event_ids: list[str] = []
        reached = position
        while reached < upto and len(event_ids) < MAX_EVENTS:
            rows = await self.hs.db.fetchall(
                "SELECT stream_ordering, event_id, room_id, type, state_key, sender FROM events"
                " WHERE stream_ordering > ? AND stream_ordering <= ?"
                " ORDER BY stream_ordering LIMIT ?", reached, upto, SCAN_BATCH)
            for ordering, event_id, room_id, etype, state_key, sender in rows:
                if await self.interested_in_event(service, room_id, etype, state_key, sender):
                    event_ids.append(str(event_id))
                reached = int(ordering)
                if len(event_ids) >= MAX_EVENTS:
                    break
            if len(rows) < SCAN_BATCH and len(event_ids) < MAX_EVENTS:
                reached = upto
        ephemeral = self._ephemeral[service.id][:MAX_EPHEMERAL]
        del self._ephemeral[service.id][:MAX_EPHEMERAL]
        to_device = self._to_device[service.id][:MAX_EPHEMERAL]
        del self._to_device[service.id][:MAX_EPHEMERAL]
        if not event_ids and not ephemeral and not to_device:
            return None, reached
        stored = await self.hs.stores.events.get_events(event_ids)
        events = await self.hs.serializer.serialize(
            [stored[e] for e in event_ids if e in stored])
        body: dict[str, Any] = {"events": events}
        if service.receive_ephemeral:
            body["ephemeral"] = ephemeral
        if service.unstable_ephemeral:
            body["de.sorunome.msc2409.ephemeral"] = ephemeral
        if service.wants_ephemeral:
            body["de.sorunome.msc2409.to_device"] = to_device
        pending = PendingTxn(last_txn + 1, reached, orjson.dumps(body).decode())
        await self.store.add_pending(service.id, pending.txn_id, pending.events_position,
                                     pending.body)
        if self._ephemeral[service.id] or self._to_device[service.id]:
            self._wakeups[service.id].set()  # more queued than one transaction holds
        return pending, reached

    # -- interest ------------------------------------------------------------
    async def interested_in_event(self, service: AppService, room_id: str, etype: str,
                                  state_key: str | None, sender: str) -> bool:
        if service.is_interested_in_user(sender):
            return True
        if etype == "m.room.member" and state_key and service.is_interested_in_user(state_key):
            return True
        return await self.interested_in_room(service, room_id)

    async def interested_in_room(self, service: AppService, room_id: str) -> bool:
        if service.is_interested_in_room(room_id):
            return True
        if service.aliases:
            aliases = await self.hs.stores.rooms.get_aliases_for_room(room_id)
            canonical = await self.hs.stores.state.get_current_state_event(
                room_id, "m.room.canonical_alias")
            if canonical is not None and isinstance(canonical.content.get("alias"), str):
                aliases = [*aliases, canonical.content["alias"]]
            if any(service.is_interested_in_alias(a) for a in aliases):
                return True
        if service.users:
            members = await self.hs.stores.memberships.get_members(room_id)
            if any(service.is_interested_in_user(m.user_id) for m in members):
                return True
        return False

    # -- ephemeral -------------------------------------------------------------
    async def _ephemeral_loop(self) -> None:
        while True:
            stream, position, row = await self._incoming.get()
            try:
                await self._ephemeral_row(stream, position, row)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("appservice: could not queue a %s row", stream)

    async def _ephemeral_row(self, stream: str, position: int, row: Any) -> None:
        for service in self.services:
            if not service.wants_ephemeral:
                continue
            item: dict[str, Any] | None = None
            if isinstance(row, TypingRow):
                if await self.interested_in_room(service, row.room_id):
                    item = {"type": "m.typing", "room_id": row.room_id,
                            "content": {"user_ids": list(row.user_ids)}}
            elif isinstance(row, ReceiptsRow):
                item = await self._receipt(service, position, row)
            elif isinstance(row, PresenceRow):
                item = await self._presence(service, row)
            elif isinstance(row, ToDeviceRow):
                if service.is_exclusive_user(row.user_id):
                    self._to_device[service.id].extend(
                        await self._to_device_messages(position, row))
                    self._wakeups[service.id].set()
                continue
            if item is not None:
                queued = self._ephemeral[service.id]
                queued.append(item)
                if len(queued) > MAX_QUEUED_EPHEMERAL:
                    # A service down for long: old typing/receipt/presence
                    # updates are stale anyway; keep memory bounded.
                    del queued[:len(queued) - MAX_QUEUED_EPHEMERAL]
                self._wakeups[service.id].set()

    async def _receipt(self, service: AppService, position: int,
                       row: ReceiptsRow) -> dict[str, Any] | None:
        if row.receipt_type == "m.read.private" and not service.is_interested_in_user(
                row.user_id):
            return None
        if not await self.interested_in_room(service, row.room_id):
            return None
        found = [r for r in await self.hs.stores.receipts.get_for_rooms(
                 [row.room_id], position - 1, position)
                 if r.user_id == row.user_id and r.receipt_type == row.receipt_type]
        data: dict[str, Any] = dict(found[0].data) if found else {"ts": now_ms()}
        if row.thread_id and row.thread_id != "main" and "thread_id" not in data:
            data["thread_id"] = row.thread_id
        return {"type": "m.receipt", "room_id": row.room_id,
                "content": {row.event_id: {row.receipt_type: {row.user_id: data}}}}

    async def _presence(self, service: AppService, row: PresenceRow) -> dict[str, Any] | None:
        interested = service.is_interested_in_user(row.user_id)
        if not interested:
            for membership in await self.hs.stores.memberships.get_rooms_for_user(row.user_id):
                if await self.interested_in_room(service, membership.room_id):
                    interested = True
                    break
        if not interested:
            return None
        state = await self.hs.presence.get_state(row.user_id)
        if state is None:
            return None
        return {"type": "m.presence", "sender": row.user_id,
                "content": self.hs.presence.format(state)}

    async def _to_device_messages(self, position: int,
                                  row: ToDeviceRow) -> list[dict[str, Any]]:
        """The device's messages of this position, as MSC2409 spells them."""
        messages, _ = await self.hs.stores.to_device.get_messages(
            row.user_id, row.device_id, position - 1, position, 1000)
        return [{"type": m["type"], "sender": m["sender"], "content": m["content"],
                 "to_user_id": row.user_id, "to_device_id": row.device_id}
                for m in messages]
