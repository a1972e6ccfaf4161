"""Outbound federation: every local event and EDU to the servers that need it.

``hs.federation_sender`` exists on every process; the queues run only where
``roles.runs("federation_sender")`` (the main process of a monolith, else the
``federation_sender_instances``). Destinations are sharded over those
instances by the same stable hash every process computes
(``roles.shard_index``), so each remote server is served by exactly one
queue in the fleet.

What a sender instance does:

- follows the events stream from its stored position (``federation_stream_positions``):
  every event whose sender is local goes to every other server with a member
  joined in the room at that event (the state after it), plus the target's
  server of an invite, kick or ban; the newest event per destination and room
  and the new position are stored in one transaction before the event is
  queued, so catch-up can always find what a destination missed;
- turns the typing, receipts, presence and device_lists rows of local users
  into EDUs for the servers sharing the room (or a room, for presence and
  device lists);
- drains ``federation_outbox`` (to-device messages for remote users, written
  by any process) and queues what other processes hand it over the bus
  (``FEDERATION_EDU``, ``FEDERATION_POKE``, ``REMOTE_SERVER_UP``).

Other processes never block on any of it: a client request at most writes a
row or publishes a command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from myelin.app.roles import MAIN, shard_index
from myelin.domain import server_of
from myelin.federation.sender.queue import DestinationQueue, now_ms
from myelin.replication.commands import (
    Command,
    FederationEduCommand,
    FederationPokeCommand,
    RemoteServerUpCommand,
)
from myelin.storage.caches import Cache
from myelin.storage.stores.events import StoredEvent
from myelin.storage.stream_rows import (
    DeviceListsRow,
    EventsRow,
    PresenceRow,
    ReceiptsRow,
    TypingRow,
)

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer
    from myelin.events.event import Event

logger = logging.getLogger(__name__)

# Events read from the stream per transaction of the sender.
EVENTS_BATCH = 200
OUTBOX_POLL_S = 30.0
# A process without the destination's queue looks up whether a server that
# calls us is backing off at most this often (a busy peer calls all the time).
SERVER_UP_INTERVAL_S = 1.0


class Transport(Protocol):
    """What the sender needs of ``hs.federation_client`` (fed-keys' FederationClient)."""

    async def put_json(self, destination: str, path: str, body: Any, *,
                       args: dict[str, str | list[str]] | None = None,
                       timeout: float = 60.0) -> Any: ...  # noqa: ASYNC109


class NoFederationClient(Exception):
    """This process has no federation client to send with."""


def pdu_json(event: Event) -> dict[str, Any]:
    """The event as it travels over federation: the signed PDU, no local ``unsigned``."""
    pdu = event.get_pdu_json()
    pdu.pop("unsigned", None)
    return pdu


class FederationSender:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.server_name = hs.server_name
        self.instance_name = hs.config.instance_name
        self.store = hs.stores.federation_sender
        self.retry_config = hs.config.federation_sender
        self.running = False
        # The shard list: every process computes the same one from the shared config.
        listed = [i for i in hs.config.federation_sender_instances
                  if i != MAIN or hs.config.send_federation]
        self.instances = listed or [self.instance_name if hs.roles.runs("federation_sender")
                                    else MAIN]
        self._queues: dict[str, DestinationQueue] = {}
        # Transaction ids: unique per destination across restarts, as each
        # start begins from the wall clock in ms (and they only grow).
        self._txn_base = now_ms()
        self._txn_counter = 0
        self._events_wakeup = asyncio.Event()
        self._device_lists_wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._hosts_by_group: Cache[int, frozenset[str]] = hs.caches.register(
            "federation_hosts_by_state_group", 10_000)
        self._typing: dict[str, set[str]] = {}
        self._server_up_checked: dict[str, float] = {}
        self.events_position: int | None = None
        self.transactions_sent = 0
        hs.bus.subscribe(self._on_command)

    # -- who sends what ------------------------------------------------------
    def owns(self, destination: str) -> bool:
        """Whether this process's queues serve ``destination``."""
        if not self.running or destination == self.server_name or \
                not self.hs.config.federation.allows_domain(destination):
            return False
        index = shard_index(destination, len(self.instances))
        return self.instances[index] == self.instance_name

    def client(self) -> Transport:
        client = getattr(self.hs, "federation_client", None)
        if client is None:
            raise NoFederationClient("no federation client on this process")
        return client  # type: ignore[no-any-return]

    def next_txn_id(self) -> str:
        self._txn_counter += 1
        return str(self._txn_base + self._txn_counter)

    def queue(self, destination: str) -> DestinationQueue:
        queue = self._queues.get(destination)
        if queue is None:
            queue = self._queues[destination] = DestinationQueue(self, destination)
        return queue

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("federation sender task failed", exc_info=task.exception())

    # -- the interface other modules call (any process) ------------------------
    def notify_new_events(self, writer: str, rows: Sequence[tuple[int, EventsRow]]) -> None:
        """Events became readable: wake the loop if any was sent by a local user
        (or is a join: new room-mates exchange presence)."""
        if self.running and any(self.hs.is_mine(row.sender) or row.membership == "join"
                                for _, row in rows):
            self._events_wakeup.set()

    async def send_edu(self, destination: str, edu_type: str, content: dict[str, Any],
                       key: Any = None) -> None:
        """Queue an EDU for ``destination`` on its sender, wherever that runs."""
        if destination == self.server_name:
            return
        if self.owns(destination):
            self.queue(destination).add_edu(edu_type, content, key)
        else:
            self.hs.bus.publish(FederationEduCommand(self.instance_name, destination,
                                                     edu_type, content, key))

    async def send_pdu_to(self, destinations: Iterable[str], event_id: str) -> None:
        """Send a (local) event to these servers too, e.g. an invite's target."""
        wanted = sorted({d for d in destinations if d and d != self.server_name})
        if not wanted:
            return
        mine = [d for d in wanted if self.owns(d)]
        if mine:
            await self._queue_event(mine, event_id)
        if len(mine) < len(wanted):
            self.hs.bus.publish(FederationPokeCommand(
                self.instance_name, [d for d in wanted if d not in mine], event_id))

    async def send_on_behalf_of(self, origin: str, event_id: str) -> None:
        """A remote server's event that it gave us for the room (send_join,
        send_leave, send_knock): the other servers in the room hear of it from
        us, as the joining server knows only us. Any process."""
        self.hs.bus.publish(FederationPokeCommand(self.instance_name, [], event_id, origin))

    def poke_outbox(self, destinations: Iterable[str]) -> None:
        """The outbox has new EDUs for ``destinations``: tell their senders."""
        wanted = sorted(set(destinations))
        for destination in wanted:
            if self.owns(destination):
                self.queue(destination).poke_outbox()
        if any(not self.owns(d) for d in wanted):
            self.hs.bus.publish(FederationPokeCommand(self.instance_name, wanted))

    def server_up(self, origin: str) -> None:
        """``origin`` just sent us an authenticated request: it is up, so its
        queue may stop backing off. Called by the inbound auth path; announced
        to the senders as REMOTE_SERVER_UP when the destination is backing off
        (the table says so), so a busy peer costs no bus traffic."""
        queue = self._queues.get(origin)
        if queue is not None and queue.loaded and self.owns(origin):
            # Its sender is here: the queue knows whether it is waiting.
            if queue.retry_interval or queue.retry_last_ts:
                queue.server_up()
            return
        now = time.monotonic()
        if now - self._server_up_checked.get(origin, -SERVER_UP_INTERVAL_S) < \
                SERVER_UP_INTERVAL_S:
            return
        self._server_up_checked[origin] = now
        self.spawn(self._announce_if_backing_off(origin))

    async def _announce_if_backing_off(self, origin: str) -> None:
        state = await self.store.get_destination(origin)
        if state is not None and (state.retry_interval or state.retry_last_ts):
            self.hs.bus.publish(RemoteServerUpCommand(origin, self.instance_name))

    async def reset_connection(self, destination: str) -> None:
        """The admin API's reset: forget the backoff and retry now (any process)."""
        await self.store.set_retry(destination, 0, 0)
        self.hs.bus.publish(RemoteServerUpCommand(destination, self.instance_name))

    def _on_command(self, command: Command) -> None:
        if not self.running:
            return
        if isinstance(command, FederationEduCommand):
            if self.owns(command.destination):
                self.queue(command.destination).add_edu(command.edu_type, command.content,
                                                        command.key)
        elif isinstance(command, FederationPokeCommand):
            if command.on_behalf_of is not None and command.event_id is not None:
                self.spawn(self._relay(command.on_behalf_of, command.event_id))
                return
            mine = [d for d in command.destinations if self.owns(d)]
            if not mine:
                return
            if command.event_id is not None:
                self.spawn(self._queue_event(mine, command.event_id))
            else:
                for destination in mine:
                    self.queue(destination).poke_outbox()
        elif isinstance(command, RemoteServerUpCommand):
            queue = self._queues.get(command.server)
            if queue is not None and self.owns(command.server):
                queue.server_up()
            elif self.owns(command.server):
                # Not loaded here yet: its stored backoff may still say "wait".
                self.spawn(self.store.set_retry(command.server, 0, 0))

    # -- lifecycle -------------------------------------------------------------
    def follow(self) -> None:
        """Register for the streams (before the follower starts)."""
        if not self.hs.roles.runs("federation_sender"):
            return
        follow = self.hs.follower
        follow.on_visible("events", self.notify_new_events)
        follow.on_rows("typing", self._on_typing_rows)
        follow.on_visible("receipts", self._on_receipts_rows)
        follow.on_visible("presence", self._on_presence_rows)
        follow.on_visible("device_lists", self._on_device_lists_rows)

    async def start(self) -> None:
        if not self.hs.roles.runs("federation_sender"):
            return
        self.running = True
        for destination in await self.store.destinations_behind():
            if self.owns(destination):
                self.queue(destination).start_catch_up()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._events_loop()),
                       loop.create_task(self._device_lists_loop()),
                       loop.create_task(self._outbox_loop())]

    async def stop(self) -> None:
        self.running = False
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        for queue in list(self._queues.values()):
            await queue.stop()
        for task in list(self._background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- the events stream -----------------------------------------------------
    async def _events_loop(self) -> None:
        while True:
            try:
                if self.events_position is None:
                    stored = await self.store.get_position(self.instance_name, "events")
                    if stored is None:
                        # First start: history before now is not ours to send.
                        stored = self.hs.streams.view.position("events")
                        await self.store.set_position(self.instance_name, "events", stored)
                    self.events_position = stored
                self._events_wakeup.clear()
                upto = self.hs.streams.view.position("events")
                while self.events_position < upto:
                    self.events_position = await self._process_events(self.events_position,
                                                                      upto)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("federation sender: reading the events stream failed")
                await asyncio.sleep(1.0)
                continue
            await self._events_wakeup.wait()

    async def _process_events(self, after: int, upto: int) -> int:
        rows = await self.hs.db.fetchall(
            "SELECT stream_ordering, event_id, sender FROM events WHERE stream_ordering > ?"
            " AND stream_ordering <= ? AND outlier = 0 ORDER BY stream_ordering LIMIT ?",
            after, upto, EVENTS_BATCH)
        reached = upto if len(rows) < EVENTS_BATCH else int(rows[-1][0])
        local = [r[1] for r in rows if self.hs.is_mine(r[2])]
        stored = await self.hs.stores.events.get_events(local) if local else {}
        joins = await self.hs.db.fetchall(
            "SELECT room_id, state_key FROM events WHERE stream_ordering > ?"
            " AND stream_ordering <= ? AND outlier = 0 AND type = 'm.room.member'"
            " AND membership = 'join'", after, reached)
        for room_id, state_key in joins:
            self.spawn(self._presence_on_join(room_id, state_key))
        plan: list[tuple[str, StoredEvent]] = []
        for _, event_id, _ in rows:
            event = stored.get(event_id)
            if event is None:
                continue
            for destination in sorted(await self.destinations_for(event)):
                if self.owns(destination):
                    plan.append((destination, event))
        await self.store.record_queued(
            self.instance_name, reached,
            [(d, e.event.room_id, e.stream_ordering) for d, e in plan])
        for destination, event in plan:
            self.queue(destination).add_pdu(event.stream_ordering, pdu_json(event.event))
        return reached

    async def _queue_event(self, destinations: Sequence[str], event_id: str) -> None:
        event = await self.hs.stores.events.get_event(event_id)
        if event is None:
            logger.warning("federation sender: asked to send unknown event %s", event_id)
            return
        # Recorded like a stream event, so a failure's catch-up sends it too
        # (the position stays where the events loop has it).
        await self.store.record_queued(
            self.instance_name, None,
            [(d, event.event.room_id, event.stream_ordering) for d in destinations])
        for destination in destinations:
            self.queue(destination).add_pdu(event.stream_ordering, pdu_json(event.event))

    async def _relay(self, origin: str, event_id: str) -> None:
        event = await self.hs.stores.events.get_event(event_id)
        if event is None:
            logger.warning("federation sender: asked to relay unknown event %s", event_id)
            return
        hosts = await self.destinations_for(event)
        hosts.discard(origin)
        mine = sorted(d for d in hosts if self.owns(d))
        if mine:
            await self._queue_event(mine, event_id)

    async def destinations_for(self, stored: StoredEvent) -> set[str]:
        """The servers an event goes to: those with a member joined in the room
        before it (so a kicked or banned server hears of it) or after it, and
        the target's server of a leave that rescinds an invite. An invite itself
        reaches the invitee's server by PUT /invite, not here."""
        event = stored.event
        hosts = set(await self.joined_hosts_after(stored))
        if event.type == "m.room.member" and event.state_key and \
                event.membership in ("leave", "ban"):
            prior_id = event.unsigned.get("replaces_state")
            prior = await self.hs.stores.events.get_event(prior_id) \
                if isinstance(prior_id, str) else None
            if prior is not None and prior.event.membership in ("join", "invite", "knock"):
                hosts.add(server_of(event.state_key))
        hosts.discard(self.server_name)
        hosts.discard("")
        return hosts

    async def joined_hosts_after(self, stored: StoredEvent) -> frozenset[str]:
        group = stored.state_group
        if group is None:
            return await self.room_hosts(stored.event.room_id)
        cached: frozenset[str] | None = self._hosts_by_group.get(group)
        if cached is not None:
            return cached
        state = await self.hs.stores.state.get_state_for_group(group)
        member_ids = [event_id for (etype, _), event_id in state.items()
                      if etype == "m.room.member"]
        members = await self.hs.stores.events.get_events(member_ids)
        hosts = frozenset(server_of(m.event.state_key or "") for m in members.values()
                          if m.event.membership == "join")
        self._hosts_by_group.put(group, hosts)
        return hosts

    async def room_hosts(self, room_id: str) -> frozenset[str]:
        """The servers with a member joined in the room now."""
        members = await self.hs.stores.memberships.get_members(room_id)
        return frozenset(server_of(m.user_id) for m in members)

    async def hosts_sharing_rooms(self, user_id: str) -> set[str]:
        hosts: set[str] = set()
        for membership in await self.hs.stores.memberships.get_rooms_for_user(user_id):
            hosts |= await self.room_hosts(membership.room_id)
        hosts.discard(self.server_name)
        return hosts

    async def pdus_at(self, orderings: Sequence[int]) -> list[dict[str, Any]]:
        """The PDUs of the events at these stream orderings, in that order."""
        if not orderings:
            return []
        marks = ",".join("?" * len(orderings))
        rows = await self.hs.db.fetchall(
            f"SELECT stream_ordering, event_id FROM events WHERE stream_ordering IN ({marks})",
            *orderings)
        by_ordering = {int(r[0]): r[1] for r in rows}
        events = await self.hs.stores.events.get_events(by_ordering.values())
        return [pdu_json(events[by_ordering[o]].event) for o in orderings
                if o in by_ordering and by_ordering[o] in events]

    # -- the outbox --------------------------------------------------------------
    async def _outbox_loop(self) -> None:
        """Pick up outbox rows whose poke was lost (a restart, a Redis blip)."""
        while True:
            try:
                for destination in await self.store.outbox_destinations():
                    if self.owns(destination):
                        self.queue(destination).poke_outbox()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("federation sender: reading the outbox failed")
            await asyncio.sleep(OUTBOX_POLL_S)

    # -- EDUs from the streams -----------------------------------------------------
    def _queue_edu(self, hosts: Iterable[str], edu_type: str, content: dict[str, Any],
                   key: Any = None) -> None:
        for host in hosts:
            if self.owns(host):
                self.queue(host).add_edu(edu_type, content, key)

    def _on_typing_rows(self, writer: str, rows: Sequence[tuple[int, TypingRow]]) -> None:
        if not self.running:
            return
        for _, row in rows:
            now = {u for u in row.user_ids if self.hs.is_mine(u)}
            before = self._typing.get(row.room_id, set())
            if now:
                self._typing[row.room_id] = now
            else:
                self._typing.pop(row.room_id, None)
            changed = {u: u in now for u in now ^ before}
            if changed:
                self.spawn(self._send_typing(row.room_id, changed))

    async def _send_typing(self, room_id: str, changed: dict[str, bool]) -> None:
        hosts = await self.room_hosts(room_id)
        for user_id, typing in sorted(changed.items()):
            self._queue_edu(hosts, "m.typing",
                            {"room_id": room_id, "user_id": user_id, "typing": typing},
                            key=[room_id, user_id])

    def _on_receipts_rows(self, writer: str, rows: Sequence[tuple[int, ReceiptsRow]]) -> None:
        if not self.running:
            return
        for _, row in rows:
            if row.receipt_type == "m.read" and self.hs.is_mine(row.user_id):
                self.spawn(self._send_receipt(row))

    async def _send_receipt(self, row: ReceiptsRow) -> None:
        raw = await self.hs.db.fetchval(
            "SELECT data FROM receipts WHERE room_id = ? AND receipt_type = ? AND user_id = ?"
            " AND thread_id = ?", row.room_id, row.receipt_type, row.user_id, row.thread_id)
        data = orjson.loads(raw) if raw else {}
        content = {row.room_id: {row.receipt_type: {row.user_id: {
            "event_ids": [row.event_id], "data": data}}}}
        self._queue_edu(await self.room_hosts(row.room_id), "m.receipt", content,
                        key=[row.room_id, row.receipt_type, row.user_id, row.thread_id])

    def _on_presence_rows(self, writer: str, rows: Sequence[tuple[int, PresenceRow]]) -> None:
        if not self.running:
            return
        for user_id in {row.user_id for _, row in rows if self.hs.is_mine(row.user_id)}:
            self.spawn(self._send_presence(user_id))

    async def _send_presence(self, user_id: str) -> None:
        state = (await self.hs.stores.presence.get([user_id])).get(user_id)
        if state is None:
            return
        update = self.hs.presence.format(state, include_user=True)
        self._queue_edu(await self.hosts_sharing_rooms(user_id), "m.presence",
                        {"push": [update]}, key=user_id)

    async def _presence_on_join(self, room_id: str, user_id: str) -> None:
        """Someone joined: a remote joiner's server learns the presence of the
        room's local members, and a local joiner's presence goes to the room's
        other servers — so new room-mates see each other at once."""
        if not self.hs.is_mine(user_id):
            host = server_of(user_id)
            if not self.owns(host):
                return
            members = await self.hs.stores.memberships.get_members(room_id)
            local = [m.user_id for m in members if self.hs.is_mine(m.user_id)]
            states = await self.hs.stores.presence.get(local)
            updates = [self.hs.presence.format(states[u], include_user=True)
                       for u in local if u in states]
            for update in updates:
                self._queue_edu([host], "m.presence", {"push": [update]},
                                key=update["user_id"])
            return
        state = (await self.hs.stores.presence.get([user_id])).get(user_id)
        if state is None:
            return
        hosts = set(await self.room_hosts(room_id))
        hosts.discard(self.server_name)
        self._queue_edu(hosts, "m.presence",
                        {"push": [self.hs.presence.format(state, include_user=True)]},
                        key=user_id)

    def _on_device_lists_rows(self, writer: str,
                              rows: Sequence[tuple[int, DeviceListsRow]]) -> None:
        if self.running and any(self.hs.is_mine(row.user_id) for _, row in rows):
            self._device_lists_wakeup.set()

    async def _device_lists_loop(self) -> None:
        """Local users' device list changes, in stream order, into the outbox:
        an update must reach a server that is down, or survive our restart, and
        its ``prev_id`` chain must arrive in order. The outbox rows and the
        position are written in one transaction."""
        position: int | None = None
        while True:
            try:
                if position is None:
                    position = await self.store.get_position(self.instance_name,
                                                             "device_lists")
                    if position is None:
                        position = self.hs.streams.view.position("device_lists")
                        await self.store.set_position(self.instance_name, "device_lists",
                                                      position)
                self._device_lists_wakeup.clear()
                upto = self.hs.streams.view.position("device_lists")
                while position < upto:
                    position = await self._process_device_lists(position, upto)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("federation sender: reading the device_lists stream failed")
                await asyncio.sleep(1.0)
                continue
            await self._device_lists_wakeup.wait()

    async def _process_device_lists(self, after: int, upto: int) -> int:
        rows = await self.hs.db.fetchall(
            "SELECT stream_id, user_id, device_id FROM device_lists_stream WHERE stream_id > ?"
            " AND stream_id <= ? ORDER BY stream_id LIMIT ?", after, upto, EVENTS_BATCH)
        reached = upto if len(rows) < EVENTS_BATCH else int(rows[-1][0])
        entries: list[tuple[str, str, dict[str, Any]]] = []
        for stream_id, user_id, device_id in rows:
            if self.hs.is_mine(user_id):
                entries.extend(await self._device_update(int(stream_id),
                                                         DeviceListsRow(user_id, device_id)))
        await self.store.add_to_outbox(entries, position=(self.instance_name, "device_lists",
                                                          reached))
        for destination in sorted({d for d, _, _ in entries}):
            self.queue(destination).poke_outbox()
        return reached

    async def _device_update(self, stream_id: int, row: DeviceListsRow,
                             ) -> list[tuple[str, str, dict[str, Any]]]:
        """The outbox entries (destination, EDU type, content) for one change."""
        hosts = sorted(h for h in await self.hosts_sharing_rooms(row.user_id) if self.owns(h))
        if not hosts:
            return []
        e2e = self.hs.stores.e2e_keys
        cross = await e2e.get_cross_signing_keys(row.user_id)
        cross_ids = {key_id.partition(":")[2] for key in cross.values()
                     for key_id in (key.get("keys") or {})}
        if row.device_id == "" or row.device_id in cross_ids:
            content: dict[str, Any] = {"user_id": row.user_id}
            if "master" in cross:
                content["master_key"] = cross["master"]
            if "self_signing" in cross:
                content["self_signing_key"] = cross["self_signing"]
            return [(h, "m.signing_key_update", content) for h in hosts]
        prev = await self.hs.db.fetchval(
            "SELECT MAX(stream_id) FROM device_lists_stream WHERE user_id = ?"
            " AND stream_id < ?", row.user_id, stream_id)
        device = await self.hs.stores.accounts.get_device(row.user_id, row.device_id)
        content = {"user_id": row.user_id, "device_id": row.device_id, "stream_id": stream_id,
                   "prev_id": [int(prev)] if prev is not None else [],
                   "deleted": device is None}
        if device is not None:
            keys = await self.hs.e2e_keys.signed_device_keys(row.user_id, row.device_id)
            if keys:
                content["keys"] = keys
            if device.display_name is not None:
                content["device_display_name"] = device.display_name
        return [(h, "m.device_list_update", content) for h in hosts]
