"""The federation sender in one process: local events and EDUs go out as
transactions, in order and once; a destination that is down is retried with
backoff and caught up; EDUs that come in show in local users' /sync.

The HomeServer runs in-process on SQLite with a recording remote in place of
its federation client. Remote users are joined to local rooms through the
event handler (as a remote join would end up persisted), so the sender sees
rooms shared with other servers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from myelin.app.homeserver import HomeServer
from myelin.app.process import start_listeners
from myelin.config import load_config_from_dict
from myelin.domain import Requester
from myelin.handlers.filters import SyncFilter
from myelin.storage.engines import open_database
from tests.federation.sender_support import RecordingRemote, eventually
from tests.support.postgres import free_port
from tests.support.server import http

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVER = "local.test"
MIN_RETRY_MS = 300


def _config(path: str, **extra: Any) -> Any:
    return load_config_from_dict({
        "server_name": SERVER,
        "database": {"name": "sqlite3", "args": {"database": path}},
        "federation": {"destination_min_retry_interval": f"{MIN_RETRY_MS}ms",
                       "destination_retry_multiplier": 2,
                       "destination_max_retry_interval": "5s"},
        **extra,
    })


async def _start(path: str, remote: RecordingRemote, port: int | None = None) -> HomeServer:
    listeners = [] if port is None else [{"port": port, "bind_addresses": ["127.0.0.1"],
                                          "resources": [{"names": ["client"]}]}]
    config = _config(path, listeners=listeners)
    hs = HomeServer(config, await open_database(config.database))
    hs.federation_client = remote  # type: ignore[attr-defined]
    await hs.start()
    await start_listeners(hs)
    return hs


async def _stop(hs: HomeServer) -> None:
    await hs.stop()
    for listener in hs.listeners:
        await listener.stop()
    await hs.db.close()


class Env:
    def __init__(self, hs: HomeServer, remote: RecordingRemote, path: str) -> None:
        self.hs = hs
        self.remote = remote
        self.path = path
        self.users = 0
        self.base_url = ""

    async def user(self, name: str) -> Requester:
        self.users += 1
        user_id = await self.hs.registration.register_user(f"{name}{self.users}", None)
        async with self.hs.db.transaction() as txn:
            await self.hs.stores.accounts.upsert_device(txn, user_id, "DEV", None)
        return Requester(user_id, "DEV", "token")

    async def shared_room(self, owner: Requester, *remote_users: str) -> str:
        """A public room of ``owner`` that ``remote_users`` have joined."""
        room_id, _ = await self.hs.room_creation.create_room(owner, {"preset": "public_chat"})
        for user_id in remote_users:
            await self.hs.event_creation.send(user_id, room_id, "m.room.member",
                                              {"membership": "join"}, state_key=user_id)
        return room_id

    async def say(self, who: Requester, room_id: str, body: str) -> str:
        sent = await self.hs.event_creation.send(who.user_id, room_id, "m.room.message",
                                                 {"msgtype": "m.text", "body": body})
        return sent.event.event_id

    async def sync(self, who: Requester, since: Any = None) -> dict[str, Any]:
        return await self.hs.sync.sync(who, since, 0, False, "offline", SyncFilter.parse({}))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    path = os.path.join(str(tmp_path_factory.mktemp("sender")), "hs.db")
    remote = RecordingRemote()
    port = free_port()
    hs = await _start(path, remote, port)
    try:
        env = Env(hs, remote, path)
        env.base_url = f"http://127.0.0.1:{port}"
        yield env
    finally:
        await _stop(hs)


def _bodies(pdus: list[dict[str, Any]]) -> list[str]:
    return [p["content"]["body"] for p in pdus if p["type"] == "m.room.message"]


async def test_a_local_message_goes_out_in_one_transaction(env: Env) -> None:
    alice = await env.user("alice")
    room_id = await env.shared_room(alice, "@bob:one.test")
    await env.say(alice, room_id, "hello one")
    txns = await eventually(lambda: [r for r in env.remote.to("one.test")
                                     if "hello one" in _bodies(r.pdus)], what="the message")
    assert len(txns) == 1
    body = txns[0].body
    assert body["origin"] == SERVER and isinstance(body["origin_server_ts"], int)
    (pdu,) = [p for p in body["pdus"] if p["type"] == "m.room.message"]
    assert pdu["sender"] == alice.user_id and pdu["room_id"] == room_id
    assert SERVER in pdu["signatures"] and "unsigned" not in pdu
    # Nobody sends to itself.
    assert env.remote.to(SERVER) == []


async def test_sixty_events_arrive_in_order_exactly_once_over_several_transactions(
        env: Env) -> None:
    alice = await env.user("alice")
    room_id = await env.shared_room(alice, "@bob:sixty.test")
    # A slow server: the first transaction stays in flight while 60 events queue.
    env.remote.hold["sixty.test"] = asyncio.Event()
    await env.say(alice, room_id, "first")
    await eventually(lambda: env.remote.in_flight.get("sixty.test"), what="a first send")
    sent = [f"m{i}" for i in range(60)]
    for body in sent:
        await env.say(alice, room_id, body)
    env.remote.hold.pop("sixty.test").set()
    await eventually(lambda: len(_bodies(env.remote.pdus_to("sixty.test"))) >= 61,
                     what="sixty messages")
    await asyncio.sleep(0.2)  # nothing more comes
    received = _bodies(env.remote.pdus_to("sixty.test"))
    assert received == ["first", *sent]
    txns = [r for r in env.remote.to("sixty.test") if r.pdus]
    # The queue went out as full transactions: 50 PDUs, then the other 10.
    assert [len(t.pdus) for t in txns] == [1, 50, 10]
    assert all(len(t.edus) <= 100 for t in txns)
    ids = [t.txn_id for t in env.remote.to("sixty.test")]
    assert len(ids) == len(set(ids))
    assert env.remote.max_in_flight["sixty.test"] == 1


async def test_a_destination_that_is_down_is_retried_with_backoff_and_caught_up(
        env: Env) -> None:
    alice = await env.user("alice")
    room_id = await env.shared_room(alice, "@bob:down.test")
    await env.say(alice, room_id, "before")
    await eventually(lambda: "before" in _bodies(env.remote.pdus_to("down.test")))
    env.remote.down.add("down.test")
    await env.say(alice, room_id, "missed 1")
    store = env.hs.stores.federation_sender
    first = await eventually(lambda: _backoff(env, "down.test"), what="a backoff")
    assert first.retry_interval >= MIN_RETRY_MS * 0.9
    for i in range(2, 6):
        await env.say(alice, room_id, f"missed {i}")
    # Retried, each wait longer than the one before.
    await eventually(lambda: len(env.remote.attempts["down.test"]) >= 4, what="retries")
    state = await store.get_destination("down.test")
    assert state is not None and state.retry_interval > first.retry_interval
    attempts = env.remote.attempts["down.test"]
    gaps = [b - a for a, b in zip(attempts[-3:], attempts[-2:], strict=False)]
    assert all(gap >= MIN_RETRY_MS / 1000 * 0.8 for gap in gaps)
    env.remote.down.discard("down.test")
    # Back: catch-up sends the newest event of the room, not the whole backlog.
    await eventually(lambda: "missed 5" in _bodies(env.remote.pdus_to("down.test")),
                     what="the catch-up")
    assert _bodies(env.remote.pdus_to("down.test")) == ["before", "missed 5"]
    await eventually(lambda: _backoff_cleared(env, "down.test"), what="the backoff reset")
    # And the live queue goes on from there.
    await env.say(alice, room_id, "after")
    await eventually(lambda: "after" in _bodies(env.remote.pdus_to("down.test")))
    assert _bodies(env.remote.pdus_to("down.test")) == ["before", "missed 5", "after"]


async def _backoff(env: Env, destination: str) -> Any:
    state = await env.hs.stores.federation_sender.get_destination(destination)
    return state if state is not None and state.retry_interval > 0 else None


async def _backoff_cleared(env: Env, destination: str) -> bool:
    state = await env.hs.stores.federation_sender.get_destination(destination)
    return state is not None and state.retry_interval == 0


async def test_a_server_that_calls_us_is_retried_at_once(env: Env) -> None:
    alice = await env.user("alice")
    room_id = await env.shared_room(alice, "@bob:calls.test")
    # It called us a moment ago too (a join, say): that must not hide the next call.
    env.hs.federation_sender.server_up("calls.test")
    env.remote.down.add("calls.test")
    await env.say(alice, room_id, "while down")
    await eventually(lambda: _backoff(env, "calls.test"))
    queue = env.hs.federation_sender.queue("calls.test")
    # Make the wait long, then have the server call us.
    queue.retry_interval = 3_600_000
    env.remote.down.discard("calls.test")
    tries = len(env.remote.attempts["calls.test"])
    await asyncio.sleep(0.3)
    assert len(env.remote.attempts["calls.test"]) == tries  # still backing off
    env.hs.federation_sender.server_up("calls.test")
    await eventually(lambda: "while down" in _bodies(env.remote.pdus_to("calls.test")),
                     what="the retry after REMOTE_SERVER_UP")


async def test_typing_receipts_presence_and_to_device_go_out_as_edus(env: Env) -> None:
    alice = await env.user("alice")
    room_id = await env.shared_room(alice, "@bob:edu.test")
    event_id = await env.say(alice, room_id, "read me")
    await env.hs.typing.set_typing(alice.user_id, room_id, True, 10_000)
    typing = await eventually(lambda: env.remote.edus_to("edu.test", "m.typing"))
    assert typing[0]["content"] == {"room_id": room_id, "user_id": alice.user_id,
                                    "typing": True}
    await env.hs.receipts.send_receipt(alice.user_id, room_id, "m.read", event_id, None)
    receipts = await eventually(lambda: env.remote.edus_to("edu.test", "m.receipt"))
    read = receipts[0]["content"][room_id]["m.read"][alice.user_id]
    assert read["event_ids"] == [event_id] and isinstance(read["data"]["ts"], int)
    # A private receipt stays here.
    await env.hs.receipts.send_receipt(alice.user_id, room_id, "m.read.private", event_id,
                                       None)
    await env.hs.presence.set_state(alice.user_id, "online", "at work")
    presence = await eventually(lambda: env.remote.edus_to("edu.test", "m.presence"))
    (update,) = presence[-1]["content"]["push"]
    assert update["user_id"] == alice.user_id and update["presence"] == "online"
    assert update["status_msg"] == "at work"
    await env.hs.to_device.send(alice.user_id, "DEV", "m.test", "txn1",
                                {"@bob:edu.test": {"BOBDEV": {"secret": 1}},
                                 "@carol:other.test": {"*": {"secret": 2}}})
    messages = await eventually(lambda: env.remote.edus_to("edu.test", "m.direct_to_device"))
    content = messages[0]["content"]
    assert content["sender"] == alice.user_id and content["type"] == "m.test"
    assert content["messages"] == {"@bob:edu.test": {"BOBDEV": {"secret": 1}}}
    assert isinstance(content["message_id"], str)
    # other.test shares no room, but to-device messages go to it all the same.
    other = await eventually(lambda: env.remote.edus_to("other.test", "m.direct_to_device"))
    assert other[0]["content"]["messages"] == {"@carol:other.test": {"*": {"secret": 2}}}
    # The client retrying its request sends nothing twice.
    await env.hs.to_device.send(alice.user_id, "DEV", "m.test", "txn1",
                                {"@bob:edu.test": {"BOBDEV": {"secret": 1}}})
    await eventually(lambda: _outbox_empty(env), what="the outbox drained")
    await asyncio.sleep(0.2)
    assert len(env.remote.edus_to("edu.test", "m.direct_to_device")) == 1
    assert [e for e in env.remote.edus_to("edu.test", "m.receipt")
            if "m.read.private" in e["content"][room_id]] == []
    # Typing that stops is sent too.
    await env.hs.typing.set_typing(alice.user_id, room_id, False, None)
    await eventually(lambda: [e for e in env.remote.edus_to("edu.test", "m.typing")
                              if e["content"]["typing"] is False])


async def _at_least(rows: Any, count: int) -> Any:
    found = await rows
    return found if len(found) >= count else None


async def _outbox_empty(env: Env) -> bool:
    return not await env.hs.db.fetchval("SELECT COUNT(*) FROM federation_outbox")


async def test_edus_from_a_remote_server_show_in_local_sync(env: Env) -> None:
    alice = await env.user("alice")
    bob = "@bob:in.test"
    room_id = await env.shared_room(alice, bob)
    event_id = await env.say(alice, room_id, "hi bob")
    first = await env.sync(alice)
    from myelin.replication.tokens import SyncToken

    since = SyncToken.parse(first["next_batch"])
    await env.hs.federation_edus.on_edus("in.test", [
        {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": bob,
                                             "typing": True}},
        {"edu_type": "m.receipt", "content": {room_id: {"m.read": {bob: {
            "event_ids": [event_id], "data": {"ts": 1234}}}}}},
        {"edu_type": "m.presence", "content": {"push": [{
            "user_id": bob, "presence": "online", "last_active_ago": 5000,
            "currently_active": True, "status_msg": "remote"}]}},
        {"edu_type": "m.direct_to_device", "content": {
            "sender": bob, "type": "m.secret", "message_id": "msg1",
            "messages": {alice.user_id: {"DEV": {"hello": "alice"}}}}},
    ])

    async def arrived() -> dict[str, Any] | None:
        body = await env.sync(alice, since)
        room = body["rooms"]["join"].get(room_id, {})
        kinds = {e["type"] for e in room.get("ephemeral", {}).get("events", [])}
        if {"m.typing", "m.receipt"} <= kinds and body.get("to_device", {}).get("events") \
                and body.get("presence", {}).get("events"):
            return body
        return None

    body = await eventually(arrived, what="remote EDUs in sync")
    ephemeral = body["rooms"]["join"][room_id]["ephemeral"]["events"]
    (typing,) = [e for e in ephemeral if e["type"] == "m.typing"]
    assert typing["content"]["user_ids"] == [bob]
    (receipt,) = [e for e in ephemeral if e["type"] == "m.receipt"]
    assert receipt["content"][event_id]["m.read"][bob]["ts"] == 1234
    (presence,) = [e for e in body["presence"]["events"] if e["sender"] == bob]
    assert presence["content"]["presence"] == "online"
    assert presence["content"]["status_msg"] == "remote"
    assert body["to_device"]["events"] == [
        {"type": "m.secret", "sender": bob, "content": {"hello": "alice"}}]
    # GET /presence of the remote user answers what their server said.
    shown = await env.hs.presence.presence_for(alice.user_id, bob)
    assert shown["presence"] == "online" and shown["status_msg"] == "remote"
    assert shown["last_active_ago"] >= 5000
    # The same to-device message again (a retried transaction) is delivered once.
    token = SyncToken.parse(body["next_batch"])
    await env.hs.federation_edus.on_edus("in.test", [
        {"edu_type": "m.direct_to_device", "content": {
            "sender": bob, "type": "m.secret", "message_id": "msg1",
            "messages": {alice.user_id: {"DEV": {"hello": "alice"}}}}}])
    again = await env.sync(alice, token)
    assert again.get("to_device", {}).get("events", []) == []


async def test_a_server_cannot_speak_for_other_servers_users_or_rooms(env: Env) -> None:
    alice = await env.user("alice")
    room_id = await env.shared_room(alice, "@bob:honest.test")
    event_id = await env.say(alice, room_id, "hello")
    first = await env.sync(alice)
    from myelin.replication.tokens import SyncToken

    since = SyncToken.parse(first["next_batch"])
    await env.hs.federation_edus.on_edus("evil.test", [
        # bob is honest.test's user, not evil.test's
        {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": "@bob:honest.test",
                                             "typing": True}},
        # evil.test's user is not in the room
        {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": "@eve:evil.test",
                                             "typing": True}},
        {"edu_type": "m.receipt", "content": {room_id: {"m.read": {"@eve:evil.test": {
            "event_ids": [event_id], "data": {"ts": 1}}}}}},
        {"edu_type": "m.presence", "content": {"push": [{
            "user_id": alice.user_id, "presence": "offline", "last_active_ago": 0}]}},
        {"edu_type": "m.direct_to_device", "content": {
            "sender": "@bob:honest.test", "type": "m.secret", "message_id": "forged",
            "messages": {alice.user_id: {"DEV": {"forged": True}}}}},
        {"edu_type": "m.unknown", "content": {}},
        "not an edu",  # type: ignore[list-item]
    ])
    body = await env.sync(alice, since)
    room = body["rooms"]["join"].get(room_id, {})
    assert room.get("ephemeral", {}).get("events", []) == []
    assert body.get("to_device", {}).get("events", []) == []
    assert env.hs.typing.typing_users(room_id) == []
    assert alice.user_id not in await env.hs.stores.presence.get([alice.user_id])
    assert await env.hs.stores.receipts.get_for_rooms([room_id], None, 1 << 62) == []


async def test_a_restarted_sender_catches_up_from_its_tables(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    path = os.path.join(str(tmp_path_factory.mktemp("restart")), "hs.db")
    remote = RecordingRemote()
    remote.down.add("later.test")
    hs = await _start(path, remote)
    env = Env(hs, remote, path)
    try:
        alice = await env.user("alice")
        room_id = await env.shared_room(alice, "@bob:later.test")
        await env.say(alice, room_id, "first")
        await env.say(alice, room_id, "second")
        await eventually(lambda: _backoff(env, "later.test"))
    finally:
        await _stop(hs)
    # Up again, on a new process: what was queued is recomputed from the tables.
    remote.down.clear()
    hs = await _start(path, remote)
    env.hs = hs
    try:
        await eventually(lambda: "second" in _bodies(remote.pdus_to("later.test")),
                         what="the catch-up after a restart")
        assert _bodies(remote.pdus_to("later.test")) == ["second"]
        ids = [r.txn_id for r in remote.to("later.test")]
        assert len(ids) == len(set(ids))
        await env.say(alice, room_id, "third")
        await eventually(lambda: "third" in _bodies(remote.pdus_to("later.test")))
        assert _bodies(remote.pdus_to("later.test")) == ["second", "third"]
    finally:
        await _stop(hs)


async def test_device_list_changes_go_out_in_order_and_survive_a_down_server(env: Env) -> None:
    alice = await env.user("alice")
    await env.shared_room(alice, "@bob:devices.test")
    env.remote.down.add("devices.test")
    async with env.hs.db.transaction() as txn:
        await env.hs.stores.accounts.upsert_device(txn, alice.user_id, "PHONE", "my phone")
    outbox = env.hs.stores.federation_sender
    # (An update carries the device as it is when the sender gets to it: let it
    # get to each change before the next.)
    await env.hs.devices.notify_device_change(alice.user_id, "PHONE")
    await eventually(lambda: _at_least(outbox.get_outbox("devices.test", 10), 1))
    await env.hs.devices.rename_device(alice.user_id, "PHONE", "old phone")
    await eventually(lambda: _at_least(outbox.get_outbox("devices.test", 10), 2))
    await env.hs.devices.delete_devices(alice.user_id, ["PHONE"])
    await eventually(lambda: _backoff(env, "devices.test"), what="a backoff")
    # Kept in the outbox while the server is down...
    waiting = await eventually(lambda: _at_least(outbox.get_outbox("devices.test", 10), 3))
    assert [e.edu_type for e in waiting] == ["m.device_list_update"] * 3
    await asyncio.sleep(MIN_RETRY_MS / 1000 * 2)  # a retry or two fails meanwhile
    assert env.remote.edus_to("devices.test") == []
    env.remote.down.discard("devices.test")
    env.hs.federation_sender.server_up("devices.test")
    updates = await eventually(
        lambda: (u := env.remote.edus_to("devices.test", "m.device_list_update"))
        and len(u) >= 3 and u, what="three device list updates")
    contents = [u["content"] for u in updates]
    assert [c["device_id"] for c in contents] == ["PHONE"] * 3
    assert all(c["user_id"] == alice.user_id for c in contents)
    # ...in order, each naming the one before it.
    ids = [c["stream_id"] for c in contents]
    assert ids == sorted(ids)
    assert contents[1]["prev_id"] == [ids[0]] and contents[2]["prev_id"] == [ids[1]]
    assert [c["deleted"] for c in contents] == [False, False, True]
    assert contents[0]["device_display_name"] == "my phone"
    assert contents[1]["device_display_name"] == "old phone"
    await eventually(lambda: _outbox_empty(env), what="the outbox drained")


async def test_a_remote_join_we_accepted_is_relayed_to_the_other_servers(env: Env) -> None:
    alice = await env.user("alice")
    room_id = await env.shared_room(alice, "@bob:resident.test")
    # As send_join persists a joining server's event, then hands it to the sender.
    joiner = "@carol:joiner.test"
    sent = await env.hs.event_creation.send(joiner, room_id, "m.room.member",
                                            {"membership": "join"}, state_key=joiner)
    await env.hs.federation_sender.send_on_behalf_of("joiner.test", sent.event.event_id)
    relayed = await eventually(lambda: [p for p in env.remote.pdus_to("resident.test")
                                        if p.get("state_key") == joiner],
                               what="the relayed join")
    assert relayed[0]["sender"] == joiner
    await asyncio.sleep(0.2)
    assert [p for p in env.remote.pdus_to("joiner.test") if p.get("state_key") == joiner] == []


async def test_admins_see_each_destinations_backoff_and_may_reset_it(env: Env) -> None:
    alice = await env.user("alice")
    room_id = await env.shared_room(alice, "@bob:admin.test")
    env.remote.down.add("admin.test")
    await env.say(alice, room_id, "queued")
    await eventually(lambda: _backoff(env, "admin.test"))
    await env.hs.registration.register_user("boss", "secret pass", admin=True)
    status, login = await asyncio.to_thread(
        http, "POST", f"{env.base_url}/_matrix/client/v3/login",
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "boss"},
         "password": "secret pass"})
    assert status == 200, login
    token = login["access_token"]

    async def get(path: str, method: str = "GET", who: str = token) -> tuple[int, Any]:
        return await asyncio.to_thread(http, method, f"{env.base_url}/_synapse/admin/v1{path}",
                                       {} if method == "POST" else None, who)

    status, listing = await get("/federation/destinations?destination=admin")
    assert status == 200
    (row,) = listing["destinations"]
    assert row["destination"] == "admin.test" and listing["total"] == 1
    assert row["retry_interval"] > 0 and row["retry_last_ts"] > 0 and row["failure_ts"] > 0
    status, every = await get("/federation/destinations?limit=1")
    assert status == 200 and len(every["destinations"]) == 1 and every["total"] > 1
    assert every["next_token"] == "1"
    status, one = await get("/federation/destinations/admin.test")
    assert status == 200 and one == row
    status, rooms = await get("/federation/destinations/admin.test/rooms")
    assert status == 200 and [r["room_id"] for r in rooms["rooms"]] == [room_id]
    assert (await get("/federation/destinations/nowhere.test"))[0] == 404
    assert (await get("/federation/destinations/admin.test", who="nope"))[0] == 401
    env.remote.down.discard("admin.test")
    # A reset retries at once: the queued event arrives without waiting out the backoff.
    queue = env.hs.federation_sender.queue("admin.test")
    queue.retry_interval = 3_600_000
    await env.hs.stores.federation_sender.set_retry("admin.test", queue.retry_last_ts,
                                                   3_600_000)
    status, answer = await get("/federation/destinations/admin.test/reset_connection", "POST")
    assert status == 200 and answer == {}
    await eventually(lambda: "queued" in _bodies(env.remote.pdus_to("admin.test")))
    status, one = await get("/federation/destinations/admin.test")
    assert one["retry_interval"] == 0 and one["failure_ts"] is None
    # Nothing to reset any more.
    status, error = await get("/federation/destinations/admin.test/reset_connection", "POST")
    assert status == 400 and error["errcode"] == "M_UNKNOWN"


async def test_new_room_mates_on_other_servers_get_each_others_presence(env: Env) -> None:
    alice = await env.user("alice")
    await env.hs.presence.set_state(alice.user_id, "online", "here")
    room_id = await env.shared_room(alice)
    # A remote user joins: their server hears alice's presence without her changing it.
    await env.hs.event_creation.send("@bob:mates.test", room_id, "m.room.member",
                                     {"membership": "join"}, state_key="@bob:mates.test")
    pushed = await eventually(lambda: [u for e in env.remote.edus_to("mates.test", "m.presence")
                                       for u in e["content"]["push"]
                                       if u["user_id"] == alice.user_id])
    assert pushed[0]["presence"] == "online" and pushed[0]["status_msg"] == "here"
    # A local user joins a room with remote members: their presence goes there.
    dave = await env.user("dave")
    await env.hs.presence.set_state(dave.user_id, "unavailable")
    await env.hs.event_creation.send(dave.user_id, room_id, "m.room.member",
                                     {"membership": "join"}, state_key=dave.user_id)
    await eventually(lambda: [u for e in env.remote.edus_to("mates.test", "m.presence")
                              for u in e["content"]["push"]
                              if u["user_id"] == dave.user_id
                              and u["presence"] == "unavailable"])


async def test_a_transaction_the_remote_refuses_is_dropped_not_resent(env: Env) -> None:
    alice = await env.user("alice")
    room_id = await env.shared_room(alice, "@bob:picky.test")
    env.remote.refuse.add("picky.test")
    await env.say(alice, room_id, "refused")
    await eventually(lambda: env.remote.attempts.get("picky.test"), what="an attempt")
    await asyncio.sleep(0.3)
    assert len(env.remote.attempts["picky.test"]) == 1
    # The server is up all along: no backoff, and the next event goes at once.
    assert not await _backoff(env, "picky.test")
    env.remote.refuse.discard("picky.test")
    await env.say(alice, room_id, "accepted")
    await eventually(lambda: "accepted" in _bodies(env.remote.pdus_to("picky.test")))
    assert _bodies(env.remote.pdus_to("picky.test")) == ["accepted"]


async def test_a_new_cross_signing_key_goes_out_as_a_signing_key_update(env: Env) -> None:
    alice = await env.user("alice")
    await env.shared_room(alice, "@bob:xsign.test")
    master = {"user_id": alice.user_id, "usage": ["master"],
              "keys": {"ed25519:masterpub": "masterpub"}}
    await env.hs.stores.e2e_keys.set_cross_signing_keys(alice.user_id,
                                                        {"master": ("masterpub", master)})
    await env.hs.devices.notify_device_change(alice.user_id, "masterpub")
    (edu,) = await eventually(lambda: env.remote.edus_to("xsign.test", "m.signing_key_update"))
    assert edu["content"] == {"user_id": alice.user_id, "master_key": master}
    assert env.remote.edus_to("xsign.test", "m.device_list_update") == []


async def test_kicks_and_rescinded_invites_reach_the_target_but_invites_do_not(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    async def countersigned(event: Any, invitee: str) -> Any:
        return event  # as if the invitee's server had signed it (PUT /invite)

    monkeypatch.setattr(env.hs.federation_membership, "remote_invite", countersigned)
    alice = await env.user("alice")
    room_id = await env.shared_room(alice, "@bob:stays.test", "@kim:kicked.test")
    await env.hs.event_creation.send(alice.user_id, room_id, "m.room.member",
                                     {"membership": "leave"}, state_key="@kim:kicked.test")
    await eventually(lambda: [p for p in env.remote.pdus_to("kicked.test")
                              if p.get("state_key") == "@kim:kicked.test"],
                     what="the kick at the kicked server")
    # An invite goes by PUT /invite (fed-membership), never in a transaction...
    await env.hs.event_creation.send(alice.user_id, room_id, "m.room.member",
                                     {"membership": "invite"}, state_key="@ivy:invited.test")
    # ...but rescinding it does, or the invitee would never learn of it.
    await env.hs.event_creation.send(alice.user_id, room_id, "m.room.member",
                                     {"membership": "leave"}, state_key="@ivy:invited.test")
    rescind = await eventually(lambda: env.remote.pdus_to("invited.test"),
                               what="the rescinded invite")
    assert [p["content"]["membership"] for p in rescind] == ["leave"]
    # The server that stays gets all three.
    await eventually(lambda: len([p for p in env.remote.pdus_to("stays.test")
                                  if p["type"] == "m.room.member"
                                  and p["sender"] == alice.user_id]) >= 3)


async def test_edus_from_a_server_the_room_acl_denies_are_dropped(env: Env) -> None:
    alice = await env.user("alice")
    room_id = await env.shared_room(alice, "@bob:allowed.test", "@eve:denied.test")
    await env.hs.event_creation.send(alice.user_id, room_id, "m.room.server_acl",
                                     {"allow": ["*"], "deny": ["denied.test"]}, state_key="")
    await env.hs.federation_edus.on_edus("denied.test", [
        {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": "@eve:denied.test",
                                             "typing": True}}])
    await env.hs.federation_edus.on_edus("allowed.test", [
        {"edu_type": "m.typing", "content": {"room_id": room_id,
                                             "user_id": "@bob:allowed.test", "typing": True}}])
    await eventually(lambda: env.hs.typing.typing_users(room_id))
    assert env.hs.typing.typing_users(room_id) == ["@bob:allowed.test"]
