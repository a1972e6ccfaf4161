"""What two users notice when the server is a fleet: main, two event persisters,
a stream writer, a background worker and two generic workers behind nginx.

Everything goes through nginx (as a client would) unless a test calls a
generic worker's client listener directly to show that a sync token from one
worker is good on the other.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    KeysQueryResponse,
    LoginResponse,
    MegolmEvent,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)
from nio.crypto import ENCRYPTION_ENABLED

from tests.clients.nio_support import encrypted_exchange, ok
from tests.support.fleet import MYELIN, Fleet, User, bodies, ephemeral, timeline, unique

PASSWORD = "correct horse"
q = urllib.parse.quote


def pair_in_room(fleet: Fleet) -> tuple[User, User, str]:
    """alice and bob, both joined to a fresh room alice created."""
    alice, bob = User.register(fleet, "alice"), User.register(fleet, "bob")
    room = alice.create_room(invite=[bob])
    bob.join(room)
    return alice, bob, room


def test_messages_both_ways_in_order_exactly_once(fleet: Fleet) -> None:
    alice, bob, room = pair_in_room(fleet)
    alice_since = alice.sync()["next_batch"]
    bob_since = bob.sync()["next_batch"]

    sent: list[str] = []
    for i in range(12):
        sender = alice if i % 2 == 0 else bob
        text = f"m{i} from {sender.user_id}"
        sender.send(room, text)
        sent.append(text)

    for user, since in ((alice, alice_since), (bob, bob_since)):
        responses, _ = user.sync_until(
            lambda rs: len(bodies(timeline(rs, room))) >= len(sent), since)
        assert bodies(timeline(responses, room)) == sent, user.user_id
        # /messages has the same history, oldest first, each message once.
        history = [b for b in bodies(user.messages(room)) if b in sent]
        assert history == sent, user.user_id


def test_message_arrives_while_long_polling(fleet: Fleet) -> None:
    alice, bob, room = pair_in_room(fleet)
    since = bob.sync()["next_batch"]
    got: dict[str, Any] = {}

    def poll() -> None:
        started = time.monotonic()
        got["response"] = bob.sync(since, timeout_ms=20000)
        got["took"] = time.monotonic() - started

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(1.0)  # bob is now waiting on a generic worker
    alice.send(room, "wake up")
    thread.join(40)
    assert not thread.is_alive()
    assert bodies(timeline([got["response"]], room)) == ["wake up"]
    assert got["took"] < 10, f"the long-poll woke only after {got['took']:.1f}s"


def test_typing_and_read_receipts_reach_the_other_user(fleet: Fleet) -> None:
    alice, bob, room = pair_in_room(fleet)
    bob_since = bob.sync()["next_batch"]
    alice.ok("PUT", f"/rooms/{q(room)}/typing/{q(alice.user_id)}",
             {"typing": True, "timeout": 30000})
    _, bob_since = bob.sync_until(
        lambda rs: any(alice.user_id in e["content"]["user_ids"]
                       for e in ephemeral(rs, room, "m.typing")), bob_since)

    alice.ok("PUT", f"/rooms/{q(room)}/typing/{q(alice.user_id)}", {"typing": False})
    bob.sync_until(lambda rs: any(e["content"]["user_ids"] == []
                                  for e in ephemeral(rs, room, "m.typing")), bob_since)

    alice_since = alice.sync()["next_batch"]
    event_id = alice.send(room, "read me")
    bob.ok("POST", f"/rooms/{q(room)}/receipt/m.read/{q(event_id)}", {})

    def has_receipt(rs: list[dict[str, Any]]) -> bool:
        return any(bob.user_id in e["content"].get(event_id, {}).get("m.read", {})
                   for e in ephemeral(rs, room, "m.receipt"))

    alice.sync_until(has_receipt, alice_since)


def test_to_device_arrives_once(fleet: Fleet) -> None:
    alice, bob = User.register(fleet, "alice"), User.register(fleet, "bob")
    since = bob.sync()["next_batch"]
    content = {"hello": unique("secret")}
    alice.ok("PUT", f"/sendToDevice/org.example.ping/{alice.txn()}",
             {"messages": {bob.user_id: {bob.device_id: content}}})

    def got(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for r in rs for e in r.get("to_device", {}).get("events", [])
                if e["type"] == "org.example.ping"]

    responses, since = bob.sync_until(lambda rs: bool(got(rs)), since)
    assert [(e["sender"], e["content"]) for e in got(responses)] == [(alice.user_id, content)]
    # Acknowledged by syncing from next_batch: never delivered again.
    again = bob.sync(since, timeout_ms=500)
    assert got([again]) == []


def test_account_data_round_trips(fleet: Fleet) -> None:
    alice, _bob, room = pair_in_room(fleet)
    since = alice.sync()["next_batch"]
    me = q(alice.user_id)
    alice.ok("PUT", f"/user/{me}/account_data/org.example.settings", {"theme": "dark"})
    alice.ok("PUT", f"/user/{me}/rooms/{q(room)}/account_data/org.example.room", {"n": 1})

    # Read back at once (writes go to stream_writer, reads to a generic worker).
    assert alice.ok("GET", f"/user/{me}/account_data/org.example.settings") == {"theme": "dark"}
    assert alice.ok("GET", f"/user/{me}/rooms/{q(room)}/account_data/org.example.room") \
        == {"n": 1}

    def found(rs: list[dict[str, Any]]) -> bool:
        glob = [e for r in rs for e in r.get("account_data", {}).get("events", [])
                if e["type"] == "org.example.settings"]
        local = [e for r in rs for e in r.get("rooms", {}).get("join", {}).get(room, {})
                 .get("account_data", {}).get("events", []) if e["type"] == "org.example.room"]
        return bool(glob) and bool(local)

    alice.sync_until(found, since)
    # A fresh initial sync has it too.
    initial = alice.sync()
    assert {"type": "org.example.settings", "content": {"theme": "dark"}} in \
        initial["account_data"]["events"]


def test_sync_token_from_one_worker_continues_on_the_other(fleet: Fleet) -> None:
    alice, bob, room = pair_in_room(fleet)
    alice.send(room, "before")
    on1, on2 = bob.via("generic_worker1"), bob.via("generic_worker2")
    token = on1.sync()["next_batch"]
    # Position the other worker hasn't necessarily been asked about yet.
    for i in range(3):
        alice.send(room, f"after {i}")
    responses, token = on2.sync_until(lambda rs: len(bodies(timeline(rs, room))) >= 3, token)
    assert bodies(timeline(responses, room)) == ["after 0", "after 1", "after 2"]

    # And back again: a token from worker 2, used on worker 1.
    alice.send(room, "last")
    responses, token = on1.sync_until(lambda rs: bool(bodies(timeline(rs, room))), token)
    assert bodies(timeline(responses, room)) == ["last"]
    # Nothing new: an empty answer, not a replay.
    quiet = on2.sync(token, timeout_ms=300)
    assert bodies(timeline([quiet], room)) == []


# -- matrix-nio, end to end encrypted ---------------------------------------------------



@pytest.fixture
async def nio_pair(fleet: Fleet, tmp_path: os.PathLike[str],
                   ) -> AsyncIterator[tuple[AsyncClient, AsyncClient]]:
    config = AsyncClientConfig(encryption_enabled=ENCRYPTION_ENABLED, store_sync_tokens=False)
    made: list[AsyncClient] = []
    try:
        for prefix in ("alice", "bob"):
            name = unique(prefix)
            fleet.register(name, PASSWORD)
            store = os.path.join(str(tmp_path), name)
            os.makedirs(store)
            client = AsyncClient(fleet.base_url, f"@{name}:{fleet.server_name}",
                                 config=config, store_path=store)
            made.append(client)
            ok(await client.login(PASSWORD, device_name=f"{prefix}'s nio"), LoginResponse)
        yield made[0], made[1]
    finally:
        for client in made:
            await client.close()


async def test_nio_plain_conversation(nio_pair: tuple[AsyncClient, AsyncClient]) -> None:
    alice, bob = nio_pair
    room = ok(await alice.room_create(invite=[bob.user_id]), RoomCreateResponse).room_id
    ok(await bob.sync(timeout=0), SyncResponse)
    ok(await bob.join(room), JoinResponse)
    ok(await alice.sync(timeout=0), SyncResponse)
    for i in range(3):
        ok(await alice.room_send(room, "m.room.message", {"msgtype": "m.text",
                                                          "body": f"hi {i}"}), RoomSendResponse)
    seen: list[str] = []
    for _ in range(10):
        sync = ok(await bob.sync(timeout=2000), SyncResponse)
        joined = sync.rooms.join.get(room)
        seen += [e.body for e in (joined.timeline.events if joined else [])
                 if isinstance(e, RoomMessageText)]
        if len(seen) >= 3:
            break
    assert seen == ["hi 0", "hi 1", "hi 2"]


@pytest.mark.skipif(not ENCRYPTION_ENABLED, reason="needs matrix-nio[e2e] (vodozemac)")
async def test_nio_encrypted_message_decrypts(nio_pair: tuple[AsyncClient, AsyncClient],
                                              ) -> None:
    alice, bob = nio_pair
    room, _, _, _ = await encrypted_exchange(alice, bob, "a secret for bob")

    # And the other way: bob answers, alice decrypts.
    ok(await bob.sync(timeout=0), SyncResponse)
    if bob.should_query_keys:
        ok(await bob.keys_query(), KeysQueryResponse)
    reply = ok(await bob.room_send(room, "m.room.message",
                                   {"msgtype": "m.text", "body": "got it"},
                                   ignore_unverified_devices=True), RoomSendResponse)
    answers: list[str] = []
    for _ in range(10):
        sync = ok(await alice.sync(timeout=2000), SyncResponse)
        joined = sync.rooms.join.get(room)
        for event in joined.timeline.events if joined else []:
            assert not isinstance(event, MegolmEvent), event
            if isinstance(event, RoomMessageText) and event.event_id == reply.event_id:
                answers.append(event.body)
        if answers:
            break
    assert answers == ["got it"]


def test_fleet_status_shows_every_process_up(fleet: Fleet) -> None:
    done = subprocess.run(
        [*MYELIN, "fleet", "status", "-c", fleet.shared_path, "--workers", fleet.workers_dir,
         "--run-dir", fleet.run_dir], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, (done.stdout, done.stderr)
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    for name in fleet.processes:
        assert name in rows and " alive " in rows[name] and "OK" in rows[name], done.stdout
    assert "event_persister1=" in done.stdout  # the events stream's per-writer positions


def test_no_errors_in_fleet_logs(fleet: Fleet) -> None:
    """Runs last in the module: nothing above made a process log an ERROR."""
    assert not fleet.all_errors(), fleet.all_errors()
