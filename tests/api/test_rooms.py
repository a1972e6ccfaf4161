"""Rooms and events over raw HTTP, on SQLite and PostgreSQL.

createRoom, sending, state, membership, power levels, history (pagination,
context, filters), redaction, history visibility, limits and malformed input.
Every event the server returns is verified against its stored PDU (content
hash, event id, signature) when the test ends; see ``rooms_support``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.rooms_support import V3, Api, User, q
from tests.support.server import ServerProcess


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Api]:
    checker = Api(server)
    yield checker
    assert checker.verify_all() > 0


def event_ids(chunk: list[dict[str, Any]]) -> list[str]:
    return [e["event_id"] for e in chunk]


def bodies(chunk: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in chunk if e["type"] == "m.room.message"]


# -- createRoom ------------------------------------------------------------------


def test_create_room_presets(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    expected = {
        "private_chat": ("invite", "shared", "can_join"),
        "trusted_private_chat": ("invite", "shared", "can_join"),
        "public_chat": ("public", "shared", None),
    }
    for preset, (join_rule, history, guests) in expected.items():
        room = alice.create_room(preset=preset, invite=[bob.user_id])
        state = alice.state_map(room)
        assert state[("m.room.join_rules", "")]["content"]["join_rule"] == join_rule
        assert state[("m.room.history_visibility", "")]["content"] == {
            "history_visibility": history}
        guest_event = state.get(("m.room.guest_access", ""))
        if guests is None:  # spec: forbidden, which is also what no event means
            assert guest_event is None or \
                guest_event["content"]["guest_access"] == "forbidden"
        else:
            assert guest_event is not None and guest_event["content"]["guest_access"] == guests
        power = state[("m.room.power_levels", "")]["content"]
        bob_level = power.get("users", {}).get(bob.user_id, power.get("users_default", 0))
        assert bob_level == (100 if preset == "trusted_private_chat" else 0)
        assert state[("m.room.member", alice.user_id)]["content"]["membership"] == "join"
        assert state[("m.room.member", bob.user_id)]["content"]["membership"] == "invite"
        assert state[("m.room.create", "")]["sender"] == alice.user_id

    # Without a preset, visibility picks it.
    public = alice.create_room(visibility="public")
    assert alice.get_state(public, "m.room.join_rules")["join_rule"] == "public"
    assert alice.ok("GET", f"/directory/list/room/{q(public)}")["visibility"] == "public"
    private = alice.create_room()
    assert alice.get_state(private, "m.room.join_rules")["join_rule"] == "invite"
    assert alice.ok("GET", f"/directory/list/room/{q(private)}")["visibility"] == "private"
    alice.err("POST", "/createRoom", {"preset": "no_such_preset"}, status=400)
    alice.err("POST", "/createRoom", {"visibility": "secret"}, status=400)


def test_identical_create_rooms_at_once_make_distinct_rooms(api: Api) -> None:
    """In room version 12 the room id is the hash of the create event: two
    createRooms of one user in the same millisecond must still differ."""
    from concurrent.futures import ThreadPoolExecutor

    alice = api.user("alice")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: alice.req("POST", "/createRoom", {}), range(16)))
    assert [status for status, _ in answers] == [200] * 16, answers
    room_ids = {data["room_id"] for _, data in answers}
    assert len(room_ids) == 16
    for room_id in room_ids:  # each is a whole room of its own
        assert alice.state_map(room_id)[("m.room.member", alice.user_id)]["content"][
            "membership"] == "join"


def test_create_room_options(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    created = alice.ok("POST", "/createRoom", {
        "name": "The Room", "topic": "All about it", "room_alias_name": "theroom",
        "invite": [bob.user_id], "is_direct": True,
        "initial_state": [
            {"type": "m.room.guest_access", "content": {"guest_access": "forbidden"}},
            {"type": "org.example.custom", "state_key": "k1", "content": {"n": 1}},
        ],
        "power_level_content_override": {"events_default": 10, "users": {bob.user_id: 42}},
        "creation_content": {"m.federate": False},
    })
    room = created["room_id"]
    assert created["room_alias"] == "#theroom:test.localhost"
    state = alice.state_map(room)
    assert state[("m.room.name", "")]["content"] == {"name": "The Room"}
    assert state[("m.room.topic", "")]["content"]["topic"] == "All about it"
    assert state[("m.room.canonical_alias", "")]["content"]["alias"] == "#theroom:test.localhost"
    assert state[("m.room.guest_access", "")]["content"] == {"guest_access": "forbidden"}
    assert state[("org.example.custom", "k1")]["content"] == {"n": 1}
    assert state[("m.room.create", "")]["content"]["m.federate"] is False
    power = state[("m.room.power_levels", "")]["content"]
    assert power["events_default"] == 10
    assert power["users"][bob.user_id] == 42
    assert power["state_default"] == 50  # the rest of the defaults stay
    invite = state[("m.room.member", bob.user_id)]
    assert invite["content"]["membership"] == "invite"
    assert invite["content"].get("is_direct") is True
    resolved = alice.ok("GET", f"/directory/room/{q('#theroom:test.localhost')}")
    assert resolved["room_id"] == room

    # The alias is taken now; nothing is created for the second attempt.
    before = alice.ok("GET", "/joined_rooms")["joined_rooms"]
    alice.err("POST", "/createRoom", {"room_alias_name": "theroom"}, status=400,
              errcode="M_ROOM_IN_USE")
    assert alice.ok("GET", "/joined_rooms")["joined_rooms"] == before

    # v12 creators have no power level to give: refused before anything is created.
    alice.err("POST", "/createRoom", {"power_level_content_override": {
        "users": {alice.user_id: 100}}}, status=400, errcode="M_BAD_JSON")
    assert alice.ok("GET", "/joined_rooms")["joined_rooms"] == before
    # Older versions do have creators in `users`.
    v10 = alice.create_room(room_version="10", power_level_content_override={
        "users": {alice.user_id: 100, bob.user_id: 42}})
    assert alice.get_state(v10, "m.room.power_levels")["users"][bob.user_id] == 42

    # Bob accepts; the room shows up for him.
    bob.join(room)
    assert room in bob.ok("GET", "/joined_rooms")["joined_rooms"]


@pytest.mark.parametrize("version", ["6", "10", "11", "12"])
def test_create_room_versions(api: Api, version: str) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    room = alice.create_room(room_version=version, preset="public_chat", name=f"v{version}")
    create = alice.ok("GET", f"/rooms/{q(room)}/state/m.room.create/?format=event")
    assert create["content"]["room_version"] == version
    if int(version) >= 11:
        assert "creator" not in create["content"]
    else:
        assert create["content"]["creator"] == alice.user_id
    if version == "12":
        # v12: the room id is the create event's reference hash.
        assert room == "!" + create["event_id"][1:]
        power = alice.get_state(room, "m.room.power_levels")
        assert alice.user_id not in power.get("users", {})  # creators are implicit
    else:
        assert room.endswith(":test.localhost")
    bob.join(room)
    bob.send(room, "hi in v" + version)
    alice.put_state(room, "m.room.topic", {"topic": "versioned"})
    msgs = alice.all_messages(room)
    assert bodies(msgs) == ["hi in v" + version]
    assert msgs[-1]["type"] == "m.room.create"

    for bad in ("999", "", "v10"):
        alice.err("POST", "/createRoom", {"room_version": bad}, status=400,
                  errcode="M_UNSUPPORTED_ROOM_VERSION")
    # A version is a string: a number is malformed JSON, not an unknown version.
    alice.err("POST", "/createRoom", {"room_version": 6}, status=400, errcode="M_BAD_JSON")


# -- sending -------------------------------------------------------------------------


def test_send_is_idempotent_per_transaction(api: Api) -> None:
    alice = api.user("alice")
    room = alice.create_room()
    first = alice.send(room, "once", txn_id="txn-1")
    again = alice.send(room, "once (retry)", txn_id="txn-1")
    assert again == first
    chunk = alice.all_messages(room)
    assert event_ids(chunk).count(first) == 1
    assert bodies(chunk) == ["once"]
    mine = next(e for e in chunk if e["event_id"] == first)
    assert mine["unsigned"]["transaction_id"] == "txn-1"

    # Another device of the same user has its own transaction ids.
    status, login = api.server.request("POST", V3 + "/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "correct horse"})
    assert status == 200, login
    other = User(api, alice.user_id, login["access_token"], login["device_id"])
    second = other.send(room, "other device", txn_id="txn-1")
    assert second != first
    chunk = other.all_messages(room)
    assert bodies(chunk) == ["other device", "once"]
    by_id = {e["event_id"]: e for e in chunk}
    assert by_id[second]["unsigned"]["transaction_id"] == "txn-1"
    assert "transaction_id" not in by_id[first]["unsigned"]  # not this device's

    # Redactions with a txn id are idempotent too.
    r1 = alice.ok("PUT", f"/rooms/{q(room)}/redact/{q(first)}/r-1", {"reason": "oops"})
    r2 = alice.ok("PUT", f"/rooms/{q(room)}/redact/{q(first)}/r-1", {"reason": "oops"})
    assert r1["event_id"] == r2["event_id"]
    redactions = [e for e in alice.all_messages(room) if e["type"] == "m.room.redaction"]
    assert len(redactions) == 1


def test_send_requires_membership(api: Api) -> None:
    alice, eve = api.user("alice"), api.user("eve")
    room = alice.create_room(preset="public_chat")
    alice.send(room, "members only")
    count = len(alice.all_messages(room))
    eve.err("POST", f"/rooms/{q(room)}/send/m.room.message", {"body": "x", "msgtype": "m.text"},
            status=403, errcode="M_FORBIDDEN")
    eve.err("PUT", f"/rooms/{q(room)}/send/m.room.message/t1", {"body": "x"},
            status=403, errcode="M_FORBIDDEN")
    eve.err("PUT", f"/rooms/{q(room)}/state/m.room.topic", {"topic": "eve was here"},
            status=403, errcode="M_FORBIDDEN")
    eve.err("PUT", f"/rooms/{q('!nosuchroom:test.localhost')}/send/m.room.message/t2",
            {"body": "x"}, status=403, errcode="M_FORBIDDEN")
    # An invite is not a join either.
    carol = api.user("carol")
    private = alice.create_room()
    alice.invite(private, carol.user_id)
    carol.err("PUT", f"/rooms/{q(private)}/send/m.room.message/t3", {"body": "x"},
              status=403, errcode="M_FORBIDDEN")
    assert len(alice.all_messages(room)) == count
    alice.err("GET", f"/rooms/{q(room)}/state/m.room.topic", status=404)  # eve's topic isn't


def test_state_put_and_get(api: Api) -> None:
    alice = api.user("alice")
    room = alice.create_room()
    # No state key, and an explicitly empty one (trailing slash): the same state.
    first = alice.ok("PUT", f"/rooms/{q(room)}/state/m.room.topic", {"topic": "one"})
    second = alice.ok("PUT", f"/rooms/{q(room)}/state/m.room.topic/", {"topic": "two"})
    assert first["event_id"] != second["event_id"]
    assert alice.ok("GET", f"/rooms/{q(room)}/state/m.room.topic") == {"topic": "two"}
    assert alice.ok("GET", f"/rooms/{q(room)}/state/m.room.topic/") == {"topic": "two"}
    full = alice.ok("GET", f"/rooms/{q(room)}/state/m.room.topic?format=event")
    assert full["event_id"] == second["event_id"]
    assert full["state_key"] == ""
    assert full["unsigned"]["prev_content"] == {"topic": "one"}

    # A state key, including ones that need quoting.
    for key in ("k", "with space", "@alice:test.localhost", "a/b"):
        alice.put_state(room, "org.example.thing", {"key": key}, state_key=key)
        assert alice.get_state(room, "org.example.thing", key) == {"key": key}
    alice.err("GET", f"/rooms/{q(room)}/state/org.example.thing/missing", status=404,
              errcode="M_NOT_FOUND")
    alice.err("GET", f"/rooms/{q(room)}/state/org.example.nothing", status=404,
              errcode="M_NOT_FOUND")

    state = alice.ok("GET", f"/rooms/{q(room)}/state")
    keys = {(e["type"], e["state_key"]) for e in state}
    assert ("m.room.create", "") in keys and ("m.room.topic", "") in keys
    assert ("org.example.thing", "a/b") in keys
    assert len(keys) == len(state)  # one event per state key: current state only
    topic = next(e for e in state if e["type"] == "m.room.topic")
    assert topic["content"] == {"topic": "two"}
    for event in state:
        assert event["room_id"] == room and "event_id" in event and "sender" in event
        assert "hashes" not in event and "signatures" not in event  # client format


# -- membership --------------------------------------------------------------------


def test_membership_lifecycle(api: Api) -> None:
    alice, bob, carol = api.user("alice"), api.user("bob"), api.user("carol")
    room = alice.create_room(name="private")
    before = alice.state_ids(room)

    # Not invited: cannot join, and nothing changes.
    bob.err("POST", f"/rooms/{q(room)}/join", {}, status=403, errcode="M_FORBIDDEN")
    bob.err("POST", f"/join/{q(room)}", {}, status=403, errcode="M_FORBIDDEN")
    assert alice.state_ids(room) == before
    assert room not in bob.ok("GET", "/joined_rooms")["joined_rooms"]

    alice.invite(room, bob.user_id)
    assert alice.membership(room, bob.user_id) == "invite"
    bob.ok("POST", f"/rooms/{q(room)}/join", {})
    assert alice.membership(room, bob.user_id) == "join"
    assert room in bob.ok("GET", "/joined_rooms")["joined_rooms"]
    joined = alice.ok("GET", f"/rooms/{q(room)}/joined_members")["joined"]
    assert set(joined) == {alice.user_id, bob.user_id}
    assert joined[bob.user_id]["display_name"] == "bob"

    # Leave, then forget.
    bob.err("POST", f"/rooms/{q(room)}/forget", {}, status=400)  # still joined
    bob.leave(room)
    assert alice.membership(room, bob.user_id) == "leave"
    assert room not in bob.ok("GET", "/joined_rooms")["joined_rooms"]
    bob.ok("POST", f"/rooms/{q(room)}/forget", {})

    # Kick: needs power; the kicked user is out, with the reason.
    alice.invite(room, carol.user_id)
    carol.join(room)
    alice.invite(room, bob.user_id)
    bob.join(room)
    bob.err("POST", f"/rooms/{q(room)}/kick", {"user_id": carol.user_id}, status=403,
            errcode="M_FORBIDDEN")
    assert alice.membership(room, carol.user_id) == "join"
    alice.ok("POST", f"/rooms/{q(room)}/kick", {"user_id": carol.user_id, "reason": "bye"})
    member = alice.get_state(room, "m.room.member", carol.user_id)
    assert member["membership"] == "leave" and member["reason"] == "bye"
    kick = alice.ok("GET", f"/rooms/{q(room)}/state/m.room.member/{q(carol.user_id)}"
                           "?format=event")
    assert kick["sender"] == alice.user_id

    # Ban: the banned user cannot come back, even when invited, until unbanned.
    bob.err("POST", f"/rooms/{q(room)}/ban", {"user_id": carol.user_id}, status=403,
            errcode="M_FORBIDDEN")
    alice.ok("POST", f"/rooms/{q(room)}/ban", {"user_id": carol.user_id, "reason": "spam"})
    assert alice.membership(room, carol.user_id) == "ban"
    alice.err("POST", f"/rooms/{q(room)}/invite", {"user_id": carol.user_id}, status=403,
              errcode="M_FORBIDDEN")
    carol.err("POST", f"/rooms/{q(room)}/join", {}, status=403, errcode="M_FORBIDDEN")
    assert alice.membership(room, carol.user_id) == "ban"
    bob.err("POST", f"/rooms/{q(room)}/unban", {"user_id": carol.user_id}, status=403,
            errcode="M_FORBIDDEN")
    alice.ok("POST", f"/rooms/{q(room)}/unban", {"user_id": carol.user_id})
    assert alice.membership(room, carol.user_id) == "leave"
    carol.err("POST", f"/rooms/{q(room)}/join", {}, status=403)  # still invite-only
    alice.invite(room, carol.user_id)
    carol.join(room)
    assert alice.membership(room, carol.user_id) == "join"

    # Banning someone who never was in the room works too.
    dave = api.user("dave")
    alice.ok("POST", f"/rooms/{q(room)}/ban", {"user_id": dave.user_id})
    assert alice.membership(room, dave.user_id) == "ban"

    # Invites to unknown local users fail, and change nothing.
    alice.err("POST", f"/rooms/{q(room)}/invite", {"user_id": "@nobody:test.localhost"},
              status=404)
    assert ("m.room.member", "@nobody:test.localhost") not in alice.state_map(room)
    alice.err("POST", f"/rooms/{q(room)}/invite", {}, status=400,
              errcode=("M_BAD_JSON", "M_MISSING_PARAM"))


def test_knock(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    room = alice.create_room(room_version="10", initial_state=[
        {"type": "m.room.join_rules", "content": {"join_rule": "knock"}}])
    assert alice.get_state(room, "m.room.join_rules")["join_rule"] == "knock"
    bob.err("POST", f"/rooms/{q(room)}/join", {}, status=403, errcode="M_FORBIDDEN")
    assert bob.ok("POST", f"/knock/{q(room)}", {"reason": "let me in"}) == {"room_id": room}
    member = alice.get_state(room, "m.room.member", bob.user_id)
    assert member["membership"] == "knock" and member["reason"] == "let me in"
    # A knocker is no member: no reading, no sending.
    bob.err("PUT", f"/rooms/{q(room)}/send/m.room.message/k1", {"body": "x"}, status=403)
    alice.invite(room, bob.user_id)
    bob.join(room)
    assert alice.membership(room, bob.user_id) == "join"

    # Room v6 has no knocking.
    old = alice.create_room(room_version="6", initial_state=[
        {"type": "m.room.join_rules", "content": {"join_rule": "knock"}}])
    bob.err("POST", f"/knock/{q(old)}", {}, status=403, errcode="M_FORBIDDEN")
    assert alice.membership(old, bob.user_id) is None

    # Knocking on a public or invite-only room is refused.
    public = alice.create_room(preset="public_chat", room_version="10")
    bob.err("POST", f"/knock/{q(public)}", {}, status=403, errcode="M_FORBIDDEN")


def test_power_levels_enforced(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    room = alice.create_room(preset="public_chat", name="original")
    bob.join(room)
    bob.err("PUT", f"/rooms/{q(room)}/state/m.room.name", {"name": "bob's"}, status=403,
            errcode="M_FORBIDDEN")
    bob.err("PUT", f"/rooms/{q(room)}/state/m.room.power_levels",
            {"users": {bob.user_id: 100}}, status=403, errcode="M_FORBIDDEN")
    assert alice.get_state(room, "m.room.name") == {"name": "original"}
    bob.send(room, "messages are fine at level 0")

    power = alice.get_state(room, "m.room.power_levels")
    power["users"][bob.user_id] = 50
    alice.put_state(room, "m.room.power_levels", power)
    bob.put_state(room, "m.room.name", {"name": "bob's"})
    assert alice.get_state(room, "m.room.name") == {"name": "bob's"}
    # 50 is still not enough to give yourself 100, nor to change power levels (100).
    power["users"][bob.user_id] = 100
    bob.err("PUT", f"/rooms/{q(room)}/state/m.room.power_levels", power, status=403,
            errcode="M_FORBIDDEN")

    # events_default raised: ordinary messages need power now.
    carol = api.user("carol")
    carol.join(room)
    power = alice.get_state(room, "m.room.power_levels")
    power["events_default"] = 10
    alice.put_state(room, "m.room.power_levels", power)
    carol.err("PUT", f"/rooms/{q(room)}/send/m.room.message/c1", {"body": "x"}, status=403,
              errcode="M_FORBIDDEN")


# -- reading history -------------------------------------------------------------------


def test_messages_paginate_back_to_creation(api: Api) -> None:
    alice = api.user("alice")
    room = alice.create_room(name="history")
    sent = [alice.send(room, f"m{i}") for i in range(23)]
    everything = alice.all_messages(room)
    assert everything[-1]["type"] == "m.room.create"

    seen: list[dict[str, Any]] = []
    page = alice.messages(room, dir="b", limit=5)
    pages = 1
    while True:
        assert len(page["chunk"]) <= 5
        seen.extend(page["chunk"])
        if "end" not in page:
            break
        assert page["chunk"], "an end token with an empty chunk"
        page = alice.messages(room, dir="b", limit=5, **{"from": page["end"]})
        pages += 1
        assert pages < 50
    assert pages >= 6
    assert event_ids(seen) == event_ids(everything)  # no gaps, no duplicates
    assert len(set(event_ids(seen))) == len(seen)
    assert seen[-1]["type"] == "m.room.create"
    assert [e["event_id"] for e in seen if e["type"] == "m.room.message"] == sent[::-1]
    stamps = [e["origin_server_ts"] for e in seen]
    assert stamps == sorted(stamps, reverse=True)

    # Forwards from the beginning gives the same events in order.
    forwards: list[dict[str, Any]] = []
    page = alice.messages(room, dir="f", limit=7)
    while page["chunk"]:
        forwards.extend(page["chunk"])
        if "end" not in page:
            break
        page = alice.messages(room, dir="f", limit=7, **{"from": page["end"]})
    assert event_ids(forwards) == event_ids(everything)[::-1]

    # Forwards from a point in the middle (a backwards `end`) continues from there.
    first_page = alice.messages(room, dir="b", limit=3)
    later = alice.messages(room, dir="f", limit=10, **{"from": first_page["end"]})
    assert event_ids(later["chunk"]) == event_ids(first_page["chunk"])[::-1]
    # `to` bounds a page.
    bounded = alice.messages(room, dir="b", limit=100, to=first_page["end"])
    assert event_ids(bounded["chunk"]) == event_ids(first_page["chunk"])

    alice.err("GET", f"/rooms/{q(room)}/messages?dir=x", status=400)
    alice.err("GET", f"/rooms/{q(room)}/messages?dir=b&from=garbage", status=400)


def test_messages_filters(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    alice.send(room, "a1")
    bob.send(room, "b1")
    alice.send(room, "", etype="org.example.ping", content={"n": 1})
    bob.send(room, "b2")

    def types(chunk: list[dict[str, Any]]) -> list[str]:
        return [e["type"] for e in chunk]

    only_messages = alice.all_messages(room, filter={"types": ["m.room.message"]})
    assert bodies(only_messages) == ["b2", "b1", "a1"]
    assert set(types(only_messages)) == {"m.room.message"}
    no_messages = alice.all_messages(room, filter={"not_types": ["m.room.message"]})
    assert "m.room.message" not in types(no_messages) and "org.example.ping" in types(no_messages)
    wildcard = alice.all_messages(room, filter={"types": ["m.room.*"]})
    assert "org.example.ping" not in types(wildcard) and "m.room.create" in types(wildcard)
    from_bob = alice.all_messages(room, filter={"senders": [bob.user_id]})
    assert {e["sender"] for e in from_bob} == {bob.user_id}
    assert bodies(from_bob) == ["b2", "b1"]
    not_bob = alice.all_messages(room, filter={"not_senders": [bob.user_id],
                                               "types": ["m.room.message"]})
    assert bodies(not_bob) == ["a1"]
    limited = alice.messages(room, dir="b", filter={"limit": 2, "types": ["m.room.message"]})
    assert bodies(limited["chunk"]) == ["b2", "b1"] and "end" in limited
    alice.err("GET", f"/rooms/{q(room)}/messages?dir=b&filter=%7Bnot%20json", status=400,
              errcode="M_NOT_JSON")


def test_context_event_and_members(api: Api) -> None:
    alice, bob, carol = api.user("alice"), api.user("bob"), api.user("carol")
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    ids = [alice.send(room, f"c{i}") for i in range(7)]
    context = alice.ok("GET", f"/rooms/{q(room)}/context/{q(ids[3])}?limit=4")
    assert context["event"]["event_id"] == ids[3]
    assert event_ids(context["events_before"]) == [ids[2], ids[1]]  # reverse-chronological
    assert event_ids(context["events_after"]) == [ids[4], ids[5]]
    assert {e["type"] for e in context["state"]} >= {"m.room.create", "m.room.member"}
    after = alice.messages(room, dir="f", limit=10, **{"from": context["end"]})
    assert event_ids(after["chunk"]) == [ids[6]]
    before = alice.messages(room, dir="b", limit=1, **{"from": context["start"]})
    assert event_ids(before["chunk"]) == [ids[0]]
    alice.err("GET", f"/rooms/{q(room)}/context/{q('$nope')}", status=404, errcode="M_NOT_FOUND")

    event = alice.ok("GET", f"/rooms/{q(room)}/event/{q(ids[0])}")
    assert event["content"]["body"] == "c0" and event["room_id"] == room
    assert event["sender"] == alice.user_id and isinstance(event["unsigned"]["age"], int)
    alice.err("GET", f"/rooms/{q(room)}/event/{q('$missing')}", status=404,
              errcode="M_NOT_FOUND")
    other = alice.create_room()
    alice.err("GET", f"/rooms/{q(other)}/event/{q(ids[0])}", status=404, errcode="M_NOT_FOUND")

    alice.invite(room, carol.user_id)
    bob.leave(room)
    members = alice.ok("GET", f"/rooms/{q(room)}/members")["chunk"]
    by_user = {e["state_key"]: e["content"]["membership"] for e in members}
    assert by_user == {alice.user_id: "join", bob.user_id: "leave", carol.user_id: "invite"}
    joined = alice.ok("GET", f"/rooms/{q(room)}/members?membership=join")["chunk"]
    assert [e["state_key"] for e in joined] == [alice.user_id]
    not_left = alice.ok("GET", f"/rooms/{q(room)}/members?not_membership=leave")["chunk"]
    assert {e["state_key"] for e in not_left} == {alice.user_id, carol.user_id}
    joined_members = alice.ok("GET", f"/rooms/{q(room)}/joined_members")["joined"]
    assert set(joined_members) == {alice.user_id}
    assert alice.ok("GET", "/joined_rooms")["joined_rooms"] == [room, other] or \
        set(alice.ok("GET", "/joined_rooms")["joined_rooms"]) == {room, other}
    # Someone who was never in a (non world-readable) room cannot list its members.
    dave = api.user("dave")
    dave.err("GET", f"/rooms/{q(room)}/members", status=403, errcode="M_FORBIDDEN")
    dave.err("GET", f"/rooms/{q(room)}/joined_members", status=403, errcode="M_FORBIDDEN")


def test_redaction(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    room = alice.create_room(preset="public_chat", room_version="10")
    bob.join(room)
    from_bob = bob.send(room, "secret", content={"msgtype": "m.text", "body": "secret",
                                                 "extra": {"nested": True}})
    from_alice = alice.send(room, "alice's")

    # An ordinary user cannot redact someone else's event.
    bob.err("POST", f"/rooms/{q(room)}/redact/{q(from_alice)}", {}, status=403,
            errcode="M_FORBIDDEN")
    assert alice.ok("GET", f"/rooms/{q(room)}/event/{q(from_alice)}")["content"]["body"] \
        == "alice's"
    # ...but a moderator can redact anyone's, and anyone their own (below).
    redaction = alice.ok("PUT", f"/rooms/{q(room)}/redact/{q(from_bob)}/r1",
                         {"reason": "spoilers"})["event_id"]
    redacted = alice.ok("GET", f"/rooms/{q(room)}/event/{q(from_bob)}")
    assert redacted["content"] == {}
    because = redacted["unsigned"]["redacted_because"]
    assert because["event_id"] == redaction and because["type"] == "m.room.redaction"
    assert because["content"].get("reason") == "spoilers"
    assert because["redacts"] == from_bob
    in_history = {e["event_id"]: e for e in alice.all_messages(room)}
    assert in_history[from_bob]["content"] == {}
    assert in_history[redaction]["redacts"] == from_bob
    assert in_history[redaction]["content"]["redacts"] == from_bob  # for newer clients
    self_redaction = bob.ok("POST", f"/rooms/{q(room)}/redact/{q(bob.send(room, 'mine'))}",
                            {})["event_id"]
    assert self_redaction.startswith("$")
    alice.err("POST", f"/rooms/{q(room)}/redact/{q('$unknown')}", {}, status=404)

    # Redacting a state event keeps the keys the algorithm protects.
    rules = alice.ok("GET", f"/rooms/{q(room)}/state/m.room.join_rules?format=event")
    alice.ok("POST", f"/rooms/{q(room)}/redact/{q(rules['event_id'])}", {})
    redacted_rules = alice.ok("GET", f"/rooms/{q(room)}/event/{q(rules['event_id'])}")
    assert redacted_rules["content"] == {"join_rule": "public"}

    # v11: the redaction's target is in its content.
    v11 = alice.create_room(room_version="11")
    target = alice.send(v11, "to go")
    rid = alice.ok("POST", f"/rooms/{q(v11)}/redact/{q(target)}", {})["event_id"]
    event = alice.ok("GET", f"/rooms/{q(v11)}/event/{q(rid)}")
    assert event["content"]["redacts"] == target
    assert event["redacts"] == target  # also top-level, for older clients
    assert alice.ok("GET", f"/rooms/{q(v11)}/event/{q(target)}")["content"] == {}


# -- history visibility -------------------------------------------------------------


@pytest.mark.parametrize("visibility", ["joined", "shared"])
def test_history_visibility_for_outsiders(api: Api, visibility: str) -> None:
    alice, bob, eve = api.user("alice"), api.user("bob"), api.user("eve")
    room = alice.create_room(preset="public_chat", initial_state=[
        {"type": "m.room.history_visibility", "content": {"history_visibility": visibility}}])
    early = alice.send(room, "before bob")
    # Someone who never was in the room sees nothing at all.
    eve.err("GET", f"/rooms/{q(room)}/messages?dir=b", status=403, errcode="M_FORBIDDEN")
    eve.err("GET", f"/rooms/{q(room)}/state", status=403, errcode="M_FORBIDDEN")
    eve.err("GET", f"/rooms/{q(room)}/state/m.room.name", status=403, errcode="M_FORBIDDEN")
    # An event one may not read is "not found" (the spec's answer); /context
    # refuses a room one may not read.
    eve.err("GET", f"/rooms/{q(room)}/event/{q(early)}", status=404, errcode="M_NOT_FOUND")
    eve.err("GET", f"/rooms/{q(room)}/context/{q(early)}", status=403, errcode="M_FORBIDDEN")
    eve.err("GET", f"/rooms/{q(room)}/aliases", status=403, errcode="M_FORBIDDEN")

    bob.join(room)
    during = alice.send(room, "while bob is here")
    bobs = bob.all_messages(room)
    if visibility == "joined":
        assert bodies(bobs) == ["while bob is here"]
        status, _ = bob.req("GET", f"/rooms/{q(room)}/event/{q(early)}")
        assert status in (403, 404)
    else:
        assert bodies(bobs) == ["while bob is here", "before bob"]
    assert during in event_ids(bobs)

    bob.leave(room)
    alice.put_state(room, "m.room.topic", {"topic": "after bob left"})
    after = alice.send(room, "after bob left")
    bobs = bob.all_messages(room)
    assert "after bob left" not in bodies(bobs)
    assert after not in event_ids(bobs)
    assert during in event_ids(bobs)
    status, _ = bob.req("GET", f"/rooms/{q(room)}/event/{q(after)}")
    assert status in (403, 404)
    # Bob's view of the state is the state when he left.
    state = bob.state_map(room)
    assert ("m.room.topic", "") not in state
    assert state[("m.room.member", bob.user_id)]["content"]["membership"] == "leave"


def test_world_readable_rooms(api: Api) -> None:
    alice, eve = api.user("alice"), api.user("eve")
    room = alice.create_room(preset="private_chat", topic="open book", initial_state=[
        {"type": "m.room.history_visibility",
         "content": {"history_visibility": "world_readable"}}])
    message = alice.send(room, "anyone can read this")
    assert bodies(eve.all_messages(room)) == ["anyone can read this"]
    assert eve.get_state(room, "m.room.topic") == {"topic": "open book"}
    assert ("m.room.create", "") in eve.state_map(room)
    assert eve.ok("GET", f"/rooms/{q(room)}/event/{q(message)}")["event_id"] == message
    # Reading is not joining.
    eve.err("PUT", f"/rooms/{q(room)}/send/m.room.message/e1", {"body": "x"}, status=403)
    eve.err("POST", f"/rooms/{q(room)}/join", {}, status=403)
    assert alice.membership(room, eve.user_id) is None


# -- limits and bad input -------------------------------------------------------------


def test_oversized_events_are_rejected(api: Api) -> None:
    alice = api.user("alice")
    room = alice.create_room()
    count = len(alice.all_messages(room))
    big = {"msgtype": "m.text", "body": "x" * 66000}
    alice.err("PUT", f"/rooms/{q(room)}/send/m.room.message/big", big, status=413,
              errcode="M_TOO_LARGE")
    alice.err("PUT", f"/rooms/{q(room)}/state/org.example.big", {"v": "y" * 66000},
              status=413, errcode="M_TOO_LARGE")
    # Just under the PDU limit in content, but over it once the envelope is added.
    alice.err("POST", f"/rooms/{q(room)}/send/m.room.message",
              {"body": "z" * 65400, "msgtype": "m.text"}, status=413, errcode="M_TOO_LARGE")
    assert len(alice.all_messages(room)) == count
    alice.err("GET", f"/rooms/{q(room)}/state/org.example.big", status=404)
    # The transaction id was not used up by the failure.
    alice.send(room, "small", txn_id="big")
    assert bodies(alice.all_messages(room)) == ["small"]
    # A reasonably large event is fine.
    alice.send(room, "w" * 30000)


def test_malformed_bodies_change_nothing(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    rooms_before = alice.ok("GET", "/joined_rooms")["joined_rooms"]
    alice.err("POST", "/createRoom", raw=b"{not json", status=400, errcode="M_NOT_JSON")
    alice.err("POST", "/createRoom", raw=b"[1, 2]", status=400, errcode="M_BAD_JSON")
    alice.err("POST", "/createRoom", {"invite": "@bob:test.localhost"}, status=400,
              errcode="M_BAD_JSON")
    alice.err("POST", "/createRoom", {"initial_state": [{"content": {}}]}, status=400,
              errcode="M_BAD_JSON")
    alice.err("POST", "/createRoom", {"name": 5}, status=400, errcode="M_BAD_JSON")
    alice.err("POST", "/createRoom", {"power_level_content_override": []}, status=400,
              errcode="M_BAD_JSON")
    alice.err("POST", "/createRoom", {"initial_state": [
        {"type": "m.room.topic", "state_key": 5, "content": {"topic": "x"}}]}, status=400,
        errcode="M_BAD_JSON")
    alice.err("POST", "/createRoom", {"topic": "x", "initial_state": [
        {"type": "org.example.float", "content": {"f": 0.5}}]}, status=400,
        errcode="M_BAD_JSON")
    alice.err("POST", "/createRoom", {"room_alias_name": "toolong", "name": "n" * 70000},
              status=413, errcode="M_TOO_LARGE")
    alice.err("POST", "/createRoom", {"room_alias_name": "nobody",
                                      "invite": ["@nobody:test.localhost"]}, status=404)
    # Initial state the auth rules refuse is found before anything is written:
    # room creation is all or nothing.
    rooms_in_db = api.count_rooms()
    alice.err("POST", "/createRoom", {"room_alias_name": "badpower", "initial_state": [
        {"type": "m.room.power_levels", "content": {"users": {alice.user_id: "high"}}}]},
        status=403)
    alice.err("POST", "/createRoom", {"room_version": "10", "power_level_content_override": {
        "users": {alice.user_id: 0}, "state_default": 100}}, status=403)
    assert api.count_rooms() == rooms_in_db
    assert alice.ok("GET", "/joined_rooms")["joined_rooms"] == rooms_before
    for alias in ("toolong", "nobody", "badpower"):
        alice.err("GET", f"/directory/room/{q(f'#{alias}:test.localhost')}", status=404)

    room = alice.create_room(preset="public_chat")
    before = alice.all_messages(room)
    path = f"/rooms/{q(room)}/send/m.room.message/t1"
    alice.err("PUT", path, raw=b"{\"body\": ", status=400, errcode="M_NOT_JSON")
    alice.err("PUT", path, raw=b"\"just a string\"", status=400, errcode="M_BAD_JSON")
    alice.err("PUT", path, raw=b"\xff\xfe", status=400, errcode="M_NOT_JSON")
    # Room v6+ events are canonical JSON: no floats, no out-of-range integers.
    alice.err("PUT", path, {"body": "x", "n": 1.5}, status=400, errcode="M_BAD_JSON")
    alice.err("PUT", path, {"body": "x", "n": 2 ** 60}, status=400, errcode="M_BAD_JSON")
    alice.err("PUT", f"/rooms/{q(room)}/state/m.room.topic", raw=b"nope", status=400,
              errcode="M_NOT_JSON")
    alice.err("PUT", f"/rooms/{q(room)}/state/m.room.member/{q(bob.user_id)}", {},
              status=400, errcode="M_BAD_JSON")
    alice.err("POST", f"/rooms/{q(room)}/kick", raw=b"{{", status=400, errcode="M_NOT_JSON")
    alice.err("POST", f"/rooms/{q(room)}/ban", {"user_id": 12}, status=400)
    assert event_ids(alice.all_messages(room)) == event_ids(before)
    # The transaction id is still free.
    alice.send(room, "finally", txn_id="t1")


def test_timestamp_to_event(api: Api) -> None:
    alice, eve = api.user("alice"), api.user("eve")
    room = alice.create_room()
    first = alice.send(room, "first")
    first_ts = alice.ok("GET", f"/rooms/{q(room)}/event/{q(first)}")["origin_server_ts"]
    time.sleep(0.02)
    second = alice.send(room, "second")
    second_ts = alice.ok("GET", f"/rooms/{q(room)}/event/{q(second)}")["origin_server_ts"]
    assert second_ts > first_ts
    base = f"/_matrix/client/v1/rooms/{q(room)}/timestamp_to_event"
    found = alice.ok("GET", f"{base}?ts={first_ts + 1}&dir=f")
    assert found == {"event_id": second, "origin_server_ts": second_ts}
    found = alice.ok("GET", f"{base}?ts={second_ts - 1}&dir=b")
    assert found == {"event_id": first, "origin_server_ts": first_ts}
    assert alice.ok("GET", f"{base}?ts={first_ts}&dir=f")["event_id"] == first
    alice.err("GET", f"{base}?ts={second_ts + 60_000}&dir=f", status=404, errcode="M_NOT_FOUND")
    alice.err("GET", f"{base}?ts=1&dir=b", status=404, errcode="M_NOT_FOUND")
    alice.err("GET", f"{base}?ts={first_ts}", status=400)
    alice.err("GET", f"{base}?dir=f", status=400)
    alice.err("GET", f"{base}?ts=abc&dir=f", status=400)
    eve.err("GET", f"{base}?ts={first_ts}&dir=f", status=403, errcode="M_FORBIDDEN")
