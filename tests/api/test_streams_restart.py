"""The server restarts mid-conversation; clients carry on from their old sync tokens.

Nothing acknowledged before the restart is lost, nothing is repeated, and the
tokens handed out before the restart stay valid (``server.restart()`` keeps
the database), on both engines.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.api.rooms_support import Api, q
from tests.api.test_sync import Syncer, joined, room_with, send_many, timed
from tests.support.server import ServerProcess


def test_conversation_resumes_from_old_tokens(server: ServerProcess) -> None:
    api = Api(server)
    alice, bob = api.user("alice"), api.user("bob")
    room_id = room_with(alice, bob)
    f = {"room": {"timeline": {"limit": 50}}}
    bob_sync = Syncer(bob, f)
    bob_sync.sync()
    oldest = bob_sync.since
    first = send_many(alice, room_id, 3, prefix="before-seen")
    bob_sync.sync()
    assert bob_sync.timeline_ids(room_id)[-3:] == first
    unseen = send_many(alice, room_id, 2, prefix="before-unseen")
    bob_msg = bob.send(room_id, "bob before restart")

    server.restart()

    after = send_many(alice, room_id, 2, prefix="after")
    seen_before = len(bob_sync.timeline_ids(room_id))
    body = bob_sync.sync()
    new = [e["event_id"] for e in joined(body, room_id)["timeline"]["events"]]
    assert not joined(body, room_id)["timeline"]["limited"]
    assert new == [*unseen, bob_msg, *after]
    assert len(bob_sync.timeline_ids(room_id)) == seen_before + 5
    # Nothing repeats afterwards.
    assert room_id not in bob_sync.sync()["rooms"]["join"]

    # A client still holding a token from before any message gets all of them, once.
    old = Syncer(bob, f, since=oldest)
    ids = [e["event_id"] for e in joined(old.sync(), room_id)["timeline"]["events"]]
    assert ids == [*first, *unseen, bob_msg, *after]


def test_long_poll_with_pre_restart_token_wakes_on_send(server: ServerProcess) -> None:
    api = Api(server)
    alice, bob = api.user("alice"), api.user("bob")
    room_id = room_with(alice, bob)
    bob_sync = Syncer(bob)
    bob_sync.sync()
    server.restart()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(timed, bob_sync.sync, 30_000)
        time.sleep(1.0)
        event_id = alice.send(room_id, "after restart")
        body, elapsed = future.result(timeout=40)
    assert [e["event_id"] for e in joined(body, room_id)["timeline"]["events"]] == [event_id]
    assert elapsed < 15


def test_to_device_pending_across_restart_delivered_once(server: ServerProcess) -> None:
    api = Api(server)
    alice, bob = api.user("alice"), api.user("bob")
    bob_sync = Syncer(bob)
    bob_sync.sync()
    alice.ok("PUT", "/sendToDevice/org.example.key/t1",
             {"messages": {bob.user_id: {bob.device_id: {"secret": 1}}}})

    server.restart()

    alice.ok("PUT", "/sendToDevice/org.example.key/t2",
             {"messages": {bob.user_id: {bob.device_id: {"secret": 2}}}})
    # The same transaction id after the restart is still recognised as a retry.
    alice.ok("PUT", "/sendToDevice/org.example.key/t1",
             {"messages": {bob.user_id: {bob.device_id: {"secret": 1}}}})
    got = [m["content"]["secret"] for m in bob_sync.sync()["to_device"]["events"]]
    assert got == [1, 2]
    assert bob_sync.sync(timeout=500)["to_device"]["events"] == []
    server.restart()
    assert bob_sync.sync()["to_device"]["events"] == []


def test_to_device_after_restart_reaches_a_token_past_deleted_messages(
        server: ServerProcess) -> None:
    """Delivered to-device messages are deleted; the stream must not hand their
    positions out again after a restart, or a client whose token passed them
    would never see the next message."""
    api = Api(server)
    alice, bob = api.user("alice"), api.user("bob")
    bob_sync = Syncer(bob)
    bob_sync.sync()
    for n in range(3):
        alice.ok("PUT", f"/sendToDevice/org.example.key/gone{n}",
                 {"messages": {bob.user_id: {bob.device_id: {"n": n}}}})
    assert [m["content"]["n"] for m in bob_sync.sync()["to_device"]["events"]] == [0, 1, 2]
    assert bob_sync.sync()["to_device"]["events"] == []  # acknowledged: deleted

    server.restart()

    alice.ok("PUT", "/sendToDevice/org.example.key/after",
             {"messages": {bob.user_id: {bob.device_id: {"n": "after"}}}})
    got = [m["content"]["n"] for m in bob_sync.sync()["to_device"]["events"]]
    assert got == ["after"]


def test_account_data_and_receipts_written_before_restart_arrive_once(
        server: ServerProcess) -> None:
    api = Api(server)
    alice, bob = api.user("alice"), api.user("bob")
    room_id = room_with(alice, bob)
    event_id = alice.send(room_id, "read me")
    alice_sync = Syncer(alice)
    alice_sync.sync()
    alice.ok("PUT", f"/user/{q(alice.user_id)}/account_data/org.example.pre", {"v": 1})
    bob.ok("POST", f"/rooms/{q(room_id)}/receipt/m.read/{q(event_id)}", {})

    server.restart()

    body = alice_sync.sync()
    assert body["account_data"]["events"] == [{"type": "org.example.pre", "content": {"v": 1}}]
    receipts = [e for e in joined(body, room_id)["ephemeral"]["events"]
                if e["type"] == "m.receipt"]
    assert bob.user_id in receipts[0]["content"][event_id]["m.read"]
    again = alice_sync.sync()
    assert again["account_data"]["events"] == []
    assert room_id not in again["rooms"]["join"]


def typing_in(body: dict[str, Any], room_id: str) -> list[str] | None:
    room = body["rooms"]["join"].get(room_id)
    for e in (room or {}).get("ephemeral", {}).get("events", []):
        if e["type"] == "m.typing":
            return list(e["content"]["user_ids"])
    return None


def test_typing_after_restart_reaches_clients_with_old_tokens(server: ServerProcess) -> None:
    """Typing is in memory; a client whose token is from before the restart still sees it."""
    api = Api(server)
    alice, bob = api.user("alice"), api.user("bob")
    room_id = room_with(alice, bob)
    bob_sync = Syncer(bob)
    bob_sync.sync()
    # Move the typing stream along before the restart, so bob's token is ahead of a fresh one.
    for _ in range(3):
        alice.ok("PUT", f"/rooms/{q(room_id)}/typing/{q(alice.user_id)}", {"typing": True})
        alice.ok("PUT", f"/rooms/{q(room_id)}/typing/{q(alice.user_id)}", {"typing": False})
    bob_sync.sync()

    server.restart()

    alice.ok("PUT", f"/rooms/{q(room_id)}/typing/{q(alice.user_id)}",
             {"typing": True, "timeout": 30000})
    deadline = time.monotonic() + 5
    seen = None
    while seen is None and time.monotonic() < deadline:
        seen = typing_in(bob_sync.sync(timeout=1000), room_id)
    assert seen == [alice.user_id], "bob never saw alice typing after the restart"
