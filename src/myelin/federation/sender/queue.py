"""One destination's queue: transactions to one remote server, one in flight.

PDUs and EDUs wait here until the transmission loop packs them into a
transaction (at most 50 PDUs and 100 EDUs, the spec's limits) and PUTs it to
``/_matrix/federation/v1/send/{txnId}``. While a transaction is in flight
new items wait for the next one, so a destination gets our events in order
and a slow server delays nobody else.

A failure puts the destination in backoff (``retry_interval`` grows from
``destination_min_retry_interval`` by ``destination_retry_multiplier`` up to
the cap; stored, so a restart keeps it) and drops the queued PDUs: what the
destination missed is known from ``federation_destination_rooms``, and when
it is reachable again (the backoff ran out, or it called us:
:meth:`server_up`) the queue *catches up* first, sending the newest event of
each room it missed; the remote asks for the rest with get_missing_events.
EDUs stay queued across failures (bounded), durable ones in the outbox table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from myelin.storage.stores.federation_sender import OutboxEntry

if TYPE_CHECKING:
    from myelin.federation.sender import FederationSender

logger = logging.getLogger(__name__)

MAX_PDUS_PER_TXN = 50
MAX_EDUS_PER_TXN = 100
# EDUs kept for a destination that is down; beyond it the oldest go (keyed
# EDUs replace each other, so only unkeyed ones pile up).
MAX_PENDING_EDUS = 5000
SEND_TIMEOUT_S = 60.0


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class PendingPdu:
    stream_ordering: int
    pdu: dict[str, Any]


@dataclass
class Transaction:
    pdus: list[PendingPdu] = field(default_factory=list)
    edus: list[dict[str, Any]] = field(default_factory=list)
    keyed: list[tuple[tuple[str, Any], dict[str, Any]]] = field(default_factory=list)
    outbox: list[OutboxEntry] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.pdus or self.edus or self.outbox)


class TransactionRefused(Exception):
    """The remote answered our transaction with a 4xx that retrying won't change."""


