"""HTTP pushers deliver to a push gateway, on both engines: what a phone
would be told (counts, tweaks, priority, formats), badge updates after
reading, a gateway that is down for a while, rejected pushkeys, and a
restart in between that neither repeats nor loses a notification."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.rooms_support import Api, User, q
from tests.api.test_sync import new_user, room_with
from tests.support.postgres import PostgresServer
from tests.support.push_gateway import PushGateway
from tests.support.server import ServerProcess, launch_server

_keys = itertools.count()


@pytest.fixture(scope="module")
def gateway() -> Iterator[PushGateway]:
    gw = PushGateway()
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


# Loopback is blocked like any private range, except the gateway's 127.0.0.1.
NETWORK = {"ip_range_blocklist": ["127.0.0.0/8", "10.0.0.0/8"],
           "ip_range_whitelist": ["127.0.0.1/32"]}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def hs(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    pg: PostgresServer | None = (request.getfixturevalue("postgres_server")
                                 if request.param == "postgres" else None)
    proc = launch_server(request.param, pg, NETWORK)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def api(hs: ServerProcess) -> Api:
    return Api(hs)


def set_pusher(user: User, gateway: PushGateway, url: str | None = None, **data: Any) -> str:
    pushkey = f"pushkey-{next(_keys)}-{time.monotonic_ns()}"
    user.ok("POST", "/pushers/set", {
        "kind": "http", "app_id": "org.example.app", "pushkey": pushkey,
        "app_display_name": "Example", "device_display_name": "Phone", "lang": "en",
        "data": {"url": url or gateway.url, "extra": "kept", **data}})
    return pushkey


def receipt(user: User, room_id: str, event_id: str) -> None:
    user.ok("POST", f"/rooms/{q(room_id)}/receipt/m.read/{q(event_id)}", {})


def test_a_message_is_pushed_once_with_counts_and_details(api: Api,
                                                          gateway: PushGateway) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob, name="Mission Control")
    alice.ok("PUT", "/profile/" + q(alice.user_id) + "/displayname", {"displayname": "Major Tom"})
    pushkey = set_pusher(bob, gateway)
    first = alice.send(room_id, "floating")
    note = gateway.wait_event(pushkey, first)
    assert note["room_id"] == room_id
    assert note["id"] == first  # Synapse's legacy copy of event_id
    assert note["type"] == "m.room.message"
    assert note["sender"] == alice.user_id
    assert note["sender_display_name"] == "Major Tom"
    assert note["room_name"] == "Mission Control"
    assert note["content"] == {"msgtype": "m.text", "body": "floating"}
    assert note["counts"]["unread"] == 1
    # A one-to-one room's message rings (sound tweak): high priority.
    assert note["prio"] == "high"
    (device,) = note["devices"]
    assert device["app_id"] == "org.example.app" and device["pushkey"] == pushkey
    assert device["data"] == {"extra": "kept"}  # the url is not sent
    assert device["tweaks"] == {"sound": "default"}
    assert isinstance(device["pushkey_ts"], int) and device["pushkey_ts"] > 1_600_000_000
    # The second message still counts one room with unread messages.
    second = alice.send(room_id, "in a tin can")
    assert gateway.wait_event(pushkey, second)["counts"]["unread"] == 1
    assert gateway.events(pushkey) == [first, second]
    # bob's own messages are not pushed to bob.
    own = bob.send(room_id, "ground control here")
    third = alice.send(room_id, "can you hear me")
    gateway.wait_event(pushkey, third)
    assert own not in gateway.events(pushkey)


def test_mention_highlights_and_plain_group_message_is_low_priority(
        api: Api, gateway: PushGateway) -> None:
    alice, bob, carol = (new_user(api, n) for n in ("alice", "bob", "carol"))
    room_id = room_with(alice, bob, carol)
    pushkey = set_pusher(bob, gateway)
    plain = alice.send(room_id, "lunch?")
    note = gateway.wait_event(pushkey, plain)
    assert note["prio"] == "low"
    assert note["devices"][0]["tweaks"] == {}
    mention = alice.send(room_id, content={
        "msgtype": "m.text", "body": "bob?", "m.mentions": {"user_ids": [bob.user_id]}})
    note = gateway.wait_event(pushkey, mention)
    assert note["devices"][0]["tweaks"]["highlight"] is True
    assert note["prio"] == "high"


def test_event_id_only_format(api: Api, gateway: PushGateway) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    pushkey = set_pusher(bob, gateway, format="event_id_only")
    event_id = alice.send(room_id, "secret plans")
    note = gateway.wait_event(pushkey, event_id)
    assert set(note) == {"event_id", "room_id", "counts", "prio", "devices"}
    assert note["devices"][0]["data"] == {"extra": "kept", "format": "event_id_only"}


def test_reading_sends_a_badge_update(api: Api, gateway: PushGateway) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_a, room_b = room_with(alice, bob), room_with(alice, bob)
    pushkey = set_pusher(bob, gateway)
    alice.send(room_a, "one")
    last = alice.send(room_b, "two")
    assert gateway.wait_event(pushkey, last)["counts"]["unread"] == 2
    receipt(bob, room_a, alice.all_messages(room_a, limit=1)[0]["event_id"])
    badge = gateway.wait_for(pushkey, lambda n: "event_id" not in n)
    assert badge["counts"] == {"unread": 1}
    assert [d["pushkey"] for d in badge["devices"]] == [pushkey]
    receipt(bob, room_b, last)
    gateway.wait_for(pushkey, lambda n: "event_id" not in n and n["counts"]["unread"] == 0)


def test_gateway_down_for_a_while_then_backlog_delivered_in_order(
        api: Api, gateway: PushGateway) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    pushkey = set_pusher(bob, gateway)
    gateway.failures[pushkey] = 3
    sent = [alice.send(room_id, f"message {i}") for i in range(3)]
    gateway.wait_event(pushkey, sent[-1], timeout=60)
    assert gateway.failures[pushkey] == 0  # it was down, and retried
    assert gateway.events(pushkey) == sent  # each once, in order


def test_rejected_pushkey_removes_the_pusher(api: Api, gateway: PushGateway) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    kept = set_pusher(bob, gateway)
    dropped = set_pusher(bob, gateway)
    gateway.rejected.add(dropped)
    first = alice.send(room_id, "hello")
    gateway.wait_event(dropped, first)
    gateway.wait_event(kept, first)
    deadline = time.monotonic() + 30
    while dropped in [p["pushkey"] for p in bob.ok("GET", "/pushers")["pushers"]]:
        assert time.monotonic() < deadline, "the rejected pusher stayed"
        time.sleep(0.05)
    assert [p["pushkey"] for p in bob.ok("GET", "/pushers")["pushers"]] == [kept]
    second = alice.send(room_id, "again")
    gateway.wait_event(kept, second)
    assert gateway.events(dropped) == [first]


def test_gateway_in_a_blocked_range_gets_nothing(api: Api, gateway: PushGateway) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    blocked = set_pusher(bob, gateway, url=gateway.other_url)
    allowed = set_pusher(bob, gateway)
    first = alice.send(room_id, "psst")
    gateway.wait_event(allowed, first)
    second = alice.send(room_id, "psst again")
    gateway.wait_event(allowed, second)
    assert gateway.for_pushkey(blocked) == []


def test_deleted_pusher_stops(api: Api, gateway: PushGateway) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    gone, kept = set_pusher(bob, gateway), set_pusher(bob, gateway)
    bob.ok("POST", "/pushers/set", {"kind": None, "app_id": "org.example.app",
                                    "pushkey": gone})
    event_id = alice.send(room_id, "anyone?")
    gateway.wait_event(kept, event_id)
    assert gateway.for_pushkey(gone) == []


def test_restart_neither_repeats_nor_loses(api: Api, gateway: PushGateway,
                                          hs: ServerProcess) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    pushkey = set_pusher(bob, gateway)
    before = alice.send(room_id, "before the restart")
    gateway.wait_event(pushkey, before)
    # Sent while the gateway is down: still owed when the server stops.
    gateway.failures[pushkey] = 1_000_000
    owed = alice.send(room_id, "while the gateway is down")
    deadline = time.monotonic() + 30
    while not any(n.get("event_id") == owed for n in gateway.failed):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    hs.restart()
    gateway.failures[pushkey] = 0
    after = alice.send(room_id, "after the restart")
    gateway.wait_event(pushkey, after, timeout=60)
    assert gateway.events(pushkey) == [before, owed, after]
