"""The bus of a fleet: replication commands over Redis pub/sub.

Every process publishes to and subscribes to one channel (named after the
server, so two homeservers can share a Redis). A message carries one or
more commands, one per line: what queued up while the last publish was in
flight goes out together. A process hears its own
commands too — the same path as the in-memory bus, the monolith being a
fleet of one. If Redis goes away the process keeps serving what it can,
logs it, reports it on ``connected``, and reconnects with backoff; a
reconnect sends REPLICATE so writers re-announce their positions and
readers catch up with ``updates_since``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.asyncio as aioredis

from myelin.config import RedisConfig
from myelin.replication.bus import Bus
from myelin.replication.commands import Command, CommandParseError, ReplicateCommand, parse_command

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 10.0
MAX_BATCH = 100  # commands per Redis message (each is one line)


class RedisBus(Bus):
    def __init__(self, config: RedisConfig, channel: str) -> None:
        super().__init__()
        self.config = config
        self.channel = channel
        self.connected = False
        self._client: aioredis.Redis | None = None
        self._reader: asyncio.Task[None] | None = None
        self._outbox: asyncio.Queue[str] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    def _make_client(self) -> aioredis.Redis:
        kwargs: dict[str, Any] = {"password": self.config.password, "db": self.config.dbid,
                                  "decode_responses": True}
        if self.config.path:
            return aioredis.Redis(unix_socket_path=self.config.path, **kwargs)
        return aioredis.Redis(host=self.config.host, port=self.config.port, **kwargs)

    async def start(self) -> None:
        self._client = self._make_client()
        self._reader = asyncio.create_task(self._read_forever())
        self._writer = asyncio.create_task(self._write_forever())

    async def wait_subscribed(self, timeout: float = 10.0) -> bool:  # noqa: ASYNC109
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def publish(self, command: Command) -> None:
        self._outbox.put_nowait(command.to_line())

    async def _write_forever(self) -> None:
        assert self._client is not None
        backoff = 0.1
        while True:
            lines = [await self._outbox.get()]
            # Everything queued meanwhile goes in the same message: one publish
            # (and one delivery in every process) for a burst of commands.
            while not self._outbox.empty() and len(lines) < MAX_BATCH:
                lines.append(self._outbox.get_nowait())
            message = "\n".join(lines)
            while True:
                try:
                    await self._client.publish(self.channel, message)
                    backoff = 0.1
                    break
                except (aioredis.ConnectionError, OSError) as e:
                    self._mark_disconnected(e)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _read_forever(self) -> None:
        assert self._client is not None
        backoff = 0.1
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    kind = message.get("type")
                    if kind == "subscribe":
                        # Redis confirms every (re)subscription, including the
                        # ones redis-py makes by itself after a reconnect.
                        self._on_connected()
                        continue
                    if kind != "message":
                        continue
                    for line in message["data"].split("\n"):
                        try:
                            command = parse_command(line)
                        except CommandParseError as e:
                            logger.warning("replication: ignoring bad command: %s", e)
                            continue
                        await self._deliver(command)
                    backoff = 0.1
            except asyncio.CancelledError:
                raise
            except (aioredis.ConnectionError, OSError) as e:
                self._mark_disconnected(e)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _on_connected(self) -> None:
        logger.info("replication: subscribed to redis channel %s", self.channel)
        self.connected = True
        self._subscribed.set()
        # We may have missed positions while away: ask writers to re-announce.
        self.publish(ReplicateCommand())

    def _mark_disconnected(self, error: BaseException) -> None:
        if self.connected:
            logger.error("replication: lost redis (%s); serving what we can, reconnecting",
                         error)
        self.connected = False
        self._subscribed.clear()

    async def close(self) -> None:
        for task in (self._reader, self._writer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._client is not None:
            await self._client.aclose()
