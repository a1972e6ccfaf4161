"""``/sync`` over raw HTTP, as a client sees it, on both engines.

One server per engine serves the module; every test makes its own users and
rooms. :class:`Syncer` is a minimal sync loop: it keeps ``next_batch`` and
hands back each response. The helpers here are shared by the other sync
test modules (ephemeral, restart).
"""

from __future__ import annotations

import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.api.rooms_support import V3, Api, User, q
from tests.support.server import ServerProcess

_ids = itertools.count()


def fresh(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


@pytest.fixture
def api(hs: ServerProcess) -> Api:
    return Api(hs)


def new_user(api: Api, prefix: str) -> User:
    return api.user(fresh(prefix))


def sync_raw(user: User, **params: Any) -> tuple[int, Any]:
    if "filter" in params and not isinstance(params["filter"], str):
        params["filter"] = json.dumps(params["filter"])
    params = {k: v for k, v in params.items() if v is not None}
    return user.req("GET", "/sync?" + urlencode(params))


class Syncer:
    """One client's sync loop: remembers next_batch between calls."""

    def __init__(self, user: User, sync_filter: Any = None, since: str | None = None) -> None:
        self.user = user
        self.filter = sync_filter
        self.since = since
        self.responses: list[dict[str, Any]] = []

    def sync(self, timeout: int = 0, **params: Any) -> dict[str, Any]:
        if self.filter is not None:
            params.setdefault("filter", self.filter)
        status, body = sync_raw(self.user, since=self.since, timeout=timeout, **params)
        assert status == 200, body
        assert isinstance(body["next_batch"], str) and body["next_batch"]
        self.since = body["next_batch"]
        self.responses.append(body)
        return dict(body)

    def timeline_ids(self, room_id: str, section: str = "join") -> list[str]:
        """Every timeline event id seen so far in ``room_id``, in arrival order."""
        out = []
        for body in self.responses:
            room = body["rooms"][section].get(room_id)
            if room:
                out.extend(e["event_id"] for e in room["timeline"]["events"])
        return out


def joined(body: dict[str, Any], room_id: str) -> dict[str, Any]:
    assert room_id in body["rooms"]["join"], body["rooms"]
    return dict(body["rooms"]["join"][room_id])


def timeline(body: dict[str, Any], room_id: str, section: str = "join") -> list[dict[str, Any]]:
    room = body["rooms"][section].get(room_id)
    return list(room["timeline"]["events"]) if room else []


def state_keys(events: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(e["type"], e["state_key"]) for e in events}


def bodies(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


def room_with(owner: User, *members: User, **create: Any) -> str:
    """A room ``owner`` created, joined by ``members``."""
    room_id = owner.create_room(**create)
    for member in members:
        owner.invite(room_id, member.user_id)
        member.join(room_id)
    return room_id


def send_many(user: User, room_id: str, n: int, prefix: str = "msg") -> list[str]:
    return [user.send(room_id, f"{prefix} {i}") for i in range(n)]


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - start


# -- initial sync ---------------------------------------------------------------------------
def test_initial_sync_shows_joined_room_with_state_and_timeline(api: Api) -> None:
    alice = new_user(api, "alice")
    room_id = alice.create_room(name="Initial", topic="a topic")
    sent = send_many(alice, room_id, 3)

    body = Syncer(alice).sync()
    room = joined(body, room_id)
    events = room["timeline"]["events"]
    # Timeline ends with the messages, in order; the default limit is honoured.
    assert [e["event_id"] for e in events][-3:] == sent
    assert bodies(events) == ["msg 0", "msg 1", "msg 2"]
    assert len(events) <= 10
    # State plus timeline describe the whole room.
    everything = state_keys(room["state"]["events"]) | state_keys(
        [e for e in events if "state_key" in e])
    assert {("m.room.create", ""), ("m.room.member", alice.user_id), ("m.room.name", ""),
            ("m.room.topic", ""), ("m.room.power_levels", ""),
            ("m.room.join_rules", "")} <= everything
    # State events in `state` are not repeated in the timeline.
    assert not ({e["event_id"] for e in room["state"]["events"]}
                & {e["event_id"] for e in events})
    for e in events:
        assert {"event_id", "type", "sender", "origin_server_ts", "content"} <= set(e)
    assert isinstance(room["timeline"]["prev_batch"], str)
    assert room["summary"]["m.joined_member_count"] == 1
    assert room_id not in body["rooms"]["invite"] and room_id not in body["rooms"]["leave"]


def test_invites_show_invite_state(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = alice.create_room(name="Come in", preset="private_chat")
    bob_sync = Syncer(bob)
    bob_sync.sync()
    alice.invite(room_id, bob.user_id)

    for body in (bob_sync.sync(), Syncer(bob).sync()):  # incremental and initial
        assert room_id not in body["rooms"]["join"]
        invite_state = body["rooms"]["invite"][room_id]["invite_state"]["events"]
        by_key = {(e["type"], e["state_key"]): e for e in invite_state}
        assert by_key[("m.room.member", bob.user_id)]["content"]["membership"] == "invite"
        assert by_key[("m.room.member", bob.user_id)]["sender"] == alice.user_id
        assert by_key[("m.room.name", "")]["content"]["name"] == "Come in"
        assert ("m.room.create", "") in by_key
        assert ("m.room.join_rules", "") in by_key
        # Who invited: the inviter's own member event.
        assert by_key[("m.room.member", alice.user_id)]["content"]["membership"] == "join"

    # Once seen, the invite does not repeat in incremental syncs.
    assert room_id not in bob_sync.sync()["rooms"]["invite"]
    bob.join(room_id)
    body = bob_sync.sync()
    assert room_id in body["rooms"]["join"] and room_id not in body["rooms"]["invite"]


def test_leave_shows_in_leave_and_nothing_after(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    before = alice.send(room_id, "before bob leaves")
    bob_sync = Syncer(bob)
    bob_sync.sync()
    assert before in bob_sync.timeline_ids(room_id)
    bob.leave(room_id)

    body = bob_sync.sync()
    assert room_id not in body["rooms"]["join"]
    left = body["rooms"]["leave"][room_id]
    leave_event = left["timeline"]["events"][-1]
    assert (leave_event["type"], leave_event["state_key"]) == ("m.room.member", bob.user_id)
    assert leave_event["content"]["membership"] == "leave"

    after = alice.send(room_id, "after bob left")
    alice.put_state(room_id, "m.room.topic", {"topic": "bob must not see this"})
    body = bob_sync.sync(timeout=1000)
    assert room_id not in body["rooms"]["leave"] and room_id not in body["rooms"]["join"]
    assert after not in json.dumps(body)

    # A fresh initial sync shows the left room only with include_leave, ending at the leave.
    assert room_id not in Syncer(bob).sync()["rooms"]["leave"]
    body = Syncer(bob, {"room": {"include_leave": True}}).sync()
    left = body["rooms"]["leave"][room_id]
    ids = [e["event_id"] for e in left["timeline"]["events"]]
    assert after not in ids and ids[-1] == leave_event["event_id"]
    assert "bob must not see this" not in json.dumps(left)


# -- incremental sync -----------------------------------------------------------------------
def test_incremental_messages_arrive_in_order_exactly_once(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    bob_sync = Syncer(bob, {"room": {"timeline": {"limit": 50}}})
    bob_sync.sync()
    start = len(bob_sync.timeline_ids(room_id))
    sent: list[str] = []
    for batch in range(6):
        sent += send_many(alice, room_id, batch % 3 + 1, prefix=f"b{batch}")
        sent.append(bob.send(room_id, f"bob {batch}"))
        body = bob_sync.sync()
        assert not joined(body, room_id)["timeline"]["limited"]
    # Syncs with nothing new do not repeat anything.
    for _ in range(2):
        assert room_id not in bob_sync.sync()["rooms"]["join"]
    assert bob_sync.timeline_ids(room_id)[start:] == sent

    # A slow client that falls behind gets the newest events with limited=true and no dupes.
    slow = Syncer(alice, {"room": {"timeline": {"limit": 3}}})
    slow.sync()
    more = send_many(alice, room_id, 7, prefix="late")
    body = slow.sync()
    room = joined(body, room_id)
    assert room["timeline"]["limited"] is True
    assert [e["event_id"] for e in room["timeline"]["events"]] == more[-3:]


def test_concurrent_sends_during_long_polls_are_delivered_once_in_order(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    bob_sync = Syncer(bob, {"room": {"timeline": {"limit": 100}}})
    bob_sync.sync()
    start = len(bob_sync.timeline_ids(room_id))
    sent: list[str] = []

    def sender() -> None:
        for i in range(20):
            sent.append(alice.send(room_id, f"c{i}"))
            time.sleep(0.02)

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(sender)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            bob_sync.sync(timeout=2000)
            if future.done() and len(bob_sync.timeline_ids(room_id)) - start >= 20:
                break
        future.result()
    assert bob_sync.timeline_ids(room_id)[start:] == sent


def test_long_poll_wakes_on_send(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    bob_sync = Syncer(bob)
    bob_sync.sync()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(timed, bob_sync.sync, 30_000)
        time.sleep(1.0)
        assert not future.done(), "the long-poll returned before anything happened"
        event_id = alice.send(room_id, "wake up")
        body, elapsed = future.result(timeout=40)
    assert elapsed < 15, f"long-poll took {elapsed:.1f}s to notice a message"
    assert [e["event_id"] for e in timeline(body, room_id)] == [event_id]


def test_long_poll_returns_empty_at_timeout(api: Api) -> None:
    alice = new_user(api, "alice")
    room_id = alice.create_room()
    alice_sync = Syncer(alice)
    alice_sync.sync()
    before = alice_sync.since
    body, elapsed = timed(alice_sync.sync, 2000)
    assert elapsed >= 1.8, f"returned after {elapsed:.2f}s, before the 2s timeout"
    assert elapsed < 10
    assert body["rooms"]["join"] == {} and room_id not in body["rooms"]["join"]
    assert body["to_device"]["events"] == [] and body["account_data"]["events"] == []
    # Nothing happened, so the next token still covers the same events.
    assert isinstance(body["next_batch"], str)
    assert before is not None


def test_timeout_zero_answers_immediately(api: Api) -> None:
    alice = new_user(api, "alice")
    alice_sync = Syncer(alice)
    alice_sync.sync()
    _, elapsed = timed(alice_sync.sync, 0)
    assert elapsed < 5


def test_prev_batch_paginates_back_to_creation_without_gaps_or_dupes(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob, name="history")
    for i in range(25):
        (alice if i % 2 else bob).send(room_id, f"h{i}")
    alice.put_state(room_id, "m.room.topic", {"topic": "mid-history"})
    send_many(alice, room_id, 4, prefix="tail")
    full = [e["event_id"] for e in reversed(alice.all_messages(room_id))]
    assert full[0] == alice.state_map(room_id)[("m.room.create", "")]["event_id"]

    body = Syncer(bob, {"room": {"timeline": {"limit": 5}}}).sync()
    room = joined(body, room_id)
    assert room["timeline"]["limited"] is True
    seen = [e["event_id"] for e in room["timeline"]["events"]]
    token = room["timeline"]["prev_batch"]
    pages = 0
    while token is not None and pages < 100:
        page = bob.messages(room_id, dir="b", **{"from": token}, limit=7)
        if not page["chunk"]:
            break
        seen = [e["event_id"] for e in reversed(page["chunk"])] + seen
        token = page.get("end")
        pages += 1
    assert seen == full, "sync + /messages scrollback differs from the room history"
    assert len(set(seen)) == len(seen)


def test_limited_timeline_carries_state_delta(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob, name="old name")
    bob_sync = Syncer(bob, {"room": {"timeline": {"limit": 3}}})
    bob_sync.sync()

    # Not limited: the state change is in the timeline, and state is empty.
    name_event = alice.put_state(room_id, "m.room.name", {"name": "name 2"})
    room = joined(bob_sync.sync(), room_id)
    assert not room["timeline"]["limited"]
    assert [e["event_id"] for e in room["timeline"]["events"]] == [name_event]
    assert room["state"]["events"] == []

    # Limited: state changes from the gap arrive in `state`, not in the timeline.
    name3 = alice.put_state(room_id, "m.room.name", {"name": "name 3"})
    topic = alice.put_state(room_id, "m.room.topic", {"topic": "gap topic"})
    tail = send_many(alice, room_id, 5)
    room = joined(bob_sync.sync(), room_id)
    assert room["timeline"]["limited"] is True
    assert [e["event_id"] for e in room["timeline"]["events"]] == tail[-3:]
    state = {(e["type"], e["state_key"]): e for e in room["state"]["events"]}
    assert state[("m.room.name", "")]["event_id"] == name3
    assert state[("m.room.name", "")]["content"] == {"name": "name 3"}
    assert state[("m.room.topic", "")]["event_id"] == topic
    # Unchanged state is not repeated.
    assert ("m.room.create", "") not in state
    assert ("m.room.member", alice.user_id) not in state


def test_full_state_returns_all_state_without_new_events(api: Api) -> None:
    alice = new_user(api, "alice")
    room_id = alice.create_room(name="full")
    alice_sync = Syncer(alice)
    alice_sync.sync()
    body, elapsed = timed(alice_sync.sync, 10_000, full_state="true")
    assert elapsed < 8, "full_state must not wait"
    room = joined(body, room_id)
    everything = state_keys(room["state"]["events"]) | state_keys(
        [e for e in room["timeline"]["events"] if "state_key" in e])
    assert {("m.room.create", ""), ("m.room.name", ""),
            ("m.room.member", alice.user_id)} <= everything


# -- filters -------------------------------------------------------------------------------
def test_filter_timeline_limit(api: Api) -> None:
    alice = new_user(api, "alice")
    room_id = alice.create_room()
    sent = send_many(alice, room_id, 6)
    for limit in (1, 4):
        room = joined(Syncer(alice, {"room": {"timeline": {"limit": limit}}}).sync(), room_id)
        assert [e["event_id"] for e in room["timeline"]["events"]] == sent[-limit:]
        assert room["timeline"]["limited"] is True


def test_filter_timeline_types_and_not_types(api: Api) -> None:
    alice = new_user(api, "alice")
    room_id = alice.create_room()
    msg = alice.send(room_id, "hello")
    alice.put_state(room_id, "m.room.topic", {"topic": "t"})
    custom = alice.send(room_id, etype="org.example.thing", content={"x": 1})

    only_msgs = timeline(Syncer(alice, {"room": {"timeline": {"types": ["m.room.message"]}}})
                         .sync(), room_id)
    assert [e["event_id"] for e in only_msgs] == [msg]
    no_msgs = timeline(Syncer(alice, {"room": {"timeline": {
        "not_types": ["m.room.message"]}}}).sync(), room_id)
    assert no_msgs and all(e["type"] != "m.room.message" for e in no_msgs)
    assert custom in [e["event_id"] for e in no_msgs]
    wildcard = timeline(Syncer(alice, {"room": {"timeline": {"types": ["org.example.*"]}}})
                        .sync(), room_id)
    assert [e["event_id"] for e in wildcard] == [custom]


def test_filter_timeline_senders(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    mine = [alice.send(room_id, "a1"), bob.send(room_id, "b1"), alice.send(room_id, "a2")]
    events = timeline(Syncer(bob, {"room": {"timeline": {"senders": [alice.user_id],
                                                         "limit": 20}}}).sync(), room_id)
    assert {e["sender"] for e in events} == {alice.user_id}
    assert [e["event_id"] for e in events if e["type"] == "m.room.message"] == [mine[0],
                                                                               mine[2]]
    events = timeline(Syncer(bob, {"room": {"timeline": {"not_senders": [alice.user_id]}}})
                      .sync(), room_id)
    assert events and {e["sender"] for e in events} == {bob.user_id}


def test_filter_rooms_and_not_rooms(api: Api) -> None:
    alice = new_user(api, "alice")
    r1, r2 = alice.create_room(), alice.create_room()
    body = Syncer(alice, {"room": {"rooms": [r1]}}).sync()
    assert set(body["rooms"]["join"]) == {r1}
    body = Syncer(alice, {"room": {"not_rooms": [r1]}}).sync()
    assert r2 in body["rooms"]["join"] and r1 not in body["rooms"]["join"]
    # Incremental: an excluded room's messages never show up.
    s = Syncer(alice, {"room": {"not_rooms": [r1]}})
    s.sync()
    alice.send(r1, "hidden")
    visible = alice.send(r2, "visible")
    body = s.sync()
    assert r1 not in body["rooms"]["join"]
    assert [e["event_id"] for e in timeline(body, r2)] == [visible]


def test_filter_lazy_load_members_shrinks_state(api: Api) -> None:
    alice, bob, carol, dave = (new_user(api, n) for n in ("alice", "bob", "carol", "dave"))
    room_id = room_with(alice, bob, carol, dave)
    send_many(carol, room_id, 3, prefix="carol")

    f = {"room": {"timeline": {"limit": 2}}}
    full = joined(Syncer(bob, f).sync(), room_id)
    full_members = {k for t, k in state_keys(full["state"]["events"]) if t == "m.room.member"}
    assert {alice.user_id, carol.user_id, dave.user_id} <= full_members

    lazy_f = {"room": {"timeline": {"limit": 2}, "state": {"lazy_load_members": True}}}
    lazy = joined(Syncer(bob, lazy_f).sync(), room_id)
    assert {e["sender"] for e in lazy["timeline"]["events"]} == {carol.user_id}
    lazy_members = {k for t, k in state_keys(lazy["state"]["events"]) if t == "m.room.member"}
    assert carol.user_id in lazy_members
    assert lazy_members <= {carol.user_id, bob.user_id}
    # Non-member state is still all there.
    assert {k for k in state_keys(lazy["state"]["events"]) if k[0] != "m.room.member"} == \
        {k for k in state_keys(full["state"]["events"]) if k[0] != "m.room.member"}
    # The summary still counts everyone.
    assert lazy["summary"]["m.joined_member_count"] == 4


def test_filter_room_state_types(api: Api) -> None:
    alice = new_user(api, "alice")
    room_id = alice.create_room(name="typed", topic="tt")
    send_many(alice, room_id, 3)
    room = joined(Syncer(alice, {"room": {"state": {"types": ["m.room.name"]},
                                          "timeline": {"limit": 1}}}).sync(), room_id)
    assert state_keys(room["state"]["events"]) == {("m.room.name", "")}
    room = joined(Syncer(alice, {"room": {"state": {"not_types": ["m.room.member"]},
                                          "timeline": {"limit": 1}}}).sync(), room_id)
    keys = state_keys(room["state"]["events"])
    assert ("m.room.name", "") in keys and not [k for k in keys if k[0] == "m.room.member"]


def test_filters_block_ephemeral_account_data_presence(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    event_id = alice.send(room_id, "read me")
    alice.ok("PUT", f"/rooms/{q(room_id)}/typing/{q(alice.user_id)}",
             {"typing": True, "timeout": 30000})
    alice.ok("POST", f"/rooms/{q(room_id)}/receipt/m.read/{q(event_id)}", {})
    bob.ok("PUT", f"/user/{q(bob.user_id)}/account_data/org.example.global", {"a": 1})
    bob.ok("PUT", f"/user/{q(bob.user_id)}/rooms/{q(room_id)}/account_data/org.example.room",
           {"b": 2})
    alice.ok("PUT", f"/presence/{q(alice.user_id)}/status", {"presence": "online"})

    plain = Syncer(bob).sync()
    room = joined(plain, room_id)
    assert {e["type"] for e in room["ephemeral"]["events"]} == {"m.typing", "m.receipt"}
    assert "org.example.room" in {e["type"] for e in room["account_data"]["events"]}
    assert "org.example.global" in {e["type"] for e in plain["account_data"]["events"]}
    assert alice.user_id in {e["sender"] for e in plain["presence"]["events"]}

    blocked = Syncer(bob, {
        "room": {"ephemeral": {"not_types": ["*"]}, "account_data": {"types": []}},
        "account_data": {"not_types": ["*"]}, "presence": {"types": []}}).sync()
    room = joined(blocked, room_id)
    assert room.get("ephemeral", {}).get("events", []) == []
    assert room.get("account_data", {}).get("events", []) == []
    assert blocked.get("account_data", {}).get("events", []) == []
    assert blocked.get("presence", {}).get("events", []) == []
    # Per-type filtering inside a section.
    only_typing = Syncer(bob, {"room": {"ephemeral": {"types": ["m.typing"]}}}).sync()
    assert {e["type"] for e in joined(only_typing, room_id)["ephemeral"]["events"]} == {
        "m.typing"}
    alice.ok("PUT", f"/rooms/{q(room_id)}/typing/{q(alice.user_id)}", {"typing": False})


def test_filter_event_fields(api: Api) -> None:
    alice = new_user(api, "alice")
    room_id = alice.create_room()
    alice.send(room_id, "fields")
    events = timeline(Syncer(alice, {"event_fields": ["type", "content.body", "event_id"]})
                      .sync(), room_id)
    message = [e for e in events if e["type"] == "m.room.message"][-1]
    assert message == {"type": "m.room.message", "content": {"body": "fields"},
                       "event_id": message["event_id"]}
    for e in events:
        assert set(e) <= {"type", "content", "event_id"}


def test_filter_upload_get_and_use_by_id(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = alice.create_room()
    sent = send_many(alice, room_id, 4)
    definition = {"room": {"timeline": {"limit": 2, "types": ["m.room.message"]}},
                  "presence": {"not_types": ["*"]}}
    filter_id = alice.ok("POST", f"/user/{q(alice.user_id)}/filter", definition)["filter_id"]
    assert isinstance(filter_id, str) and filter_id
    got = alice.ok("GET", f"/user/{q(alice.user_id)}/filter/{q(filter_id)}")
    assert got["room"]["timeline"] == definition["room"]["timeline"]
    assert got["presence"] == definition["presence"]

    room = joined(Syncer(alice, filter_id).sync(), room_id)
    assert [e["event_id"] for e in room["timeline"]["events"]] == sent[-2:]

    # Filters are per user; unknown ids are 404s; others' filters are not readable.
    bob.err("GET", f"/user/{q(alice.user_id)}/filter/{q(filter_id)}", status=403,
            errcode="M_FORBIDDEN")
    alice.err("GET", f"/user/{q(alice.user_id)}/filter/999999", status=404,
              errcode="M_NOT_FOUND")
    status, body = sync_raw(bob, filter="999999")
    assert status in (400, 404), body
    # Invalid definitions are refused up front.
    alice.err("POST", f"/user/{q(alice.user_id)}/filter", {"room": {"timeline": {"limit": "x"}}},
              status=400, errcode="M_BAD_JSON")
    status, body = sync_raw(alice, filter="{not json")
    assert status == 400 and body["errcode"] in ("M_NOT_JSON", "M_BAD_JSON", "M_INVALID_PARAM")


# -- tokens ---------------------------------------------------------------------------------
@pytest.mark.parametrize("token", ["garbage", "s", "s1_x", "s-4", "sm1~a.b", "s1__2",
                                   "s" + "_".join(["1"] * 40), "t1-2", "s+1", "s 1",
                                   "s" + str(2**63), "s1_" + str(2**64)])
def test_garbage_since_token_is_invalid_param(api: Api, token: str) -> None:
    alice = new_user(api, "alice")
    status, body = sync_raw(alice, since=token)
    assert status == 400, (token, body)
    assert body["errcode"] == "M_INVALID_PARAM", body


def test_next_batch_is_reusable(api: Api) -> None:
    """Retrying a sync with the same since token gives the same events again."""
    alice = new_user(api, "alice")
    room_id = alice.create_room()
    s = Syncer(alice)
    s.sync()
    token = s.since
    event_id = alice.send(room_id, "twice")
    first = timeline(s.sync(), room_id)
    again = timeline(Syncer(alice, since=token).sync(), room_id)
    assert [e["event_id"] for e in first] == [e["event_id"] for e in again] == [event_id]


# -- room details ---------------------------------------------------------------------------
def test_summary_heroes_and_counts(api: Api) -> None:
    alice, bob, carol = new_user(api, "alice"), new_user(api, "bob"), new_user(api, "carol")
    room_id = room_with(alice, bob)
    alice.invite(room_id, carol.user_id)
    summary = joined(Syncer(alice).sync(), room_id)["summary"]
    assert summary["m.joined_member_count"] == 2
    assert summary["m.invited_member_count"] == 1
    assert alice.user_id not in summary["m.heroes"]
    assert set(summary["m.heroes"]) == {bob.user_id, carol.user_id}

    s = Syncer(alice)
    s.sync()
    carol.join(room_id)
    summary = joined(s.sync(), room_id)["summary"]
    assert summary["m.joined_member_count"] == 3
    assert summary.get("m.invited_member_count", 0) == 0


def test_unread_notifications_count_and_reset_on_receipt(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    bob_sync = Syncer(bob)
    bob_sync.sync()
    sent = send_many(alice, room_id, 3)
    bob.send(room_id, "my own message does not count")
    counts = joined(bob_sync.sync(), room_id)["unread_notifications"]
    assert counts["notification_count"] == 3
    assert counts["highlight_count"] == 0

    bob.ok("POST", f"/rooms/{q(room_id)}/receipt/m.read/{q(sent[1])}", {})
    counts = joined(bob_sync.sync(), room_id)["unread_notifications"]
    assert counts["notification_count"] == 1
    bob.ok("POST", f"/rooms/{q(room_id)}/read_markers", {"m.read": sent[2]})
    counts = joined(bob_sync.sync(), room_id)["unread_notifications"]
    assert counts["notification_count"] == 0


def test_device_lists_changed_when_room_mate_adds_device(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    stranger = new_user(api, "stranger")
    alice_sync = Syncer(alice)
    alice_sync.sync()
    alice_sync.sync()  # settle
    localpart = bob.user_id[1:].split(":")[0]
    status, _ = api.request("POST", f"{V3}/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart},
        "password": "correct horse"})
    assert status == 200
    status, _ = api.request("POST", f"{V3}/login", {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": stranger.user_id[1:].split(":")[0]},
        "password": "correct horse"})
    assert status == 200
    body = alice_sync.sync(timeout=5000)
    assert bob.user_id in body["device_lists"]["changed"]
    assert stranger.user_id not in body["device_lists"]["changed"]
    assert room_id  # bob shares this room with alice
    # Reported once.
    assert bob.user_id not in alice_sync.sync()["device_lists"]["changed"]


# -- legacy APIs ----------------------------------------------------------------------------
def test_legacy_events_initial_sync_and_room_initial_sync(api: Api) -> None:
    alice = new_user(api, "alice")
    room_id = alice.create_room(name="legacy")
    sent = send_many(alice, room_id, 3)

    whole = alice.ok("GET", "/initialSync?limit=5")
    assert isinstance(whole["end"], str)
    room = next(r for r in whole["rooms"] if r["room_id"] == room_id)
    assert room["membership"] == "join"
    assert [e["event_id"] for e in room["messages"]["chunk"]][-3:] == sent
    assert ("m.room.name", "") in state_keys(room["state"])

    one = alice.ok("GET", f"/rooms/{q(room_id)}/initialSync")
    assert one["room_id"] == room_id and one["membership"] == "join"
    assert [e["event_id"] for e in one["messages"]["chunk"]][-3:] == sent
    assert ("m.room.create", "") in state_keys(one["state"])
    assert one["visibility"] in ("private", "public")

    # /events long-polls from the token initialSync handed out; a legacy client loops on it
    # (the first answers may carry presence) and sees the new message exactly once.
    token = whole["end"]
    seen: list[str] = []
    with ThreadPoolExecutor(1) as pool:
        def poll() -> str:
            nonlocal token
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                events = alice.ok("GET", f"/events?from={token}&timeout=20000")
                assert isinstance(events["end"], str)
                token = events["end"]
                for e in events["chunk"]:
                    if "event_id" in e:
                        assert e["room_id"] == room_id
                        seen.append(e["event_id"])
                if seen:
                    return token
            raise AssertionError("/events never delivered the message")
        future = pool.submit(poll)
        time.sleep(0.5)
        later = alice.send(room_id, "via /events")
        future.result(timeout=40)
    assert seen == [later]
    # ...and with nothing new it times out empty.
    quiet, elapsed = timed(alice.ok, "GET", f"/events?from={token}&timeout=1000")
    assert [e for e in quiet["chunk"] if "event_id" in e] == []
    assert elapsed >= 0.8 or quiet["chunk"], f"returned empty after {elapsed:.2f}s"

    other = new_user(api, "other")
    other.err("GET", f"/rooms/{q(room_id)}/initialSync", status=403, errcode="M_FORBIDDEN")


def test_long_poll_after_idle_period_waits_when_nothing_happened(api: Api) -> None:
    """A client that comes back after a pause (its own presence already online) and finds
    nothing new waits out its timeout instead of being answered at once."""
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_with(alice, bob)
    alice_sync = Syncer(alice)
    alice_sync.sync()
    alice_sync.sync()
    time.sleep(11)
    body, elapsed = timed(alice_sync.sync, 3000)
    others = [e for e in body["presence"]["events"] if e["sender"] != alice.user_id]
    assert elapsed >= 2.5 or others, (
        f"answered after {elapsed:.2f}s with only the user's own presence: {body['presence']}")
