"""Push rules in action over HTTP, on both engines: unread counts in /sync,
GET /notifications, and pushers (set, list, append, delete, gone on logout)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from tests.api.rooms_support import V3, Api, User, q
from tests.api.test_ephemeral import second_device
from tests.api.test_sync import Syncer, api, joined, new_user, room_with

__all__ = ["api"]

THREADED = {"room": {"timeline": {"unread_thread_notifications": True}}}


def counts(body: dict[str, Any], room_id: str) -> tuple[int, int]:
    unread = joined(body, room_id)["unread_notifications"]
    return unread["notification_count"], unread["highlight_count"]


def three_room(api: Api) -> tuple[User, User, User, str]:
    """alice's room with bob and carol: three members, so .m.rule.message applies."""
    alice, bob, carol = new_user(api, "alice"), new_user(api, "bob"), new_user(api, "carol")
    return alice, bob, carol, room_with(alice, bob, carol)


def receipt(user: User, room_id: str, event_id: str, rtype: str = "m.read",
            thread_id: str | None = None) -> None:
    body = {} if thread_id is None else {"thread_id": thread_id}
    user.ok("POST", f"/rooms/{q(room_id)}/receipt/{rtype}/{q(event_id)}", body)


def notifications(user: User, **params: Any) -> dict[str, Any]:
    query = "?" + urlencode(params) if params else ""
    return dict(user.ok("GET", "/notifications" + query))


# -- counts ---------------------------------------------------------------------------------
def test_message_counts_for_the_other_members_not_the_sender(api: Api) -> None:
    alice, bob, carol, room_id = three_room(api)
    syncers = {u.user_id: Syncer(u) for u in (alice, bob, carol)}
    for s in syncers.values():
        s.sync()
    alice.send(room_id, "lunch?")
    alice.send(room_id, "anyone?")
    assert counts(syncers[bob.user_id].sync(), room_id) == (2, 0)
    assert counts(syncers[carol.user_id].sync(), room_id) == (2, 0)
    assert counts(syncers[alice.user_id].sync(), room_id) == (0, 0)
    # An initial sync says the same.
    assert counts(Syncer(bob).sync(), room_id) == (2, 0)


def test_read_receipt_resets_counts_and_shows_the_room(api: Api) -> None:
    alice, bob, _, room_id = three_room(api)
    sync = Syncer(bob)
    sync.sync()
    first = alice.send(room_id, "one")
    alice.send(room_id, "two")
    last = alice.send(room_id, "three")
    assert counts(sync.sync(), room_id) == (3, 0)
    receipt(bob, room_id, first)
    assert counts(sync.sync(), room_id) == (2, 0)
    # A private receipt clears as well; the room shows up with the new counts
    # even though nothing else happened in it.
    receipt(bob, room_id, last, "m.read.private")
    assert counts(sync.sync(), room_id) == (0, 0)
    # An older public receipt does not bring the counts back.
    receipt(bob, room_id, first)
    assert counts(Syncer(bob).sync(), room_id) == (0, 0)


def test_receipt_shows_room_even_when_receipts_are_filtered_out(api: Api) -> None:
    alice, bob, _, room_id = three_room(api)
    sync = Syncer(bob, {"room": {"ephemeral": {"not_types": ["m.receipt"]}}})
    sync.sync()
    sent = alice.send(room_id, "one")
    assert counts(sync.sync(), room_id) == (1, 0)
    receipt(bob, room_id, sent)
    assert counts(sync.sync(), room_id) == (0, 0)


def test_mentions_highlight(api: Api) -> None:
    alice, bob, carol, room_id = three_room(api)
    sync = Syncer(bob)
    sync.sync()
    alice.send(room_id, content={"msgtype": "m.text", "body": "hey you",
                                 "m.mentions": {"user_ids": [bob.user_id]}})
    assert counts(sync.sync(), room_id) == (1, 1)
    # Legacy: the display name in the body (no m.mentions) highlights too...
    name = bob.ok("GET", f"/profile/{q(bob.user_id)}/displayname")["displayname"]
    alice.send(room_id, f"{name}: lunch?")
    assert counts(sync.sync(), room_id) == (2, 2)
    # ...but not when the event has m.mentions (naming someone else).
    alice.send(room_id, content={"msgtype": "m.text", "body": f"{name} and carol",
                                 "m.mentions": {"user_ids": [carol.user_id]}})
    assert counts(sync.sync(), room_id) == (3, 2)
    # A room mention needs the power to notify the room (alice made it: 100).
    carol.send(room_id, content={"msgtype": "m.text", "body": "all",
                                 "m.mentions": {"room": True}})
    assert counts(sync.sync(), room_id) == (4, 2)
    alice.send(room_id, content={"msgtype": "m.text", "body": "all",
                                 "m.mentions": {"room": True}})
    assert counts(sync.sync(), room_id) == (5, 3)

    only = notifications(bob, only="highlight")["notifications"]
    assert [n["event"]["content"]["body"] for n in only] == ["all", f"{name}: lunch?",
                                                            "hey you"]
    assert all({"set_tweak": "highlight"} in n["actions"] for n in only)


