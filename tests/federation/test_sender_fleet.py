"""Two federation senders in one fleet: destinations are sharded between them.

Main (``send_federation: false``) and two workers named in
``federation_sender_instances`` run as HomeServers in one process on one
in-memory bus and one PostgreSQL; each sender has its own recording remote.
Every destination hears from exactly one of them — the one the stable hash
names — whatever process produced the event or EDU.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from myelin.app.homeserver import HomeServer
from myelin.app.process import start_listeners
from myelin.app.roles import ProcessRoles, shard_index
from myelin.config import load_config_from_dict
from myelin.domain import Requester
from myelin.replication.bus import InMemoryBus
from myelin.storage.engines import open_database
from tests.federation.sender_support import RecordingRemote, eventually
from tests.support.postgres import PostgresServer, create_database, free_port

SERVER = "fleet.test"
SENDERS = ("sender1", "sender2")
SECRET = "fleet-secret"


def _config(pg: PostgresServer, database: str, ports: dict[str, int],
            worker: str | None) -> Any:
    data: dict[str, Any] = {
        "server_name": SERVER,
        "database": {"name": "psycopg2", "args": {"user": pg.user, "host": pg.host,
                                                   "port": pg.port, "database": database,
                                                   "cp_min": 1, "cp_max": 4}},
        "redis": {"enabled": True},  # the bus is handed over in-memory below
        "worker_replication_secret": SECRET,
        "instance_map": {"main": {"host": "127.0.0.1", "port": ports["main"]}},
        "federation_sender_instances": list(SENDERS),
        "send_federation": False,
        "federation": {"destination_min_retry_interval": "200ms"},
        "listeners": [{"port": ports["main"], "bind_addresses": ["127.0.0.1"],
                       "resources": [{"names": ["replication"]}]}],
    }
    if worker is not None:
        data |= {"worker_app": "synapse.app.generic_worker", "worker_name": worker,
                 "worker_listeners": [{"port": ports[worker], "bind_addresses": ["127.0.0.1"],
                                       "resources": [{"names": ["replication"]}]}]}
    return load_config_from_dict(data)


@contextlib.asynccontextmanager
async def _fleet(pg: PostgresServer) -> AsyncIterator[tuple[list[HomeServer],
                                                             dict[str, RecordingRemote]]]:
    name = f"fedsend_{os.getpid()}_{free_port()}"
    await asyncio.to_thread(create_database, pg, name)
    ports = {"main": free_port(), **{s: free_port() for s in SENDERS}}
    bus = InMemoryBus()
    servers: list[HomeServer] = []
    remotes: dict[str, RecordingRemote] = {}
    try:
        for worker in (None, *SENDERS):
            config = _config(pg, name, ports, worker)
            hs = HomeServer(config, await open_database(config.database), bus=bus)
            remotes[config.instance_name] = RecordingRemote()
            hs.federation_client = remotes[config.instance_name]  # type: ignore[attr-defined]
            servers.append(hs)
            await hs.start()
            await start_listeners(hs)
        yield servers, remotes
    finally:
        for hs in servers:
            await hs.stop()
            for listener in hs.listeners:
                await listener.stop()
            await hs.db.close()


def test_who_runs_the_federation_sender() -> None:
    """`send_federation: false` stops main; the listed instances send; a
    monolith's main sends by default."""
    def roles(worker: str | None, **extra: Any) -> Any:
        data: dict[str, Any] = {"server_name": SERVER,
                                "database": {"name": "sqlite3", "args": {"database": ":memory:"}},
                                "instance_map": {"main": {"host": "127.0.0.1", "port": 1}},
                                **extra}
        if worker is not None:
            data |= {"worker_app": "synapse.app.generic_worker", "worker_name": worker}
        return ProcessRoles.from_config(load_config_from_dict(data))

    assert roles(None).runs("federation_sender")
    assert not roles(None, send_federation=False).runs("federation_sender")
    fleet = {"send_federation": False, "federation_sender_instances": list(SENDERS)}
    assert not roles(None, **fleet).runs("federation_sender")
    assert roles("sender1", **fleet).runs("federation_sender")
    assert roles("sender2", **fleet).runs("federation_sender")
    assert not roles("other", **fleet).runs("federation_sender")
    assert not roles("sender1").runs("federation_sender")


