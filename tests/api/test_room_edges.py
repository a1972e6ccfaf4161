"""Room behaviour at the edges of the spec, over raw HTTP on both engines.

createRoom with an explicit room version (1-3 use other event formats) or
with ``invite_3pid``; joining with extra member content; the ``end`` token of
``/messages`` and the ``prev_batch`` of a short sync timeline; aliases an
``m.room.canonical_alias`` may name; the legacy ``/initialSync`` (presence,
receipts, rooms the user left).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.rooms_support import Api, User, q
from tests.api.test_sync import Syncer, fresh, joined
from tests.support.server import ServerProcess


@pytest.fixture
def api(hs: ServerProcess) -> Iterator[Api]:
    checker = Api(hs)
    yield checker
    checker.verify_all()


def new_user(api: Api, prefix: str) -> User:
    return api.user(fresh(prefix))


# -- createRoom -------------------------------------------------------------------

@pytest.mark.parametrize("version", ["1", "2", "3", "4", "10", "11"])
def test_create_room_with_an_explicit_version(api: Api, version: str) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room = alice.create_room(room_version=version, preset="public_chat")
    create = alice.state_map(room)[("m.room.create", "")]
    assert create["content"]["room_version"] == version
    bob.join(room)
    sent = bob.send(room, "in an old room")
    alice.put_state(room, "m.room.topic", {"topic": "works"})
    history = alice.all_messages(room)
    assert history[1]["event_id"] == sent and history[0]["type"] == "m.room.topic"
    # Room versions 1 and 2 name events by server; later ones by hash.
    assert (":" in sent) == (version in ("1", "2"))
    assert api.verify_all() > 0


def test_create_room_refuses_unknown_versions_and_creates_nothing(api: Api) -> None:
    alice = new_user(api, "alice")
    before = api.count_rooms()
    for version in ("999", ""):
        alice.err("POST", "/createRoom", {"room_version": version}, status=400,
                  errcode="M_UNSUPPORTED_ROOM_VERSION")
    for version in (2, None, ["11"]):
        alice.err("POST", "/createRoom", {"room_version": version}, status=400,
                  errcode="M_BAD_JSON")
    assert api.count_rooms() == before


def test_create_room_with_third_party_invites_is_refused_before_anything_exists(
        api: Api) -> None:
    alice = new_user(api, "alice")
    before = api.count_rooms()
    invite = {"id_server": "id.example.org", "id_access_token": "tok", "medium": "email",
              "address": "someone@example.org"}
    alice.err("POST", "/createRoom", {"invite_3pid": [invite], "name": "x"}, status=400,
              errcode="M_SERVER_NOT_TRUSTED")
    for bad in ({"medium": "email"}, "someone@example.org", [{"id_server": 1}]):
        alice.err("POST", "/createRoom",
                  {"invite_3pid": bad if isinstance(bad, list) else [bad]}, status=400,
                  errcode="M_BAD_JSON")
    alice.err("POST", "/createRoom", {"invite_3pid": "nope"}, status=400,
              errcode="M_BAD_JSON")
    assert api.count_rooms() == before
    assert alice.ok("GET", "/joined_rooms")["joined_rooms"] == []
    # An empty list is no invite at all.
    room = alice.create_room(invite_3pid=[])
    assert alice.ok("GET", "/joined_rooms")["joined_rooms"] == [room]
    # The same answer when inviting by 3PID into an existing room.
    alice.err("POST", f"/rooms/{q(room)}/invite", invite, status=400,
              errcode="M_SERVER_NOT_TRUSTED")


# -- joining with content ------------------------------------------------------------

@pytest.mark.parametrize("by", ["rooms_join", "join_room_id", "join_alias"])
def test_join_keeps_custom_content_and_reason(api: Api, by: str) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    alias_name = fresh("joinable")
    room = alice.create_room(preset="public_chat", room_alias_name=alias_name)
    target = {"rooms_join": f"/rooms/{q(room)}/join", "join_room_id": f"/join/{q(room)}",
              "join_alias": f"/join/{q(f'#{alias_name}:{api.server.server_name}')}"}[by]
    answer = bob.ok("POST", target, {"foo": "bar", "reason": "curious",
                                     "nested": {"a": [1, 2]}})
    assert answer == {"room_id": room}
    member = bob.get_state(room, "m.room.member", bob.user_id)
    assert member["membership"] == "join"
    assert member["foo"] == "bar" and member["nested"] == {"a": [1, 2]}
    assert member["reason"] == "curious"


def test_join_with_a_non_string_reason_is_refused(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room = alice.create_room(preset="public_chat")
    bob.err("POST", f"/join/{q(room)}", {"reason": 12}, status=400, errcode="M_BAD_JSON")
    assert alice.membership(room, bob.user_id) is None


# -- /messages end and sync prev_batch -------------------------------------------------

def test_messages_end_is_given_until_a_page_comes_back_empty(api: Api) -> None:
    alice = new_user(api, "alice")
    room = alice.create_room()
    for i in range(3):
        alice.send(room, f"m{i}")
    total = len(alice.all_messages(room))
    page = alice.messages(room, dir="b", limit=1000)
    assert len(page["chunk"]) == total and "end" in page
    last = alice.messages(room, dir="b", limit=1000, **{"from": page["end"]})
    assert last["chunk"] == [] and "end" not in last
    # Forwards from the start: the same rule.
    forwards = alice.messages(room, dir="f", limit=1000, **{"from": page["end"]})
    assert len(forwards["chunk"]) == total and "end" in forwards
    done = alice.messages(room, dir="f", limit=1000, **{"from": forwards["end"]})
    assert done["chunk"] == [] and "end" not in done


def test_prev_batch_of_a_short_timeline_pages_back_over_it(api: Api) -> None:
    alice = new_user(api, "alice")
    room = alice.create_room()
    alice.send(room, "the only message")
    timeline = joined(Syncer(alice).sync(), room)["timeline"]
    assert timeline["limited"] is False
    page = alice.messages(room, dir="b", **{"from": timeline["prev_batch"]})
    assert [e["event_id"] for e in page["chunk"]] == \
        [e["event_id"] for e in reversed(timeline["events"])][:len(page["chunk"])]
    assert page["chunk"] and "end" in page
    # An incremental timeline's prev_batch points before its first event.
    sync = Syncer(alice)
    sync.sync()
    older = alice.send(room, "older")
    newer = alice.send(room, "newer")
    incremental = joined(sync.sync(), room)["timeline"]
    assert [e["event_id"] for e in incremental["events"]] == [older, newer]
    back = alice.messages(room, dir="b", limit=1, **{"from": incremental["prev_batch"]})
    assert [e["event_id"] for e in back["chunk"]] != [newer]
    assert back["chunk"][0]["content"].get("body") == "the only message"


# -- m.room.canonical_alias ----------------------------------------------------------------

def test_canonical_alias_must_point_at_the_room(api: Api) -> None:
    alice = new_user(api, "alice")
    server = api.server.server_name
    mine, other_name = fresh("mine"), fresh("other")
    room = alice.create_room(room_alias_name=mine)
    alice.create_room(room_alias_name=other_name)
    alias, other = f"#{mine}:{server}", f"#{other_name}:{server}"
    before = alice.get_state(room, "m.room.canonical_alias")

    for content in ({"alias": f"#missing-{mine}:{server}"},
                    {"alias": other},
                    {"alias": alias, "alt_aliases": [f"#missing-{mine}:{server}"]},
                    {"alt_aliases": [alias, other]}):
        alice.err("PUT", f"/rooms/{q(room)}/state/m.room.canonical_alias", content,
                  status=400, errcode="M_BAD_ALIAS")
    for content in ({"alias": f"%{mine}:{server}"}, {"alias": 5}, {"alt_aliases": alias},
                    {"alt_aliases": ["no-hash"]}):
        alice.err("PUT", f"/rooms/{q(room)}/state/m.room.canonical_alias", content,
                  status=400, errcode="M_INVALID_PARAM")
    assert alice.get_state(room, "m.room.canonical_alias") == before

    alice.put_state(room, "m.room.canonical_alias", {"alias": alias, "alt_aliases": [alias]})
    # Another server's alias cannot be looked up from here: syntax only.
    alice.put_state(room, "m.room.canonical_alias",
                    {"alias": alias, "alt_aliases": ["#far:elsewhere.example"]})
    alice.put_state(room, "m.room.canonical_alias", {})
    assert alice.get_state(room, "m.room.canonical_alias") == {}


# -- legacy /initialSync ----------------------------------------------------------------

def _initial_sync(user: User, **params: Any) -> Any:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return user.ok("GET", f"/initialSync?{query}")


def test_initial_sync_has_presence_and_receipts(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    for user in (alice, bob):
        user.ok("PUT", f"/presence/{q(user.user_id)}/status",
                {"presence": "online", "status_msg": "here"})
    message = alice.send(room, "read me")
    bob.ok("POST", f"/rooms/{q(room)}/receipt/m.read/{q(message)}", {})
    stranger = new_user(api, "stranger")
    stranger.ok("PUT", f"/presence/{q(stranger.user_id)}/status", {"presence": "online"})

    body = _initial_sync(alice)
    presence = {e["content"]["user_id"]: e for e in body["presence"]}
    assert set(presence) == {alice.user_id, bob.user_id}
    assert presence[bob.user_id]["type"] == "m.presence"
    assert presence[bob.user_id]["content"]["presence"] == "online"
    assert "last_active_ago" in presence[bob.user_id]["content"]
    receipt = next(r for r in body["receipts"] if r["room_id"] == room)
    assert receipt["type"] == "m.receipt"
    assert bob.user_id in receipt["content"][message]["m.read"]

    one = alice.ok("GET", f"/rooms/{q(room)}/initialSync")
    assert {e["content"]["user_id"] for e in one["presence"]} == {alice.user_id,
                                                                  bob.user_id}
    assert one["receipts"][0]["content"][message]["m.read"][bob.user_id]["ts"] > 0
    # Legacy event format: user_id beside sender.
    member = next(e for e in one["state"] if e["type"] == "m.room.member"
                  and e["state_key"] == alice.user_id)
    assert member["user_id"] == member["sender"] == alice.user_id
    assert one["messages"]["chunk"][-1]["event_id"] == message


def test_initial_sync_of_a_departed_room_stops_at_the_leave(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room = bob.create_room(preset="public_chat")
    alice.join(room)
    bob.put_state(room, "test.state", {"body": "before"})
    bob.send(room, "before alice left")
    alice.leave(room)
    bob.send(room, "after alice left")
    bob.put_state(room, "test.state", {"body": "after"})
    bob.ok("POST", f"/rooms/{q(room)}/receipt/m.read/{q(bob.send(room, 'x'))}", {})

    assert room not in [r["room_id"] for r in _initial_sync(alice)["rooms"]]
    body = _initial_sync(alice, limit=2, archived="true")
    entry = next(r for r in body["rooms"] if r["room_id"] == room)
    assert entry["membership"] == "leave"
    chunk = entry["messages"]["chunk"]
    assert [e.get("content", {}).get("body") for e in chunk] == ["before alice left", None]
    assert chunk[-1]["type"] == "m.room.member" and chunk[-1]["state_key"] == alice.user_id
    state = {(e["type"], e["state_key"]): e for e in entry["state"]}
    assert state[("test.state", "")]["content"] == {"body": "before"}
    assert body["receipts"] == [] or all(r["room_id"] != room for r in body["receipts"])

    one = alice.ok("GET", f"/rooms/{q(room)}/initialSync?limit=2")
    assert one["membership"] == "leave"
    assert one["presence"] == [] and one["receipts"] == []
    assert [e.get("content", {}).get("body") for e in one["messages"]["chunk"]] == \
        ["before alice left", None]
    one_state = {(e["type"], e["state_key"]): e for e in one["state"]}
    assert one_state[("test.state", "")]["content"] == {"body": "before"}
    assert json.dumps(one).count("after alice left") == 0


# -- smaller edges ------------------------------------------------------------------------

def test_redacting_an_event_of_another_room_is_refused(api: Api) -> None:
    alice = new_user(api, "alice")
    room, other = alice.create_room(), alice.create_room()
    target = alice.send(room, "stays")
    alice.err("PUT", f"/rooms/{q(other)}/redact/{q(target)}/t1", {}, status=400,
              errcode="M_INVALID_PARAM")
    assert alice.ok("GET", f"/rooms/{q(room)}/event/{q(target)}")["content"]["body"] == "stays"


def test_joining_twice_makes_no_second_event(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    first = alice.state_ids(room)[("m.room.member", bob.user_id)]
    bob.join(room)
    assert alice.state_ids(room)[("m.room.member", bob.user_id)] == first
    bob.ok("POST", f"/join/{q(room)}", {"reason": "changed"})
    assert alice.state_ids(room)[("m.room.member", bob.user_id)] != first


def test_history_visibility_changes_are_seen_on_boundaries(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room = alice.create_room(preset="public_chat")
    for visibility, body in (("joined", "1"), ("invited", "2"), ("shared", "3")):
        alice.put_state(room, "m.room.history_visibility", {"history_visibility": visibility})
        alice.send(room, body)
    bob.join(room)
    seen = [(e["type"], e["content"].get("history_visibility", e["content"].get("body")))
            for e in reversed(bob.all_messages(room))][-4:]
    # The change to "joined" was visible under the old setting, the one to
    # "shared" under the new; "invited" and messages 1 and 2 stay hidden.
    assert seen == [("m.room.history_visibility", "joined"),
                    ("m.room.history_visibility", "shared"), ("m.room.message", "3"),
                    ("m.room.member", None)]


def test_context_with_lazy_loaded_members(api: Api) -> None:
    alice, bob, carol = (new_user(api, n) for n in ("alice", "bob", "carol"))
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    carol.join(room)
    alice.send(room, "1")
    middle = alice.send(room, "2")
    alice.send(room, "3")
    lazy = alice.ok("GET", f"/rooms/{q(room)}/context/{q(middle)}?limit=2&filter="
                    + q(json.dumps({"lazy_load_members": True})))
    assert {e["state_key"] for e in lazy["state"] if e["type"] == "m.room.member"} == \
        {alice.user_id}
    full = alice.ok("GET", f"/rooms/{q(room)}/context/{q(middle)}?limit=2")
    assert {e["state_key"] for e in full["state"] if e["type"] == "m.room.member"} == \
        {alice.user_id, bob.user_id, carol.user_id}


def test_legacy_events_stream_by_room_and_with_account_data(api: Api) -> None:
    alice, eve = new_user(api, "alice"), new_user(api, "eve")
    room, other = alice.create_room(), alice.create_room()
    start = alice.ok("GET", "/events?timeout=0")["end"]
    alice.send(other, "elsewhere")
    sent = alice.send(room, "here")
    alice.ok("PUT", f"/user/{q(alice.user_id)}/rooms/{q(room)}/tags/work", {})
    alice.ok("PUT", f"/user/{q(alice.user_id)}/account_data/my.data", {"x": 1})
    body = alice.ok("GET", f"/events?timeout=0&from={start}")
    by_type = {(e["type"], e.get("room_id")) for e in body["chunk"]}
    assert {("m.room.message", room), ("m.room.message", other), ("m.tag", room),
            ("my.data", None)} <= by_type
    message = next(e for e in body["chunk"] if e.get("event_id") == sent)
    assert message["user_id"] == alice.user_id
    only = alice.ok("GET", f"/events?timeout=0&from={start}&room_id={q(room)}")
    assert {e.get("room_id") for e in only["chunk"] if "event_id" in e} == {room}
    # Not in the room: refused, and nothing of it shown.
    eve.err("GET", f"/events?timeout=0&room_id={q(room)}", status=403, errcode="M_FORBIDDEN")
    for bad in ("abc", "-1"):
        alice.err("GET", f"/events?timeout=0&limit={bad}", status=400,
                  errcode="M_INVALID_PARAM")


def test_ignored_users_vanish_from_messages(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    bob.send(room, "from bob")
    alice.send(room, "from alice")
    alice.ok("PUT", f"/user/{q(alice.user_id)}/account_data/m.ignored_user_list",
             {"ignored_users": {bob.user_id: {}}})
    senders = {e["sender"] for e in alice.all_messages(room)}
    assert bob.user_id not in senders and alice.user_id in senders
    # Bob still sees everything.
    assert {alice.user_id, bob.user_id} <= {e["sender"] for e in bob.all_messages(room)}
