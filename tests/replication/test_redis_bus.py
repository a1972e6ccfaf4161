"""The Redis bus against a real redis-server: delivery, and surviving Redis restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from myelin.config import RedisConfig
from myelin.replication.commands import Command, PositionCommand, ReplicateCommand
from myelin.replication.redis_bus import RedisBus
from tests.support.redis import RedisServer, start_redis


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()


async def _wait_for(seen: list[Command], predicate: object, timeout: float = 10) -> None:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while not any(predicate(c) for c in seen):  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not seen; got {seen}")
        await asyncio.sleep(0.02)


async def test_commands_reach_every_process_including_the_sender(
        redis_server: RedisServer) -> None:
    config = RedisConfig(enabled=True, host="127.0.0.1", port=redis_server.port)
    main, worker = RedisBus(config, "myelin:test"), RedisBus(config, "myelin:test")
    seen_main: list[Command] = []
    seen_worker: list[Command] = []
    main.subscribe(seen_main.append)
    worker.subscribe(seen_worker.append)
    await main.start()
    await worker.start()
    try:
        assert await main.wait_subscribed() and await worker.wait_subscribed()
        command = PositionCommand("events", "persister1", 4, 9)
        main.publish(command)
        await _wait_for(seen_worker, lambda c: c == command)
        await _wait_for(seen_main, lambda c: c == command)
    finally:
        await main.close()
        await worker.close()


async def test_bus_reconnects_after_redis_restarts_and_asks_for_positions(
        redis_server: RedisServer) -> None:
    config = RedisConfig(enabled=True, host="127.0.0.1", port=redis_server.port)
    bus = RedisBus(config, "myelin:test")
    seen: list[Command] = []
    bus.subscribe(seen.append)
    await bus.start()
    try:
        assert await bus.wait_subscribed()
        await _wait_for(seen, lambda c: isinstance(c, ReplicateCommand))
        seen.clear()
        redis_server.restart()
        await asyncio.sleep(0.3)
        assert await bus.wait_subscribed(timeout=20)
        # On reconnecting the bus asked writers to re-announce their positions.
        await _wait_for(seen, lambda c: isinstance(c, ReplicateCommand), timeout=20)
        bus.publish(PositionCommand("typing", "master", 1, 2))
        await _wait_for(seen, lambda c: isinstance(c, PositionCommand))
        assert bus.connected
    finally:
        await bus.close()
