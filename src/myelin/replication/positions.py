"""What this process has seen of every stream, and announcing what it wrote.

:class:`StreamView` is this process's "now": for each stream, the position
of each writer *as received over the bus* (its own writes included, since
they come back the same way). A stream's readable position is the minimum
over its configured writers, so nobody reads past a row still in flight on
another writer. Sync tokens, the notifier and write fences all read it.

:class:`PositionAnnouncer` turns this process's own generators' advances
into RDATA (rows committed) or POSITION (nothing to carry) commands, answers
REPLICATE, and lazily records its positions in ``stream_positions`` so a
process starting later has a safe place to resume from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from myelin.replication.bus import Bus
from myelin.replication.commands import PositionCommand, RdataCommand
from myelin.replication.stream_defs import encode_rows
from myelin.replication.tokens import SYNC_STREAMS, StreamPosition, SyncToken
from myelin.storage.engines import Database

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0


class StreamView:
    def __init__(self, writers: Mapping[str, Sequence[str]]) -> None:
        self.writers = {stream: tuple(names) for stream, names in writers.items()}
        self.positions: dict[str, dict[str, int]] = {}
        self._waiters: list[tuple[str, str, int, asyncio.Future[None]]] = []

    def writers_of(self, stream: str) -> tuple[str, ...]:
        return self.writers.get(stream, ())

    def writer_position(self, stream: str, instance: str) -> int:
        return self.positions.get(stream, {}).get(instance, 0)

    def position(self, stream: str) -> int:
        """Everything on ``stream`` up to here has been received (min over writers)."""
        seen = self.positions.get(stream, {})
        writers = self.writers_of(stream) or tuple(seen)
        if not writers:
            return 0
        return min(seen.get(w, 0) for w in writers)

    def token_position(self, stream: str) -> StreamPosition:
        writers = self.writers_of(stream)
        minimum = self.position(stream)
        if len(writers) <= 1:
            return StreamPosition(minimum)
        ahead = tuple((i, self.writer_position(stream, w)) for i, w in enumerate(writers)
                      if self.writer_position(stream, w) > minimum)
        return StreamPosition(minimum, ahead)

    def current_token(self) -> SyncToken:
        return SyncToken({name: self.token_position(name) for name in SYNC_STREAMS})

    def advance(self, stream: str, instance: str, position: int) -> bool:
        """Record that ``instance`` reached ``position``; True if that is news."""
        seen = self.positions.setdefault(stream, {})
        if position <= seen.get(instance, 0):
            return False
        seen[instance] = position
        if self._waiters:
            self._wake(stream, instance)
        return True

    def _wake(self, stream: str, instance: str) -> None:
        still: list[tuple[str, str, int, asyncio.Future[None]]] = []
        for waiter in self._waiters:
            s, i, p, fut = waiter
            if fut.done():
                continue
            if s == stream and i == instance and self.writer_position(s, i) >= p:
                fut.set_result(None)
            else:
                still.append(waiter)
        self._waiters = still

    async def wait_for(self, stream: str, instance: str, position: int,
                       timeout: float = 10.0) -> bool:  # noqa: ASYNC109
        """The fence: return once this process has received ``instance``'s
        rows up to ``position`` (False on timeout)."""
        if self.writer_position(stream, instance) >= position:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((stream, instance, position, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
            return True
        except TimeoutError:
            logger.warning("fence: %s of %s did not reach %d here within %.0fs", stream,
                           instance, position, timeout)
            return False

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per stream: readable position, each writer's, and the lag, for status pages."""
        out: dict[str, dict[str, Any]] = {}
        for stream in sorted(set(self.writers) | set(self.positions)):
            writers = {w: self.writer_position(stream, w)
                       for w in (self.writers_of(stream) or tuple(self.positions.get(stream, {})))}
            position = self.position(stream)
            # How far the readable position trails the furthest writer.
            out[stream] = {"position": position, "writers": writers,
                           "lag": max(writers.values(), default=position) - position}
        return out


class PositionAnnouncer:
    """Publishes this process's stream advances and answers REPLICATE."""

    def __init__(self, bus: Bus, instance_name: str, db: Database | None = None) -> None:
        self.bus = bus
        self.instance_name = instance_name
        self.db = db
        self._current: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._flusher: asyncio.Task[None] | None = None
        self.replicate_hooks: list[Callable[[], None]] = []

    def attach(self, stream: str, generator: Any) -> None:
        """Announce every advance of ``generator`` (a stream this process writes)."""
        self._current[stream] = generator.current_position

        def announce(previous: int, position: int, rows: list[tuple[int, Any]]) -> None:
            self._current[stream] = position
            self._dirty.add(stream)
            if rows:
                self.bus.publish(RdataCommand(stream, self.instance_name, previous, position,
                                              encode_rows(rows)))
            else:
                self.bus.publish(PositionCommand(stream, self.instance_name, previous,
                                                 position))

        generator.add_listener(announce)

    @property
    def streams(self) -> list[str]:
        return list(self._current)

    def replicate(self) -> None:
        """Answer a REPLICATE: say where every stream this process writes stands."""
        for stream, position in self._current.items():
            self.bus.publish(PositionCommand(stream, self.instance_name, position, position))
        for hook in self.replicate_hooks:
            hook()

    def start(self) -> None:
        if self.db is not None:
            self._flusher = asyncio.create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            try:
                await self.flush()
            except Exception:
                logger.exception("could not record stream positions")

    async def flush(self) -> None:
        """Record our positions: a lower bound of what we have committed."""
        if self.db is None or not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        async with self.db.transaction() as txn:
            for stream in sorted(dirty):
                await txn.execute(
                    "INSERT INTO stream_positions (stream_name, instance_name, position)"
                    " VALUES (?, ?, ?) ON CONFLICT (stream_name, instance_name)"
                    " DO UPDATE SET position = excluded.position",
                    stream, self.instance_name, self._current[stream])

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        with contextlib.suppress(Exception):
            await self.flush()
