"""The bus: how commands reach every process.

In one process it is :class:`InMemoryBus`; a fleet will use Redis pub/sub
with the same interface, so the code above it does not change — the
monolith is a fleet of one. Delivery is asynchronous even in memory, so
nobody comes to rely on a publish returning after its subscribers ran.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from myelin.replication.commands import Command, parse_command

logger = logging.getLogger(__name__)

Subscriber = Callable[[Command], Awaitable[None] | None]


class Bus:
    """Publish commands to every process (including this one)."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def publish(self, command: Command) -> None:
        raise NotImplementedError

    async def _deliver(self, command: Command) -> None:
        for subscriber in list(self._subscribers):
            try:
                result = subscriber(command)
                if result is not None:
                    await result
            except Exception:
                logger.exception("replication subscriber failed on %s", command.NAME)

    async def close(self) -> None:
        """Stop delivering."""


class InMemoryBus(Bus):
    """The bus of a single process: commands go through the same codec and
    are delivered on the next loop iteration."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: set[asyncio.Task[None]] = set()

    def publish(self, command: Command) -> None:
        # Round-trip through the wire format so the in-memory bus can't
        # carry anything a Redis bus could not.
        decoded = parse_command(command.to_line())
        task = asyncio.get_running_loop().create_task(self._deliver(decoded))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait until everything published so far has been delivered."""
        while self._pending:
            await asyncio.gather(*list(self._pending))

    async def close(self) -> None:
        await self.drain()