class DestinationQueue:
    def __init__(self, sender: FederationSender, destination: str) -> None:
        self.sender = sender
        self.destination = destination
        self.store = sender.store
        self._pdus: list[PendingPdu] = []
        self._edus: list[dict[str, Any]] = []
        self._keyed: dict[tuple[str, Any], dict[str, Any]] = {}
        self._outbox_pending = False
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._loaded = False
        self._up_since_load = False
        self.retry_last_ts = 0
        self.retry_interval = 0
        self.last_successful: int | None = None
        self.catching_up = False
        self.transactions_sent = 0

    # -- what goes in ------------------------------------------------------
    def add_pdu(self, stream_ordering: int, pdu: dict[str, Any]) -> None:
        self._pdus.append(PendingPdu(stream_ordering, pdu))
        self._kick()

    def add_edu(self, edu_type: str, content: dict[str, Any], key: Any = None) -> None:
        edu = {"edu_type": edu_type, "content": content}
        if key is not None:
            # A newer one supersedes it (typing, presence, a user's receipt in a room).
            slot = (edu_type, _hashable(key))
            self._keyed.pop(slot, None)
            self._keyed[slot] = edu
        else:
            self._edus.append(edu)
            if len(self._edus) > MAX_PENDING_EDUS:
                del self._edus[:len(self._edus) - MAX_PENDING_EDUS]
        self._kick()

    def poke_outbox(self) -> None:
        self._outbox_pending = True
        self._kick()

    def start_catch_up(self) -> None:
        """After a restart: the tables say this destination missed events."""
        self.catching_up = True
        self._kick()

    def server_up(self) -> None:
        """The destination called us: it is up, so stop waiting to retry."""
        if self.retry_interval or self.retry_last_ts or not self._loaded:
            self.retry_interval = 0
            self.retry_last_ts = 0
            self._up_since_load = True  # a backoff loaded from the table is stale
            self.sender.spawn(self.store.set_retry(self.destination, 0, 0))
        self._outbox_pending = True
        self._wakeup.set()
        self._kick()

    @property
    def in_backoff(self) -> bool:
        return bool(self.retry_interval) and now_ms() < self.retry_last_ts + self.retry_interval

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def idle(self) -> bool:
        return self._task is None

    def _has_work(self) -> bool:
        return bool(self._pdus or self._edus or self._keyed or self._outbox_pending
                    or self.catching_up)

    def _kick(self) -> None:
        if self._task is None and self.sender.running:
            self._task = asyncio.get_running_loop().create_task(self._run())
            self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._task = None
        if not task.cancelled() and task.exception() is not None:
            logger.error("federation queue for %s failed", self.destination,
                         exc_info=task.exception())
        elif not task.cancelled() and self._has_work() and self.sender.running:
            self._kick()  # something arrived as the loop was finishing

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    # -- the transmission loop ---------------------------------------------
    async def _load(self) -> None:
        if self._loaded:
            return
        state = await self.store.get_destination(self.destination)
        if state is not None:
            if not self._up_since_load:
                self.retry_last_ts = state.retry_last_ts
                self.retry_interval = state.retry_interval
            self.last_successful = state.last_successful_stream_ordering
        self._loaded = True

    async def _run(self) -> None:
        await self._load()
        while self._has_work():
            if self.in_backoff:
                await self._wait_for_retry()
                continue
            try:
                if self.catching_up:
                    await self._catch_up()
                    continue
                txn = await self._next_transaction()
                if not txn:
                    return
                await self._send(txn)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                await self._failed(e)

    async def _wait_for_retry(self) -> None:
        delay = (self.retry_last_ts + self.retry_interval - now_ms()) / 1000
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=max(delay, 0.0))

    async def _next_transaction(self) -> Transaction:
        txn = Transaction()
        txn.pdus = self._pdus[:MAX_PDUS_PER_TXN]
        room = MAX_EDUS_PER_TXN
        if self._outbox_pending:
            txn.outbox = await self.store.get_outbox(self.destination, room)
            if len(txn.outbox) < room:
                self._outbox_pending = False
            room -= len(txn.outbox)
        for key in list(self._keyed)[:room]:
            txn.keyed.append((key, self._keyed[key]))
            txn.edus.append(self._keyed[key])
        room -= len(txn.keyed)
        txn.edus.extend(self._edus[:room])
        return txn

    async def _send(self, txn: Transaction) -> None:
        edus = [*txn.edus, *({"edu_type": e.edu_type, "content": e.content} for e in txn.outbox)]
        try:
            await self._put([p.pdu for p in txn.pdus], edus)
        except TransactionRefused as e:
            # The remote is up but will never take this one: drop it rather
            # than send it again and again.
            logger.warning("federation: %s refused a transaction: %s", self.destination, e)
        # Delivered: take exactly what went out off the queue (more may have come).
        sent_pdus = {id(p) for p in txn.pdus}
        self._pdus = [p for p in self._pdus if id(p) not in sent_pdus]
        for key, edu in txn.keyed:
            if self._keyed.get(key) is edu:  # not superseded while in flight
                del self._keyed[key]
        sent_edus = {id(e) for e in txn.edus}
        self._edus = [e for e in self._edus if id(e) not in sent_edus]
        if txn.outbox:
            await self.store.delete_from_outbox([e.outbox_id for e in txn.outbox])
        if txn.pdus:
            newest = max(p.stream_ordering for p in txn.pdus)
            await self.store.set_last_successful(self.destination, newest)
            self.last_successful = max(self.last_successful or 0, newest)
        await self._mark_up()

    async def _put(self, pdus: list[dict[str, Any]], edus: list[dict[str, Any]]) -> None:
        txn_id = self.sender.next_txn_id()
        body = {"origin": self.sender.server_name, "origin_server_ts": now_ms(),
                "pdus": pdus, "edus": edus}
        path = f"/_matrix/federation/v1/send/{urllib.parse.quote(txn_id, safe='')}"
        try:
            response = await self.sender.client().put_json(self.destination, path, body,
                                                            timeout=SEND_TIMEOUT_S)
        except Exception as e:
            code = getattr(e, "code", None)
            if isinstance(code, int) and 400 <= code < 500 and code not in (404, 408, 429):
                raise TransactionRefused(f"HTTP {code}: {e}") from e
            raise
        self.transactions_sent += 1
        self.sender.transactions_sent += 1
        results = response.get("pdus") if isinstance(response, dict) else None
        if isinstance(results, dict):
            for event_id, result in results.items():
                if isinstance(result, dict) and result.get("error"):
                    logger.info("federation: %s rejected %s: %s", self.destination, event_id,
                                result["error"])

    async def _catch_up(self) -> None:
        """Send the newest event of every room the destination missed, oldest
        room first, then go back to the live queue."""
        rooms = await self.store.rooms_to_catch_up(self.destination, self.last_successful,
                                                   MAX_PDUS_PER_TXN)
        if not rooms:
            self.catching_up = False
            # What was queued meanwhile and already went out in catch-up is not resent.
            done = self.last_successful or 0
            self._pdus = [p for p in self._pdus if p.stream_ordering > done]
            return
        pdus = await self.sender.pdus_at([ordering for _, ordering in rooms])
        try:
            await self._put(pdus, [])
        except TransactionRefused as e:
            logger.warning("federation: %s refused the catch-up: %s", self.destination, e)
        newest = rooms[-1][1]
        await self.store.set_last_successful(self.destination, newest)
        self.last_successful = max(self.last_successful or 0, newest)
        await self._mark_up()

    async def _mark_up(self) -> None:
        if self.retry_interval or self.retry_last_ts:
            self.retry_interval = 0
            self.retry_last_ts = 0
            await self.store.set_retry(self.destination, 0, 0)

    async def _failed(self, error: Exception) -> None:
        config = self.sender.retry_config
        if self.retry_interval:
            interval = int(self.retry_interval * config.retry_multiplier)
        else:
            interval = config.min_retry_interval_ms
        # A little jitter so servers that failed together do not retry together.
        interval = int(interval * random.uniform(0.9, 1.1))
        self.retry_interval = max(1, min(interval, config.max_retry_interval_ms))
        self.retry_last_ts = now_ms()
        logger.warning("federation: sending to %s failed (%s); retrying in %.1fs",
                       self.destination, error or type(error).__name__,
                       self.retry_interval / 1000)
        await self.store.set_retry(self.destination, self.retry_last_ts, self.retry_interval)
        if self._pdus:
            # Catch-up will send the newest event of each room instead.
            self._pdus = []
        self.catching_up = True
        # What the outbox held is still there: read it again on the next try.
        self._outbox_pending = True


def _hashable(key: Any) -> Any:
    if isinstance(key, list):
        return tuple(_hashable(k) for k in key)
    return key


def destinations_of(hosts: Iterable[str], me: str) -> set[str]:
    return {h for h in hosts if h and h != me}
