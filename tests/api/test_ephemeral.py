"""Typing, receipts, read markers, presence, to-device and account data over raw HTTP.

What a user notices, through ``/sync`` and the REST endpoints, on both engines.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.api.rooms_support import V3, Api, User, q
from tests.api.test_sync import Syncer, api, fresh, joined, new_user, room_with

__all__ = ["api"]  # a fixture shared with test_sync (the server fixture `hs` is in conftest)


def ephemeral(body: dict[str, Any], room_id: str, etype: str) -> list[dict[str, Any]]:
    room = body["rooms"]["join"].get(room_id)
    if not room:
        return []
    return [e for e in room.get("ephemeral", {}).get("events", []) if e["type"] == etype]


def typing_users(body: dict[str, Any], room_id: str) -> list[str] | None:
    """The last m.typing user list in this response, or None if there was none."""
    events = ephemeral(body, room_id, "m.typing")
    return sorted(events[-1]["content"]["user_ids"]) if events else None


def wait_for(syncer: Syncer, predicate: Any, seconds: float = 20) -> tuple[dict[str, Any], float]:
    """Long-poll until a response satisfies ``predicate``; returns it and the time taken."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        body = syncer.sync(timeout=int(max(0.1, seconds - (time.monotonic() - start)) * 1000))
        if predicate(body):
            return body, time.monotonic() - start
    raise AssertionError("condition never showed up in /sync")


def set_typing(user: User, room_id: str, typing: bool, timeout: int | None = None) -> None:
    body: dict[str, Any] = {"typing": typing}
    if timeout is not None:
        body["timeout"] = timeout
    user.ok("PUT", f"/rooms/{q(room_id)}/typing/{q(user.user_id)}", body)


def second_device(api: Api, user: User) -> User:
    localpart = user.user_id[1:].split(":")[0]
    status, body = api.request("POST", f"{V3}/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart},
        "password": "correct horse"})
    assert status == 200, body
    return User(api, body["user_id"], body["access_token"], body["device_id"])


