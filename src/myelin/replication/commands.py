"""Replication commands: small typed records carried by the bus.

Each command class has a NAME and a parse/serialise pair; on the wire a
command is one line, ``NAME <json>``. ``ALLOWED_SENDERS`` records who may
send it ("writer": only the instance that writes the stream it names;
"any": every process; "main": the main process).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import orjson


@dataclass(frozen=True)
class Command:
    NAME: ClassVar[str] = ""
    ALLOWED_SENDERS: ClassVar[str] = "any"

    def to_line(self) -> str:
        return f"{self.NAME} {orjson.dumps(asdict(self)).decode()}"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Command:
        return cls(**data)


@dataclass(frozen=True)
class RdataCommand(Command):
    """``instance`` moved ``stream`` from ``prev_token`` to ``token``; ``rows``
    are the rows it committed in between as ``[position, row fields]``.

    Carrying ``prev_token`` lets a reader notice it missed something (a
    restart, a Redis blip) and fetch the gap with ``updates_since``.
    """

    NAME: ClassVar[str] = "RDATA"
    ALLOWED_SENDERS: ClassVar[str] = "writer"
    stream: str
    instance: str
    prev_token: int
    token: int
    rows: list[Any]


@dataclass(frozen=True)
class PositionCommand(Command):
    """``instance`` has persisted everything on ``stream`` up to ``new_token``."""

    NAME: ClassVar[str] = "POSITION"
    ALLOWED_SENDERS: ClassVar[str] = "writer"
    stream: str
    instance: str
    prev_token: int
    new_token: int


@dataclass(frozen=True)
class ReplicateCommand(Command):
    """Ask every writer to announce its current positions (sent on connect)."""

    NAME: ClassVar[str] = "REPLICATE"
    instance: str = ""


@dataclass(frozen=True)
class UserSyncCommand(Command):
    """A user started or stopped syncing on ``instance`` (drives presence)."""

    NAME: ClassVar[str] = "USER_SYNC"
    instance: str
    user_id: str
    active: bool
    last_sync_ms: int


@dataclass(frozen=True)
class ClearUserCacheCommand(Command):
    NAME: ClassVar[str] = "CLEAR_USER_CACHE"
    ALLOWED_SENDERS: ClassVar[str] = "main"
    user_id: str
    instance: str = "master"


@dataclass(frozen=True)
class FederationAckCommand(Command):
    NAME: ClassVar[str] = "FEDERATION_ACK"
    ALLOWED_SENDERS: ClassVar[str] = "federation_sender"
    instance: str
    token: int


@dataclass(frozen=True)
class RemoteServerUpCommand(Command):
    NAME: ClassVar[str] = "REMOTE_SERVER_UP"
    server: str
    instance: str = ""


@dataclass(frozen=True)
class FederationEduCommand(Command):
    """An EDU for ``destination``, produced on ``instance``: the destination's
    federation sender queues it (``key``: a later EDU with the same type and key
    replaces it while both wait)."""

    NAME: ClassVar[str] = "FEDERATION_EDU"
    instance: str
    destination: str
    edu_type: str
    content: dict[str, Any]
    key: Any = None


@dataclass(frozen=True)
class FederationPokeCommand(Command):
    """Work for the senders of ``destinations``: the outbox has EDUs for them, or
    (with ``event_id``) that event must go to them too (an invite's target); with
    ``on_behalf_of``, a remote server's event we accepted goes to every other
    server in the room (``destinations`` is empty: each sender works them out)."""

    NAME: ClassVar[str] = "FEDERATION_POKE"
    instance: str
    destinations: list[str]
    event_id: str | None = None
    on_behalf_of: str | None = None


@dataclass(frozen=True)
class UserIpCommand(Command):
    """Sent by workers to main, which owns the devices' last-seen bookkeeping."""

    NAME: ClassVar[str] = "USER_IP"
    ALLOWED_SENDERS: ClassVar[str] = "worker"
    instance: str
    user_id: str
    access_token: str
    ip: str
    user_agent: str
    device_id: str | None
    last_seen_ms: int


@dataclass(frozen=True)
class PingCommand(Command):
    """Liveness, and the digest of the sender's ``stream_writers``: processes
    that disagree about who writes what refuse to write until they agree."""

    NAME: ClassVar[str] = "PING"
    instance: str
    ts: int
    writers_digest: str = ""


@dataclass(frozen=True)
class ProcessStatusCommand(Command):
    """What one process says about itself every few seconds, for the fleet's
    status page: its app, request and error rates, recent errors, how far it
    trails each stream, CPU and memory (``summary``, free-form JSON)."""

    NAME: ClassVar[str] = "PROCESS_STATUS"
    instance: str
    ts: int
    summary: dict[str, Any]


COMMANDS: dict[str, type[Command]] = {
    cls.NAME: cls for cls in (RdataCommand, PositionCommand, ReplicateCommand, UserSyncCommand,
                              ClearUserCacheCommand, FederationAckCommand,
                              RemoteServerUpCommand, FederationEduCommand,
                              FederationPokeCommand, UserIpCommand, PingCommand,
                              ProcessStatusCommand)
}


class CommandParseError(ValueError):
    pass


def parse_command(line: str) -> Command:
    name, _, payload = line.partition(" ")
    cls = COMMANDS.get(name)
    if cls is None:
        raise CommandParseError(f"unknown command {name!r}")
    try:
        data = orjson.loads(payload) if payload else {}
        return cls.from_json(data)
    except (orjson.JSONDecodeError, TypeError) as e:
        raise CommandParseError(f"bad {name} command: {e}") from None