def _destinations() -> list[str]:
    """Six remote servers, at least two per sender."""
    names = [f"d{i}.test" for i in range(40)]
    by_owner: dict[str, list[str]] = {s: [] for s in SENDERS}
    for name in names:
        by_owner[SENDERS[shard_index(name, len(SENDERS))]].append(name)
    assert all(len(v) >= 3 for v in by_owner.values())
    return [d for v in by_owner.values() for d in v[:3]]


def _bodies(remote: RecordingRemote, destination: str) -> list[str]:
    return [p["content"].get("body") for p in remote.pdus_to(destination)
            if p["type"] == "m.room.message"]


async def test_each_destination_is_served_by_exactly_one_sender(
        postgres_server: PostgresServer) -> None:
    async with _fleet(postgres_server) as (servers, remotes):
        main, *senders = servers
        assert not main.roles.runs("federation_sender")
        assert all(s.roles.runs("federation_sender") for s in senders)
        alice_id = await main.registration.register_user("alice", None)
        alice = Requester(alice_id, "DEV", "token")
        room_id, _ = await main.room_creation.create_room(alice, {"preset": "public_chat"})
        destinations = _destinations()
        for destination in destinations:
            user_id = f"@u:{destination}"
            await main.event_creation.send(user_id, room_id, "m.room.member",
                                           {"membership": "join"}, state_key=user_id)
        await main.event_creation.send(alice_id, room_id, "m.room.message",
                                       {"msgtype": "m.text", "body": "to everyone"})
        for destination in destinations:
            owner = SENDERS[shard_index(destination, len(SENDERS))]
            other = next(s for s in SENDERS if s != owner)
            await eventually(lambda d=destination, o=owner:  # type: ignore[misc]
                             "to everyone" in _bodies(remotes[o], d),
                             what=f"{destination} served by {owner}")
            assert _bodies(remotes[owner], destination) == ["to everyone"]
            assert remotes[other].to(destination) == []
        assert remotes["master"].received == []

        # EDUs produced on main (not a sender) reach the owner over the bus.
        target = destinations[0]
        owner = SENDERS[shard_index(target, len(SENDERS))]
        await main.federation_sender.send_edu(target, "m.test.edu", {"n": 1})
        await eventually(lambda: remotes[owner].edus_to(target, "m.test.edu"),
                         what="the EDU from main")
        # Typing (the typing writer is main) and to-device via the outbox.
        await main.typing.set_typing(alice_id, room_id, True, 10_000)
        for destination in destinations:
            holder = SENDERS[shard_index(destination, len(SENDERS))]
            await eventually(lambda d=destination, h=holder:  # type: ignore[misc]
                             remotes[h].edus_to(d, "m.typing"), what=f"typing to {destination}")
        await main.to_device.send(alice_id, "DEV", "m.test", "t1",
                                  {f"@u:{d}": {"X": {"k": d}} for d in destinations})
        for destination in destinations:
            holder = SENDERS[shard_index(destination, len(SENDERS))]
            edus = await eventually(lambda d=destination, h=holder:  # type: ignore[misc]
                                    remotes[h].edus_to(d, "m.direct_to_device"))
            assert edus[0]["content"]["messages"] == {f"@u:{destination}":
                                                      {"X": {"k": destination}}}
        for sender in SENDERS:
            for destination in destinations:
                if SENDERS[shard_index(destination, len(SENDERS))] != sender:
                    assert remotes[sender].to(destination) == []

        # A server that is down backs off on its sender; when it calls main (not
        # its sender), REMOTE_SERVER_UP reaches the sender and it retries at once.
        target = destinations[-1]
        owner_hs = senders[SENDERS.index(SENDERS[shard_index(target, len(SENDERS))])]
        remote = remotes[owner_hs.config.instance_name]
        remote.down.add(target)
        await main.event_creation.send(alice_id, room_id, "m.room.message",
                                       {"msgtype": "m.text", "body": "while down"})
        store = main.stores.federation_sender

        async def backing_off() -> bool:
            state = await store.get_destination(target)
            return state is not None and state.retry_interval > 0

        await eventually(backing_off, what="a backoff")
        queue = owner_hs.federation_sender.queue(target)
        queue.retry_interval = 3_600_000
        remote.down.discard(target)
        main.federation_sender.server_up(target)
        await eventually(lambda: "while down" in _bodies(remote, target),
                         what="the retry after REMOTE_SERVER_UP from main")