def test_one_to_one_room_and_notices(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = room_with(alice, bob)
    sync = Syncer(bob)
    sync.sync()
    alice.send(room_id, content={"msgtype": "m.notice", "body": "beep"})
    assert counts(sync.sync(), room_id) == (0, 0)
    alice.send(room_id, "hi")
    assert counts(sync.sync(), room_id) == (1, 0)
    # Newest first: the message, then (no notice) the invite that brought bob in.
    note, invite = notifications(bob)["notifications"]
    assert note["event"]["content"]["body"] == "hi"
    assert note["actions"] == ["notify", {"set_tweak": "sound", "value": "default"}]
    assert invite["event"]["type"] == "m.room.member"


def test_disabled_and_overriding_rules_change_the_outcome(api: Api) -> None:
    alice, bob, carol, room_id = three_room(api)
    sync = Syncer(bob)
    sync.sync()
    bob.ok("PUT", "/pushrules/global/underride/.m.rule.message/enabled", {"enabled": False})
    alice.send(room_id, "quiet now")
    assert counts(sync.sync(), room_id) == (0, 0)
    # Carol's rules are her own.
    assert counts(Syncer(carol).sync(), room_id) == (1, 0)

    bob.ok("PUT", "/pushrules/global/underride/.m.rule.message/enabled", {"enabled": True})
    bob.ok("PUT", "/pushrules/global/override/no-lunch", {
        "conditions": [{"kind": "event_match", "key": "content.body", "pattern": "lunch"}],
        "actions": []})
    alice.send(room_id, "lunch time")
    alice.send(room_id, "other news")
    assert counts(sync.sync(), room_id) == (1, 0)
    # A content rule that highlights; a sender rule that silences carol.
    bob.ok("PUT", "/pushrules/global/content/cake", {
        "pattern": "cake", "actions": ["notify", {"set_tweak": "highlight"}]})
    bob.ok("PUT", f"/pushrules/global/sender/{q(carol.user_id)}", {"actions": ["dont_notify"]})
    alice.send(room_id, "there is cake")
    carol.send(room_id, "hello bob")
    assert counts(sync.sync(), room_id) == (2, 1)


def test_ignored_users_notify_nothing(api: Api) -> None:
    alice, bob, _, room_id = three_room(api)
    sync = Syncer(bob)
    sync.sync()
    bob.ok("PUT", f"/user/{q(bob.user_id)}/account_data/m.ignored_user_list",
           {"ignored_users": {alice.user_id: {}}})
    alice.send(room_id, content={"msgtype": "m.text", "body": "hey",
                                 "m.mentions": {"user_ids": [bob.user_id]}})
    # The ignored user's message is hidden, so the room has nothing new; an
    # initial sync shows the counts never moved for it.
    assert room_id not in sync.sync()["rooms"]["join"]
    assert counts(Syncer(bob).sync(), room_id) == (0, 0)
    # (Only the invite, from before bob ignored alice.)
    assert [n["event"]["type"] for n in notifications(bob)["notifications"]] == [
        "m.room.member"]


def test_thread_replies_count_under_their_root(api: Api) -> None:
    alice, bob, _, room_id = three_room(api)
    root = alice.send(room_id, "thread root")
    threaded = Syncer(bob, THREADED)
    plain = Syncer(bob)
    threaded.sync()
    plain.sync()
    in_thread = {"msgtype": "m.text", "body": "reply",
                 "m.relates_to": {"rel_type": "m.thread", "event_id": root}}
    reply = alice.send(room_id, content=in_thread)
    alice.send(room_id, content=in_thread)
    main = alice.send(room_id, "main timeline")
    body = threaded.sync()
    assert counts(body, room_id) == (2, 0)  # the root and the main message
    assert joined(body, room_id)["unread_thread_notifications"] == {
        root: {"notification_count": 2, "highlight_count": 0}}
    # Without the filter flag: no per-thread counts, the room counts everything.
    body = plain.sync()
    assert counts(body, room_id) == (4, 0)
    assert "unread_thread_notifications" not in joined(body, room_id)

    # A threaded receipt clears only its thread...
    receipt(bob, room_id, reply, thread_id=root)
    body = threaded.sync()
    assert counts(body, room_id) == (2, 0)
    assert joined(body, room_id)["unread_thread_notifications"] == {
        root: {"notification_count": 1, "highlight_count": 0}}
    receipt(bob, room_id, main, thread_id="main")
    body = threaded.sync()
    assert counts(body, room_id) == (0, 0)
    assert joined(body, room_id)["unread_thread_notifications"] == {
        root: {"notification_count": 1, "highlight_count": 0}}
    # ...an unthreaded one clears everything before it.
    receipt(bob, room_id, main)
    body = threaded.sync()
    assert counts(body, room_id) == (0, 0)
    assert joined(body, room_id)["unread_thread_notifications"] == {}


# -- /notifications -------------------------------------------------------------------------
def test_notifications_list_pages_and_read_flag(api: Api) -> None:
    alice, bob, _, room_id = three_room(api)
    sent = [alice.send(room_id, f"note {i}") for i in range(5)]
    receipt(bob, room_id, sent[1])
    page = notifications(bob, limit=2)
    got = page["notifications"]
    assert [n["event"]["event_id"] for n in got] == [sent[4], sent[3]]
    first = got[0]
    assert first["room_id"] == room_id and first["read"] is False
    assert first["actions"] == ["notify"] and "profile_tag" in first
    assert isinstance(first["ts"], int) and first["event"]["sender"] == alice.user_id
    page2 = notifications(bob, limit=2, **{"from": page["next_token"]})
    assert [n["event"]["event_id"] for n in page2["notifications"]] == [sent[2], sent[1]]
    page3 = notifications(bob, limit=2, **{"from": page2["next_token"]})
    # The oldest: the first message, then the invite that brought bob in.
    assert [n["event"]["event_id"] for n in page3["notifications"]][:1] == [sent[0]]
    assert page3["notifications"][1]["event"]["type"] == "m.room.member"
    assert [n["read"] for n in page2["notifications"] + page3["notifications"]] == \
        [False, True, True, True]
    last = notifications(bob, limit=2, **{"from": page3["next_token"]})
    assert last == {"notifications": []}
    # The sender has none; nor does a bad token get anything.
    assert notifications(alice)["notifications"] == []
    bob.err("GET", "/notifications?from=garbage", status=400, errcode="M_INVALID_PARAM")


def test_invite_notifies_the_invitee(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = alice.create_room()
    alice.invite(room_id, bob.user_id)
    (note,) = notifications(bob)["notifications"]
    assert note["event"]["type"] == "m.room.member"
    assert note["event"]["state_key"] == bob.user_id and note["room_id"] == room_id


# -- pushers --------------------------------------------------------------------------------
def pusher_body(pushkey: str = "key1", app_id: str = "com.example.app", **extra: Any,
                ) -> dict[str, Any]:
    return {"kind": "http", "app_id": app_id, "pushkey": pushkey,
            "app_display_name": "Example", "device_display_name": "Phone",
            "profile_tag": "tag", "lang": "en",
            "data": {"url": "https://push.example.org/_matrix/push/v1/notify",
                     "format": "event_id_only"}, **extra}


def pushers(user: User) -> list[dict[str, Any]]:
    return list(user.ok("GET", "/pushers")["pushers"])


def test_pushers_set_list_update_append_delete(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    assert pushers(alice) == []
    alice.ok("POST", "/pushers/set", pusher_body())
    (got,) = pushers(alice)
    assert got == {k: v for k, v in pusher_body().items()}
    # Same app_id + pushkey: updated, not added.
    alice.ok("POST", "/pushers/set", pusher_body(lang="fr"))
    assert [p["lang"] for p in pushers(alice)] == ["fr"]
    alice.ok("POST", "/pushers/set", pusher_body("key2"))
    assert sorted(p["pushkey"] for p in pushers(alice)) == ["key1", "key2"]

    # Another user taking the same app_id + pushkey removes alice's, unless appending.
    bob.ok("POST", "/pushers/set", pusher_body("key2", append=True))
    assert sorted(p["pushkey"] for p in pushers(alice)) == ["key1", "key2"]
    bob.ok("POST", "/pushers/set", pusher_body("key2"))
    assert [p["pushkey"] for p in pushers(alice)] == ["key1"]
    assert [p["pushkey"] for p in pushers(bob)] == ["key2"]

    alice.ok("POST", "/pushers/set", {"kind": None, "app_id": "com.example.app",
                                      "pushkey": "key1"})
    assert pushers(alice) == []
    assert [p["pushkey"] for p in pushers(bob)] == ["key2"]


def test_bad_pusher_bodies_are_refused_and_store_nothing(api: Api) -> None:
    alice = new_user(api, "alice")
    cases: list[tuple[dict[str, Any], str]] = [
        ({k: v for k, v in pusher_body().items() if k != "pushkey"}, "M_MISSING_PARAM"),
        ({k: v for k, v in pusher_body().items() if k != "kind"}, "M_MISSING_PARAM"),
        ({k: v for k, v in pusher_body().items() if k != "lang"}, "M_MISSING_PARAM"),
        ({k: v for k, v in pusher_body().items() if k != "data"}, "M_MISSING_PARAM"),
        (pusher_body(data={"format": "event_id_only"}), "M_MISSING_PARAM"),
        (pusher_body(data={"url": "ftp://push.example.org/x"}), "M_INVALID_PARAM"),
        (pusher_body(data={"url": "not a url"}), "M_INVALID_PARAM"),
        (pusher_body(data="https://push.example.org"), "M_INVALID_PARAM"),
        (pusher_body(kind="carrier-pigeon"), "M_INVALID_PARAM"),
        (pusher_body(app_id="x" * 65), "M_INVALID_PARAM"),
        (pusher_body(pushkey="k" * 513), "M_INVALID_PARAM"),
        (pusher_body(pushkey=5), "M_INVALID_PARAM"),
        (pusher_body(append="yes"), "M_INVALID_PARAM"),
    ]
    for body, errcode in cases:
        alice.err("POST", "/pushers/set", body, status=400, errcode=errcode)
    assert pushers(alice) == []
    status, _ = api.request("GET", V3 + "/pushers")
    assert status == 401


def test_pushers_go_with_their_device(api: Api) -> None:
    alice = new_user(api, "alice")
    phone = second_device(api, alice)
    laptop = second_device(api, alice)
    phone.ok("POST", "/pushers/set", pusher_body("phone"))
    laptop.ok("POST", "/pushers/set", pusher_body("laptop"))
    alice.ok("POST", "/pushers/set", pusher_body("first"))
    assert sorted(p["pushkey"] for p in pushers(alice)) == ["first", "laptop", "phone"]
    phone.ok("POST", "/logout", {})
    assert sorted(p["pushkey"] for p in pushers(alice)) == ["first", "laptop"]

    # A password change logging out the other devices takes their pushers.
    alice.ok("POST", "/account/password", {
        "new_password": "new horse", "logout_devices": True,
        "auth": {"type": "m.login.password", "password": "correct horse",
                 "identifier": {"type": "m.id.user", "user": alice.user_id}}})
    assert [p["pushkey"] for p in pushers(alice)] == ["first"]


def test_password_change_keeping_devices_keeps_pushers(api: Api) -> None:
    alice = new_user(api, "alice")
    other = second_device(api, alice)
    other.ok("POST", "/pushers/set", pusher_body("other"))
    alice.ok("POST", "/account/password", {
        "new_password": "new horse", "logout_devices": False,
        "auth": {"type": "m.login.password", "password": "correct horse",
                 "identifier": {"type": "m.id.user", "user": alice.user_id}}})
    assert [p["pushkey"] for p in pushers(alice)] == ["other"]
    other.ok("POST", "/logout/all", {})
    status, login = api.request("POST", V3 + "/login", {
        "type": "m.login.password", "password": "new horse",
        "identifier": {"type": "m.id.user", "user": alice.user_id}})
    assert status == 200, login
    status, body = api.request("GET", V3 + "/pushers", token=login["access_token"])
    assert status == 200 and body["pushers"] == []


def test_changing_display_name_marks_nothing_read(api: Api) -> None:
    alice, bob, _, room_id = three_room(api)
    sync = Syncer(bob)
    sync.sync()
    alice.send(room_id, "one")
    alice.send(room_id, "two")
    assert counts(sync.sync(), room_id) == (2, 0)
    bob.ok("PUT", f"/profile/{q(bob.user_id)}/displayname", {"displayname": "Robert"})
    assert counts(sync.sync(), room_id) == (2, 0)