# -- typing ---------------------------------------------------------------------------------
def test_typing_appears_and_stops_on_typing_false(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    bob_sync = Syncer(bob)
    bob_sync.sync()
    set_typing(alice, room_id, True, 30_000)
    body, _ = wait_for(bob_sync, lambda b: typing_users(b, room_id) is not None)
    assert typing_users(body, room_id) == [alice.user_id]
    # A fresh initial sync shows who is typing now.
    assert typing_users(Syncer(bob).sync(), room_id) == [alice.user_id]
    # Typing again (a refresh) does not repeat the notification.
    set_typing(alice, room_id, True, 30_000)
    assert typing_users(bob_sync.sync(), room_id) is None

    set_typing(alice, room_id, False)
    body, _ = wait_for(bob_sync, lambda b: typing_users(b, room_id) is not None)
    assert typing_users(body, room_id) == []
    # A fresh initial sync says nobody types now (Synapse's answer, which sytest's
    # "Typing can be explicitly stopped" relies on).
    assert typing_users(Syncer(bob).sync(), room_id) == []


def test_typing_expires_by_itself(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    bob_sync = Syncer(bob)
    bob_sync.sync()
    set_typing(alice, room_id, True, 1500)
    start = time.monotonic()
    body, _ = wait_for(bob_sync, lambda b: typing_users(b, room_id) is not None)
    assert typing_users(body, room_id) == [alice.user_id]
    body, _ = wait_for(bob_sync, lambda b: typing_users(b, room_id) is not None, seconds=15)
    elapsed = time.monotonic() - start
    assert typing_users(body, room_id) == []
    assert elapsed >= 1.2, f"typing stopped after {elapsed:.2f}s, before its 1.5s timeout"


def test_typing_only_for_self_and_members(api: Api) -> None:
    alice, bob, eve = new_user(api, "alice"), new_user(api, "bob"), new_user(api, "eve")
    room_id = room_with(alice, bob)
    alice.err("PUT", f"/rooms/{q(room_id)}/typing/{q(bob.user_id)}", {"typing": True},
              status=403, errcode="M_FORBIDDEN")
    eve.err("PUT", f"/rooms/{q(room_id)}/typing/{q(eve.user_id)}", {"typing": True},
            status=403, errcode="M_FORBIDDEN")


# -- receipts and read markers --------------------------------------------------------------
def receipts(body: dict[str, Any], room_id: str) -> dict[str, Any]:
    """Merged m.receipt content: event id -> receipt type -> user -> data."""
    merged: dict[str, Any] = {}
    for edu in ephemeral(body, room_id, "m.receipt"):
        for event_id, by_type in edu["content"].items():
            for rtype, by_user in by_type.items():
                merged.setdefault(event_id, {}).setdefault(rtype, {}).update(by_user)
    return merged


def test_public_receipt_is_visible_to_others(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    event_id = alice.send(room_id, "please read")
    alice_sync = Syncer(alice)
    alice_sync.sync()
    bob.ok("POST", f"/rooms/{q(room_id)}/receipt/m.read/{q(event_id)}", {})
    body, _ = wait_for(alice_sync, lambda b: receipts(b, room_id))
    data = receipts(body, room_id)[event_id]["m.read"][bob.user_id]
    assert isinstance(data["ts"], int) and data["ts"] > 0
    # Reported once in incremental syncs, and present in a fresh initial sync.
    assert not receipts(alice_sync.sync(), room_id)
    assert bob.user_id in receipts(Syncer(alice).sync(), room_id)[event_id]["m.read"]

    # A receipt for a later event moves bob's receipt.
    later = alice.send(room_id, "and this")
    bob.ok("POST", f"/rooms/{q(room_id)}/receipt/m.read/{q(later)}", {})
    current = receipts(Syncer(alice).sync(), room_id)
    assert bob.user_id in current[later]["m.read"]
    assert bob.user_id not in current.get(event_id, {}).get("m.read", {})


def test_private_receipt_only_for_owner(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    event_id = alice.send(room_id, "secretly read")
    alice_sync, bob_sync = Syncer(alice), Syncer(bob)
    alice_sync.sync()
    bob_sync.sync()
    bob.ok("POST", f"/rooms/{q(room_id)}/receipt/m.read.private/{q(event_id)}", {})
    body, _ = wait_for(bob_sync, lambda b: receipts(b, room_id))
    assert bob.user_id in receipts(body, room_id)[event_id]["m.read.private"]
    assert "m.read.private" not in str(alice_sync.sync(timeout=1000))
    assert "m.read.private" not in str(Syncer(alice).sync())
    assert bob.user_id in receipts(Syncer(bob).sync(), room_id)[event_id]["m.read.private"]


def test_threaded_receipt_carries_thread_id(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    root = alice.send(room_id, "thread root")
    reply = alice.send(room_id, content={
        "msgtype": "m.text", "body": "in thread",
        "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
    main = alice.send(room_id, "main timeline")
    bob.ok("POST", f"/rooms/{q(room_id)}/receipt/m.read/{q(reply)}", {"thread_id": root})
    bob.ok("POST", f"/rooms/{q(room_id)}/receipt/m.read/{q(main)}", {"thread_id": "main"})
    got = receipts(Syncer(alice).sync(), room_id)
    assert got[reply]["m.read"][bob.user_id]["thread_id"] == root
    assert got[main]["m.read"][bob.user_id]["thread_id"] == "main"

    for bad in ("", 5):
        bob.err("POST", f"/rooms/{q(room_id)}/receipt/m.read/{q(main)}", {"thread_id": bad},
                status=400, errcode="M_INVALID_PARAM")


def test_receipt_errors(api: Api) -> None:
    alice, bob, eve = new_user(api, "alice"), new_user(api, "bob"), new_user(api, "eve")
    room_id = room_with(alice, bob)
    event_id = alice.send(room_id, "x")
    bob.err("POST", f"/rooms/{q(room_id)}/receipt/m.bogus/{q(event_id)}", {},
            status=400, errcode=("M_INVALID_PARAM", "M_BAD_JSON", "M_UNRECOGNIZED"))
    eve.err("POST", f"/rooms/{q(room_id)}/receipt/m.read/{q(event_id)}", {}, status=403,
            errcode="M_FORBIDDEN")
    bob.err("POST", f"/rooms/{q(room_id)}/receipt/m.read/{q('$nope')}", {}, status=404,
            errcode="M_NOT_FOUND")


def test_read_markers_fully_read_is_room_account_data(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    first, second = alice.send(room_id, "one"), alice.send(room_id, "two")
    bob_sync = Syncer(bob)
    bob_sync.sync()
    alice_sync = Syncer(alice)
    alice_sync.sync()
    bob.ok("POST", f"/rooms/{q(room_id)}/read_markers",
           {"m.fully_read": first, "m.read": second})

    body, _ = wait_for(bob_sync, lambda b: room_id in b["rooms"]["join"])
    room = joined(body, room_id)
    marker = [e for e in room["account_data"]["events"] if e["type"] == "m.fully_read"]
    assert marker == [{"type": "m.fully_read", "content": {"event_id": first}}]
    assert bob.ok("GET", f"/user/{q(bob.user_id)}/rooms/{q(room_id)}/account_data/"
                  "m.fully_read") == {"event_id": first}
    # The m.read part is an ordinary public receipt; the marker is private to bob.
    body, _ = wait_for(alice_sync, lambda b: receipts(b, room_id))
    assert bob.user_id in receipts(body, room_id)[second]["m.read"]
    assert "m.fully_read" not in str(body)
    # Clients may not write the marker through the account data API.
    bob.err("PUT", f"/user/{q(bob.user_id)}/rooms/{q(room_id)}/account_data/m.fully_read",
            {"event_id": second}, status=405, errcode="M_BAD_JSON")
    bob.err("POST", f"/rooms/{q(room_id)}/read_markers", {"m.fully_read": 7}, status=400,
            errcode="M_BAD_JSON")


# -- presence -------------------------------------------------------------------------------
def test_presence_set_get_and_visibility(api: Api) -> None:
    alice, bob, eve = new_user(api, "alice"), new_user(api, "bob"), new_user(api, "eve")
    room_with(alice, bob)
    path = f"/presence/{q(alice.user_id)}/status"
    alice.ok("PUT", path, {"presence": "unavailable", "status_msg": "at lunch"})
    mine = alice.ok("GET", path)
    assert mine["presence"] == "unavailable" and mine["status_msg"] == "at lunch"
    assert isinstance(mine["last_active_ago"], int)

    theirs = bob.ok("GET", path)
    assert theirs["presence"] == "unavailable" and theirs["status_msg"] == "at lunch"
    eve.err("GET", path, status=403, errcode="M_FORBIDDEN")
    eve.err("PUT", path, {"presence": "online"}, status=403, errcode="M_FORBIDDEN")
    alice.err("PUT", path, {"presence": "dancing"}, status=400,
              errcode=("M_INVALID_PARAM", "M_BAD_JSON"))

    bob_sync = Syncer(bob)
    body = bob_sync.sync()
    seen = {e["sender"]: e["content"] for e in body["presence"]["events"]}
    assert seen[alice.user_id]["presence"] == "unavailable"
    assert seen[alice.user_id]["status_msg"] == "at lunch"
    assert eve.user_id not in seen
    # A change shows up in the next incremental sync; eve never sees alice.
    eve_sync = Syncer(eve)
    eve_sync.sync()
    alice.ok("PUT", path, {"presence": "online", "status_msg": "back"})
    body, _ = wait_for(bob_sync, lambda b: any(
        e["sender"] == alice.user_id for e in b["presence"]["events"]))
    content = next(e["content"] for e in body["presence"]["events"]
                   if e["sender"] == alice.user_id)
    assert content["presence"] == "online" and content["status_msg"] == "back"
    assert alice.user_id not in str(eve_sync.sync(timeout=500)["presence"])


# -- to-device ------------------------------------------------------------------------------
def to_device(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list(body["to_device"]["events"])


def send_to_device(user: User, messages: dict[str, Any], txn_id: str | None = None,
                   etype: str = "org.example.ping") -> None:
    user.ok("PUT", f"/sendToDevice/{etype}/{txn_id or fresh('txn')}", {"messages": messages})


def test_to_device_to_one_device_delivered_once_then_deleted(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    bob2 = second_device(api, bob)
    s1, s2 = Syncer(bob), Syncer(bob2)
    s1.sync()
    s2.sync()
    before = s1.since
    send_to_device(alice, {bob.user_id: {bob.device_id: {"n": 1}}})

    body, _ = wait_for(s1, to_device)
    assert to_device(body) == [{"type": "org.example.ping", "sender": alice.user_id,
                                "content": {"n": 1}}]
    # Only the addressed device gets it.
    assert to_device(s2.sync(timeout=500)) == []
    # Until acknowledged, a retry of the same sync gets it again.
    assert to_device(Syncer(bob, since=before).sync()) == [to_device(body)[0]]
    # The next sync acknowledges it: not repeated, and gone from the server.
    assert to_device(s1.sync()) == []
    assert to_device(Syncer(bob, since=before).sync()) == []


def test_to_device_wildcard_reaches_every_device(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    bob2 = second_device(api, bob)
    syncers = [Syncer(bob), Syncer(bob2)]
    for s in syncers:
        s.sync()
    send_to_device(alice, {bob.user_id: {"*": {"all": True}}}, etype="org.example.all")
    for s in syncers:
        body, _ = wait_for(s, to_device)
        assert to_device(body) == [{"type": "org.example.all", "sender": alice.user_id,
                                    "content": {"all": True}}]
        assert to_device(s.sync()) == []


def test_to_device_txn_id_is_idempotent_and_order_kept(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    s = Syncer(bob)
    s.sync()
    target = {bob.user_id: {bob.device_id: {"n": 1}}}
    send_to_device(alice, target, txn_id="same")
    send_to_device(alice, target, txn_id="same")
    for n in (2, 3):
        send_to_device(alice, {bob.user_id: {bob.device_id: {"n": n}}})
    got: list[int] = []
    deadline = time.monotonic() + 20
    while len(got) < 3 and time.monotonic() < deadline:
        got += [m["content"]["n"] for m in to_device(s.sync(timeout=2000))]
    assert got == [1, 2, 3]
    assert to_device(s.sync(timeout=500)) == []


def test_to_device_bad_bodies(api: Api) -> None:
    alice = new_user(api, "alice")
    alice.err("PUT", "/sendToDevice/m.x/t1", {"messages": []}, status=400,
              errcode="M_BAD_JSON")
    alice.err("PUT", "/sendToDevice/m.x/t2", {"messages": {alice.user_id: "x"}},
              status=400, errcode="M_BAD_JSON")
    alice.err("PUT", "/sendToDevice/m.x/t3", raw=b"not json", status=400,
              errcode="M_NOT_JSON")


# -- account data ---------------------------------------------------------------------------
def test_global_and_room_account_data(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = alice.create_room()
    s = Syncer(alice)
    s.sync()
    gpath = f"/user/{q(alice.user_id)}/account_data/org.example.settings"
    rpath = f"/user/{q(alice.user_id)}/rooms/{q(room_id)}/account_data/org.example.room"
    alice.ok("PUT", gpath, {"theme": "dark"})
    alice.ok("PUT", rpath, {"pinned": True})
    assert alice.ok("GET", gpath) == {"theme": "dark"}
    assert alice.ok("GET", rpath) == {"pinned": True}
    # Global and room data are separate namespaces.
    alice.err("GET", f"/user/{q(alice.user_id)}/account_data/org.example.room", status=404,
              errcode="M_NOT_FOUND")

    body = s.sync()  # both writes were acknowledged before this sync
    global_events = body["account_data"]["events"]
    room_events = joined(body, room_id)["account_data"]["events"]
    assert {"type": "org.example.settings", "content": {"theme": "dark"}} in global_events
    assert {"type": "org.example.room", "content": {"pinned": True}} in room_events
    # Updates replace, and only the changed type is sent again.
    alice.ok("PUT", gpath, {"theme": "light"})
    body, _ = wait_for(s, lambda b: b["account_data"]["events"])
    assert body["account_data"]["events"] == [
        {"type": "org.example.settings", "content": {"theme": "light"}}]
    assert room_id not in body["rooms"]["join"]
    # A fresh initial sync shows the latest of everything.
    initial = Syncer(alice).sync()
    assert {"type": "org.example.settings", "content": {"theme": "light"}} in \
        initial["account_data"]["events"]
    assert {"type": "org.example.room", "content": {"pinned": True}} in \
        joined(initial, room_id)["account_data"]["events"]

    # Other users' account data is off limits.
    bob.err("GET", gpath, status=403, errcode="M_FORBIDDEN")
    bob.err("PUT", gpath, {"x": 1}, status=403, errcode="M_FORBIDDEN")
    alice.err("GET", f"/user/{q(alice.user_id)}/account_data/org.example.never", status=404,
              errcode="M_NOT_FOUND")
    alice.err("PUT", f"/user/{q(alice.user_id)}/rooms/not-a-room/account_data/x", {},
              status=400)


def test_room_tags_put_get_delete(api: Api) -> None:
    alice = new_user(api, "alice")
    room_id = alice.create_room()
    s = Syncer(alice)
    s.sync()
    base = f"/user/{q(alice.user_id)}/rooms/{q(room_id)}/tags"
    assert alice.ok("GET", base) == {"tags": {}}
    alice.ok("PUT", f"{base}/m.favourite", {"order": 0.25})
    alice.ok("PUT", f"{base}/u.work", {})
    assert alice.ok("GET", base) == {"tags": {"m.favourite": {"order": 0.25}, "u.work": {}}}

    body, _ = wait_for(s, lambda b: room_id in b["rooms"]["join"])
    tags = [e for e in joined(body, room_id)["account_data"]["events"] if e["type"] == "m.tag"]
    assert tags[-1]["content"]["tags"]["m.favourite"] == {"order": 0.25}

    alice.ok("DELETE", f"{base}/m.favourite")
    assert alice.ok("GET", base) == {"tags": {"u.work": {}}}
    body, _ = wait_for(s, lambda b: room_id in b["rooms"]["join"])
    tags = [e for e in joined(body, room_id)["account_data"]["events"] if e["type"] == "m.tag"]
    assert tags == [{"type": "m.tag", "content": {"tags": {"u.work": {}}}}]
    alice.err("PUT", f"{base}/u.bad", {"order": "first"}, status=400, errcode="M_BAD_JSON")


# -- bad bodies -----------------------------------------------------------------------------
@pytest.mark.parametrize("what", ["typing", "presence", "account_data", "room_account_data",
                                  "tag", "read_markers", "filter"])
def test_bad_bodies(api: Api, what: str) -> None:
    alice = new_user(api, "alice")
    room_id = alice.create_room()
    me = q(alice.user_id)
    path = {
        "typing": (f"/rooms/{q(room_id)}/typing/{me}", "PUT", {"typing": "yes"}),
        "presence": (f"/presence/{me}/status", "PUT", {"status_msg": "no state"}),
        "account_data": (f"/user/{me}/account_data/org.x", "PUT", None),
        "room_account_data": (f"/user/{me}/rooms/{q(room_id)}/account_data/org.x", "PUT",
                              None),
        "tag": (f"/user/{me}/rooms/{q(room_id)}/tags/u.x", "PUT", {"order": []}),
        "read_markers": (f"/rooms/{q(room_id)}/read_markers", "POST", {"m.read": 1}),
        "filter": (f"/user/{me}/filter", "POST", {"room": {"timeline": {"types": "x"}}}),
    }[what]
    url, method, bad_json = path
    alice.err(method, url, raw=b"{this is not json", status=400, errcode="M_NOT_JSON")
    alice.err(method, url, raw=b"[1, 2]", status=400, errcode="M_BAD_JSON")
    if bad_json is not None:
        alice.err(method, url, bad_json, status=400, errcode="M_BAD_JSON")
