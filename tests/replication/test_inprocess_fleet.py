"""Two HomeServers in one process on one in-memory bus and one PostgreSQL: a
fleet of two (main and an event persister), driven through the handlers.

The persister is the only `events` writer, so everything main does to rooms
crosses real HTTP replication on loopback; main learns of the results only
from the rows on the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from myelin.app.homeserver import HomeServer
from myelin.app.process import start_listeners
from myelin.config import load_config_from_dict
from myelin.domain import Requester
from myelin.handlers.filters import SyncFilter
from myelin.replication.bus import InMemoryBus
from myelin.storage.engines import open_database
from tests.support.postgres import PostgresServer, create_database, free_port

SECRET = "in-process-secret"


def _config(pg: PostgresServer, database: str, ports: dict[str, int], worker: str | None,
            persisters: tuple[str, ...] = ("persister",)) -> Any:
    data: dict[str, Any] = {
        "server_name": "fleet.test",
        "database": {"name": "psycopg2", "args": {"user": pg.user, "host": pg.host,
                                                   "port": pg.port, "database": database,
                                                   "cp_min": 1, "cp_max": 4}},
        "redis": {"enabled": True},  # the bus is handed over in-memory below
        "worker_replication_secret": SECRET,
        "instance_map": {"main": {"host": "127.0.0.1", "port": ports["main"]},
                         **{p: {"host": "127.0.0.1", "port": ports[p]} for p in persisters}},
        "stream_writers": {"events": list(persisters)},
        "listeners": [{"port": ports["main"], "bind_addresses": ["127.0.0.1"],
                       "resources": [{"names": ["replication"]}]}],
    }
    if worker is not None:
        data |= {"worker_app": "synapse.app.generic_worker", "worker_name": worker,
                 "worker_listeners": [{"port": ports[worker], "bind_addresses": ["127.0.0.1"],
                                       "resources": [{"names": ["replication"]}]}]}
    return load_config_from_dict(data)


@contextlib.asynccontextmanager
async def _servers(pg: PostgresServer, persisters: tuple[str, ...],
                   ) -> AsyncIterator[list[HomeServer]]:
    """main and ``persisters`` (the events writers), on one bus and one database."""
    name = f"inproc_{os.getpid()}_{free_port()}"
    await asyncio.to_thread(create_database, pg, name)
    ports = {"main": free_port(), **{p: free_port() for p in persisters}}
    bus = InMemoryBus()
    servers = []
    try:
        for worker in (None, *persisters):
            config = _config(pg, name, ports, worker, persisters)
            hs = HomeServer(config, await open_database(config.database), bus=bus)
            servers.append(hs)
            await hs.start()
            await start_listeners(hs)
        yield servers
    finally:
        for hs in servers:
            await hs.stop()
            for listener in hs.listeners:
                await listener.stop()
            await hs.db.close()


@pytest.fixture
async def fleet(postgres_server: PostgresServer) -> AsyncIterator[tuple[HomeServer, HomeServer]]:
    async with _servers(postgres_server, ("persister",)) as (main, persister):
        yield main, persister


async def _user(hs: HomeServer, name: str) -> Requester:
    user_id = await hs.registration.register_user(name, None)
    return Requester(user_id, "DEV", "token")


async def _sync(hs: HomeServer, who: Requester, since: Any = None) -> dict[str, Any]:
    return await hs.sync.sync(who, since, 0, False, "offline", SyncFilter.parse({}))


async def test_main_sends_through_the_persister_and_sees_its_rows(
        fleet: tuple[HomeServer, HomeServer]) -> None:
    main, _ = fleet
    alice = await _user(main, "alice")
    room_id, _ = await main.room_creation.create_room(alice, {"name": "fleet"})
    sent = await main.event_creation.send(alice.user_id, room_id, "m.room.message",
                                          {"msgtype": "m.text", "body": "hello"})
    # Persisted by the persister, not by main...
    writer = await main.db.fetchval("SELECT instance_name FROM events WHERE event_id = ?",
                                    sent.event.event_id)
    assert writer == "persister"
    assert main.replication.remote_calls >= 2  # createRoom's batch and the message
    # ...and main's own view has it when send returns (the fence), so its sync shows it.
    assert main.streams.position("events") >= sent.stream_ordering
    body = await _sync(main, alice)
    timeline = body["rooms"]["join"][room_id]["timeline"]["events"]
    assert [e["content"].get("body") for e in timeline if e["type"] == "m.room.message"] == \
        ["hello"]
    # The membership cache main holds was filled from the rows, not by hand.
    assert [m.room_id for m in await main.stores.memberships.get_rooms_for_user(alice.user_id)] == \
        [room_id]


async def test_a_sync_waiting_on_main_is_woken_by_the_persisters_rows(
        fleet: tuple[HomeServer, HomeServer]) -> None:
    main, persister = fleet
    bob = await _user(main, "bob")
    room_id, _ = await main.room_creation.create_room(bob, {})
    first = await _sync(main, bob)
    from myelin.replication.tokens import SyncToken

    since = SyncToken.parse(first["next_batch"])
    waiting = asyncio.create_task(main.sync.sync(bob, since, 10_000, False, "offline",
                                                 SyncFilter.parse({})))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    # The persister writes locally: main hears of it only over the bus.
    await persister.event_creation.send(bob.user_id, room_id, "m.room.message",
                                        {"msgtype": "m.text", "body": "wake up"})
    body = await asyncio.wait_for(waiting, 5)
    events = body["rooms"]["join"][room_id]["timeline"]["events"]
    assert [e["content"]["body"] for e in events] == ["wake up"]


async def test_concurrent_state_changes_from_both_processes_leave_one_extremity(
        fleet: tuple[HomeServer, HomeServer]) -> None:
    main, persister = fleet
    carol = await _user(main, "carol")
    room_id, _ = await main.room_creation.create_room(carol, {})

    async def topic(hs: HomeServer, i: int) -> int:
        sent = await hs.event_creation.send(carol.user_id, room_id, "m.room.topic",
                                            {"topic": f"t{i}"}, state_key="")
        return sent.stream_ordering

    positions = await asyncio.gather(*(topic(main if i % 2 else persister, i)
                                       for i in range(20)))
    last = max(range(20), key=lambda i: positions[i])
    extremities = await main.db.fetchall(
        "SELECT event_id FROM room_forward_extremities WHERE room_id = ?", room_id)
    assert len(extremities) == 1
    for hs in (main, persister):
        topic_event = await hs.stores.state.get_current_state_event(room_id, "m.room.topic")
        assert topic_event is not None and topic_event.content["topic"] == f"t{last}"


async def test_replication_without_the_secret_is_refused(
        fleet: tuple[HomeServer, HomeServer]) -> None:
    import aiohttp

    _, persister = fleet
    location = persister.config.instance_map["persister"]
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with session.post(f"{location.base_url}/_synapse/replication/set_typing/x",
                                    json={}, headers=headers) as response:
                assert response.status == 403
        async with session.get(f"{location.base_url}/_myelin/status",
                               headers={"Authorization": f"Bearer {SECRET}"}) as response:
            status = await response.json()
    assert status["instance"] == "persister"
    assert "writer:events" in status["roles"]


async def test_persisters_refuse_while_a_process_disagrees_on_the_writers(
        fleet: tuple[HomeServer, HomeServer]) -> None:
    from myelin.domain import MatrixError
    from myelin.replication.commands import PingCommand

    main, persister = fleet
    dave = await _user(main, "dave")
    room_id, _ = await main.room_creation.create_room(dave, {})
    # A process that was restarted with another events writer list speaks up.
    persister.bus.publish(PingCommand("newcomer", 1, "0123456789abcdef"))
    await asyncio.sleep(0.1)
    with pytest.raises(MatrixError) as refused:
        await main.event_creation.send(dave.user_id, room_id, "m.room.message",
                                       {"msgtype": "m.text", "body": "not now"})
    assert refused.value.status == 503
    assert "newcomer" in refused.value.message
    # Once it runs with the same list, writes go through again.
    persister.bus.publish(PingCommand("newcomer", 2, persister.follower.digest))
    await asyncio.sleep(0.1)
    await main.event_creation.send(dave.user_id, room_id, "m.room.message",
                                   {"msgtype": "m.text", "body": "now"})


async def test_a_rooms_events_are_read_at_its_persisters_position(
        postgres_server: PostgresServer) -> None:
    """With two persisters, a room is read up to *its* persister's position:
    it need not wait for the other one (the stream's minimum) to move."""
    from myelin.replication.tokens import SyncToken

    async with _servers(postgres_server, ("p1", "p2")) as (main, p1, p2):
        erin = await _user(main, "erin")
        rooms = [(await main.room_creation.create_room(erin, {}))[0] for _ in range(6)]
        mine = [r for r in rooms if main.roles.writer_for("events", r) == "p1"]
        assert mine, "no room hashed to p1"
        room_id = mine[0]
        since = SyncToken.parse((await _sync(main, erin))["next_batch"])
        # p2 goes quiet: it no longer follows p1's position when idle.
        p2.follower._maybe_advance_idle = lambda *a: None  # type: ignore[method-assign]
        await asyncio.sleep(0.05)
        stuck = main.streams.view.writer_position("events", "p2")
        sent = await p1.event_creation.send(erin.user_id, room_id, "m.room.message",
                                            {"msgtype": "m.text", "body": "not held back"})
        body = await asyncio.wait_for(main.sync.sync(
            erin, since, 5_000, False, "offline", SyncFilter.parse({})), 3)
        assert main.streams.position("events") <= stuck < sent.stream_ordering
        events = body["rooms"]["join"][room_id]["timeline"]["events"]
        assert [e["content"]["body"] for e in events] == ["not held back"]
        # The next token continues from there: the message is not repeated.
        again = await _sync(main, erin, SyncToken.parse(body["next_batch"]))
        assert room_id not in again["rooms"]["join"]


async def test_push_actions_are_written_on_the_persister_and_counted_on_main(
        fleet: tuple[HomeServer, HomeServer]) -> None:
    main, persister = fleet
    alice, bob = await _user(main, "pushalice"), await _user(main, "pushbob")
    room_id, _ = await main.room_creation.create_room(alice, {"invite": [bob.user_id]})
    await main.membership.update_membership(bob, room_id, bob.user_id, "join")
    before = await _sync(main, bob)
    assert before["rooms"]["join"][room_id]["unread_notifications"]["notification_count"] == 0
    await main.event_creation.send(alice.user_id, room_id, "m.room.message",
                                   {"msgtype": "m.text", "body": "hi"})
    body = await _sync(main, bob)
    assert body["rooms"]["join"][room_id]["unread_notifications"] == {
        "notification_count": 1, "highlight_count": 0}
    # Bob's rule change is written by main (the push_rules writer); once the
    # persister has its row, the persister's indexer uses the new rules.
    for rule_id in (".m.rule.room_one_to_one", ".m.rule.message"):
        await main.push_rules.set_enabled(bob.user_id, "underride", rule_id, False)
    await persister.streams.view.wait_for("push_rules", "master",
                                          main.streams.position("push_rules"))
    await main.event_creation.send(alice.user_id, room_id, "m.room.message",
                                   {"msgtype": "m.text", "body": "shh"})
    body = await _sync(main, bob)
    assert body["rooms"]["join"][room_id]["unread_notifications"]["notification_count"] == 1
    writers = await main.db.fetchall(
        "SELECT e.instance_name FROM event_push_actions a JOIN events e"
        " ON e.event_id = a.event_id WHERE a.user_id = ?", bob.user_id)
    assert {w[0] for w in writers} == {"persister"}
