"""Following every stream: apply the rows other processes (and this one) wrote.

Every process, writers included, learns of stream rows only here, from the
bus: RDATA carries rows, POSITION only a new position. For each row the
*row handlers* run at once (cache invalidation), and the *visible handlers*
(waking long-polls) run once the stream's readable position — the minimum
over its writers — has passed the row, so a woken ``/sync`` can see it.

A command whose ``prev_token`` is ahead of what we have from that writer
means we missed rows (a restart, a Redis blip): they are fetched from the
database with the stream's ``updates_since`` before anything newer is
applied, so handlers see every row exactly once and in order per writer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from myelin.replication.bus import Bus
from myelin.replication.commands import (
    Command,
    PingCommand,
    PositionCommand,
    RdataCommand,
    ReplicateCommand,
)
from myelin.replication.positions import PositionAnnouncer, StreamView
from myelin.replication.stream_defs import Stream, Update, decode_rows
from myelin.storage.engines import Database

logger = logging.getLogger(__name__)

RowHandler = Callable[[str, Sequence[Update]], None]

# Streams any process may write (each process is a writer of its own rows).
ANY_WRITER_STREAMS = ("caches",)
PING_INTERVAL_S = 5.0
DISAGREEMENT_EXPIRY_S = 3 * PING_INTERVAL_S
STARTUP_AGREEMENT_S = 1.5 * PING_INTERVAL_S
# How long an idle writer gathers other writers' advances before following them.
IDLE_ADVANCE_DELAY_S = 0.001


def writers_digest(writers: Mapping[str, Sequence[str]]) -> str:
    """A short digest of who writes what, the same in every process that agrees."""
    canonical = orjson.dumps({k: list(v) for k, v in sorted(writers.items())},
                             option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:16]


class ReplicationFollower:
    def __init__(self, *, instance_name: str, bus: Bus, view: StreamView,
                 streams: Mapping[str, Stream], generators: Mapping[str, Any],
                 announcer: PositionAnnouncer, db: Database) -> None:
        self.instance_name = instance_name
        self.bus = bus
        self.view = view
        self.streams = streams
        self.generators = generators  # the streams this process writes
        self.announcer = announcer
        self.db = db
        self._row_handlers: dict[str, list[RowHandler]] = {}
        self._visible_handlers: dict[str, list[RowHandler]] = {}
        self._advanced_handlers: dict[str, list[RowHandler]] = {}
        # rows received beyond the stream's readable position: (position, writer, row)
        self._held: dict[str, list[tuple[int, str, Any]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.digest = writers_digest(view.writers)
        self._disagreeing: dict[str, tuple[str, float]] = {}
        self._agreeing: set[str] = {instance_name}
        self._started_at = time.monotonic()
        self._pinger: asyncio.Task[None] | None = None
        self._idle_targets: dict[str, int] = {}
        self.rows_applied = 0
        self.gaps_filled = 0

    # -- registration --------------------------------------------------------
    def on_rows(self, stream: str, handler: RowHandler) -> None:
        """``handler(writer, rows)`` as soon as rows arrive (caches)."""
        self._row_handlers.setdefault(stream, []).append(handler)

    def on_visible(self, stream: str, handler: RowHandler) -> None:
        """``handler(writer, rows)`` once readers can see the rows (wake-ups)."""
        self._visible_handlers.setdefault(stream, []).append(handler)

    def on_writer_advanced(self, stream: str, handler: RowHandler) -> None:
        """``handler(writer, rows)`` once this process's view has the writer's
        rows — before the stream's minimum passes them. For readers that read
        each key at its own writer's position (a room's events at its
        persister's), so they need not wait for the slowest writer."""
        self._advanced_handlers.setdefault(stream, []).append(handler)

    # -- start-up ------------------------------------------------------------
    async def start(self) -> None:
        """Start from safe positions: ours from our generators, others' from
        what they recorded (or, the first time, what the table holds)."""
        stored: dict[tuple[str, str], int] = {}
        for stream_name, instance, position in await self.db.fetchall(
                "SELECT stream_name, instance_name, position FROM stream_positions"):
            stored[(stream_name, instance)] = int(position)
        for name, stream in self.streams.items():
            for writer in self.view.writers_of(name):
                if writer == self.instance_name and name in self.generators:
                    position = self.generators[name].current_position
                elif (name, writer) in stored:
                    position = stored[(name, writer)]
                else:
                    position = await stream.max_position(writer)
                self.view.advance(name, writer, position)
        self.bus.subscribe(self.on_command)
        self.bus.publish(ReplicateCommand(self.instance_name))
        self._pinger = asyncio.create_task(self._ping_forever())

    async def stop(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            try:
                await self._pinger
            except (asyncio.CancelledError, Exception):
                pass

    # -- agreement on the writers ------------------------------------------
    async def _ping_forever(self) -> None:
        while True:
            self.bus.publish(PingCommand(self.instance_name, int(time.time() * 1000),
                                         self.digest))
            await asyncio.sleep(PING_INTERVAL_S)

    def _on_ping(self, command: PingCommand) -> None:
        if command.instance == self.instance_name or not command.writers_digest:
            return
        if command.writers_digest != self.digest:
            self._agreeing.discard(command.instance)
            if command.instance not in self._disagreeing:
                logger.error("replication: %s has a different stream_writers configuration;"
                             " refusing to persist events until every process agrees",
                             command.instance)
            self._disagreeing[command.instance] = (command.writers_digest, time.monotonic())
        else:
            self._agreeing.add(command.instance)
            if self._disagreeing.pop(command.instance, None) is not None:
                logger.info("replication: %s now agrees on stream_writers", command.instance)

    def may_write(self, stream: str) -> str | None:
        """None if this process may write ``stream`` now, else why not.

        Not while any process disagrees about the writers; and, just after
        start-up, not before every other writer of the stream has said it
        agrees (or a few PINGs went by): a persister restarted with a new
        writer list must not take rooms another still thinks are its own.
        """
        disagreeing = self.disagreeing
        if disagreeing:
            return f"{', '.join(disagreeing)} disagree(s) on stream_writers"
        writers = set(self.view.writers_of(stream))
        if writers <= self._agreeing:
            return None
        if time.monotonic() - self._started_at > STARTUP_AGREEMENT_S:
            return None
        waiting = ", ".join(sorted(writers - self._agreeing))
        return f"waiting to hear that {waiting} agree(s) on stream_writers"

    @property
    def disagreeing(self) -> list[str]:
        now = time.monotonic()
        for name, (_, seen) in list(self._disagreeing.items()):
            if now - seen > DISAGREEMENT_EXPIRY_S:
                del self._disagreeing[name]
        return sorted(self._disagreeing)

    # -- commands ------------------------------------------------------------
    def _allowed_writer(self, stream: str, instance: str) -> bool:
        return stream in ANY_WRITER_STREAMS or instance in self.view.writers_of(stream)

    async def on_command(self, command: Command) -> None:
        if isinstance(command, RdataCommand):
            if not self._allowed_writer(command.stream, command.instance):
                logger.warning("replication: ignoring %s rows from %s, not a writer of it",
                               command.stream, command.instance)
                return
            rows = decode_rows(command.stream, command.rows)
            await self._apply(command.stream, command.instance, command.prev_token,
                              command.token, rows)
        elif isinstance(command, PositionCommand):
            if not self._allowed_writer(command.stream, command.instance):
                return
            await self._apply(command.stream, command.instance, command.prev_token,
                              command.new_token, [])
        elif isinstance(command, ReplicateCommand):
            self.announcer.replicate()
            # A process that just (re)connected waits to hear every writer agree
            # before it persists (may_write): tell it now, not at the next PING.
            if command.instance != self.instance_name:
                self.bus.publish(PingCommand(self.instance_name, int(time.time() * 1000),
                                             self.digest))
        elif isinstance(command, PingCommand):
            self._on_ping(command)

    def _lock(self, stream: str) -> asyncio.Lock:
        lock = self._locks.get(stream)
        if lock is None:
            lock = self._locks[stream] = asyncio.Lock()
        return lock

    async def _apply(self, stream: str, writer: str, prev_token: int, token: int,
                     rows: list[Update]) -> None:
        async with self._lock(stream):
            if writer not in self.view.positions.get(stream, {}):
                # First word from a writer we had no position for (a writer of
                # the caches stream, which every process is): what it wrote
                # before we started cannot concern caches we did not have.
                self.view.positions.setdefault(stream, {})[writer] = prev_token
            seen = self.view.writer_position(stream, writer)
            if token <= seen:
                return  # already have it
            definition = self.streams.get(stream)
            if prev_token > seen and definition is not None:
                # We missed (seen, prev_token]: fetch it before going on.
                await self._fill_gap(definition, writer, seen, prev_token)
                seen = self.view.writer_position(stream, writer)
            fresh = [r for r in rows if r[0] > seen]
            self._deliver(stream, writer, fresh, token)

    async def _fill_gap(self, definition: Stream, writer: str, from_token: int,
                        to_token: int) -> None:
        self.gaps_filled += 1
        position = from_token
        while position < to_token:
            rows, reached, _ = await definition.updates_since(writer, position, to_token)
            self._deliver(definition.NAME, writer, rows, reached)
            if reached <= position:
                break
            position = reached

    def _deliver(self, stream: str, writer: str, rows: Sequence[Update], token: int) -> None:
        if rows:
            self.rows_applied += len(rows)
            for handler in self._row_handlers.get(stream, ()):
                try:
                    handler(writer, rows)
                except Exception:
                    logger.exception("row handler failed on %s", stream)
        self.view.advance(stream, writer, token)
        if rows:
            for handler in self._advanced_handlers.get(stream, ()):
                try:
                    handler(writer, rows)
                except Exception:
                    logger.exception("advanced handler failed on %s", stream)
        visible = self._visible_handlers.get(stream)
        if visible:
            after = self.view.position(stream)
            held = self._held.setdefault(stream, [])
            held.extend((pos, writer, row) for pos, row in rows)
            ready = [h for h in held if h[0] <= after]
            if ready:
                self._held[stream] = [h for h in held if h[0] > after]
                by_writer: dict[str, list[Update]] = {}
                for pos, w, row in sorted(ready, key=lambda h: h[0]):
                    by_writer.setdefault(w, []).append((pos, row))
                for w, batch in by_writer.items():
                    for handler in visible:
                        try:
                            handler(w, batch)
                        except Exception:
                            logger.exception("visible handler failed on %s", stream)
        self._maybe_advance_idle(stream, writer, token)

    def _maybe_advance_idle(self, stream: str, writer: str, token: int) -> None:
        """Another writer moved on: if we write this stream too and are idle,
        say so, so readers' minimum is not held back by us."""
        if writer == self.instance_name:
            return
        generator = self.generators.get(stream)
        if generator is None or len(self.view.writers_of(stream)) < 2:
            return
        # Coalesce: a burst of another writer's rows costs one POSITION from us.
        pending = self._idle_targets.get(stream)
        self._idle_targets[stream] = max(token, pending or 0)
        if pending is None:
            asyncio.get_running_loop().call_later(IDLE_ADVANCE_DELAY_S, self._advance_idle,
                                                  stream)

    def _advance_idle(self, stream: str) -> None:
        target = self._idle_targets.pop(stream, None)
        if target is not None:
            self.generators[stream].advance_idle(target)
