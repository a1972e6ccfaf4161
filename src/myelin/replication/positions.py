"""Announcing this process's stream positions on the bus, and tracking everyone's.

A writer's generator reports a new position only after the rows up to it
have committed; :class:`PositionAnnouncer` turns that into a POSITION
command. :class:`PositionTracker` records the latest position of every
(stream, writer) seen on the bus: the vector clock a multi-writer token is
made of.
"""

from __future__ import annotations

from myelin.replication.bus import Bus
from myelin.replication.commands import Command, PositionCommand
from myelin.storage.id_generators import StreamIdGenerator


class PositionAnnouncer:
    def __init__(self, bus: Bus, instance_name: str) -> None:
        self.bus = bus
        self.instance_name = instance_name
        self._last: dict[str, int] = {}

    def attach(self, stream: str, generator: StreamIdGenerator) -> None:
        self._last[stream] = generator.current_position

        def announce(position: int) -> None:
            previous = self._last.get(stream, 0)
            self._last[stream] = position
            self.bus.publish(PositionCommand(stream, self.instance_name, previous, position))

        generator.add_listener(announce)


class PositionTracker:
    def __init__(self) -> None:
        self.positions: dict[tuple[str, str], int] = {}

    def on_command(self, command: Command) -> None:
        if isinstance(command, PositionCommand):
            key = (command.stream, command.instance)
            if command.new_token > self.positions.get(key, 0):
                self.positions[key] = command.new_token

    def position(self, stream: str, instance: str) -> int:
        return self.positions.get((stream, instance), 0)
