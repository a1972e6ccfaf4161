"""The in-memory bus and the replication command codec."""

from __future__ import annotations

import pytest

from myelin.replication.bus import InMemoryBus
from myelin.replication.commands import (
    COMMANDS,
    CommandParseError,
    PositionCommand,
    RdataCommand,
    UserSyncCommand,
    parse_command,
)
from myelin.replication.positions import StreamView


def test_every_command_round_trips_through_the_wire_format() -> None:
    samples = [
        RdataCommand("events", "master", 6, 7, [[7, {"event_id": "$a", "room_id": "!r"}]]),
        PositionCommand("events", "persister1", 3, 9),
        UserSyncCommand("sync1", "@u:hs", True, 1234),
    ]
    for command in samples:
        assert parse_command(command.to_line()) == command
    assert {"RDATA", "POSITION", "REPLICATE", "USER_SYNC", "FEDERATION_ACK",
            "CLEAR_USER_CACHE", "REMOTE_SERVER_UP", "USER_IP", "PING"} <= set(COMMANDS)


@pytest.mark.parametrize("line", ["NOPE {}", "POSITION not-json", "POSITION {\"stream\": 1}"])
def test_malformed_commands_are_refused(line: str) -> None:
    with pytest.raises(CommandParseError):
        parse_command(line)


async def test_in_memory_bus_delivers_to_every_subscriber_after_publish_returns() -> None:
    bus = InMemoryBus()
    seen: list[object] = []
    view = StreamView({"events": ["master"]})
    bus.subscribe(seen.append)
    bus.subscribe(lambda c: view.advance(c.stream, c.instance, c.new_token)
                  if isinstance(c, PositionCommand) else None)
    bus.publish(PositionCommand("events", "master", 0, 5))
    assert seen == []  # asynchronous, as a Redis bus would be
    await bus.drain()
    assert seen == [PositionCommand("events", "master", 0, 5)]
    assert view.writer_position("events", "master") == 5
    # Positions never go backwards, even if an old announcement arrives late.
    bus.publish(PositionCommand("events", "master", 0, 3))
    await bus.drain()
    assert view.writer_position("events", "master") == 5


async def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    bus = InMemoryBus()
    seen: list[object] = []

    def broken(_: object) -> None:
        raise RuntimeError("boom")

    bus.subscribe(broken)
    bus.subscribe(seen.append)
    bus.publish(PositionCommand("typing", "master", 1, 2))
    await bus.drain()
    assert len(seen) == 1
