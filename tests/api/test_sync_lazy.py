"""Lazy-loaded members across incremental syncs, room summaries, strict filter
fields: over raw HTTP on both engines.

A lazy-loading client is sent the members of the senders it sees, once per
sync sequence (again only if it asks for redundant members); a sync with a
gap carries every membership change in the gap. A room with a name has no
heroes in its summary.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.rooms_support import Api, User
from tests.api.test_sync import Syncer, api, joined, new_user, send_many

__all__ = ["api"]

LAZY: dict[str, Any] = {"room": {"state": {"lazy_load_members": True},
                                 "timeline": {"limit": 10}}}
LAZY_REDUNDANT: dict[str, Any] = {
    "room": {"state": {"lazy_load_members": True, "include_redundant_members": True},
             "timeline": {"limit": 10}}}


def members(body: dict[str, Any], room_id: str) -> dict[str, str]:
    """state_key -> membership of the member events in a room's state block."""
    room = body["rooms"]["join"].get(room_id)
    events = room["state"]["events"] if room else []
    return {e["state_key"]: e["content"]["membership"] for e in events
            if e["type"] == "m.room.member"}


def public_room(owner: User, *joiners: User) -> str:
    room_id = owner.create_room(preset="public_chat", name="lazy")
    for user in joiners:
        user.join(room_id)
    return room_id


def test_incremental_sync_sends_only_new_senders_members(api: Api) -> None:
    alice, bob, carol = (new_user(api, n) for n in ("alice", "bob", "carol"))
    room = public_room(alice, bob, carol)
    send_many(bob, room, 10)
    sync = Syncer(alice, LAZY)
    assert members(sync.sync(), room) == {alice.user_id: "join", bob.user_id: "join"}
    carol.send(room, "from carol")
    assert members(sync.sync(), room) == {carol.user_id: "join"}
    bob.send(room, "bob again")
    carol.send(room, "carol again")
    assert members(sync.sync(), room) == {}


def test_redundant_members_are_sent_again_when_asked(api: Api) -> None:
    alice, bob, carol = (new_user(api, n) for n in ("alice", "bob", "carol"))
    room = public_room(alice, bob, carol)
    send_many(bob, room, 10)
    send_many(carol, room, 5)
    sync = Syncer(alice, LAZY_REDUNDANT)
    assert set(members(sync.sync(), room)) == {alice.user_id, bob.user_id, carol.user_id}
    bob.send(room, "again")
    carol.send(room, "again")
    assert set(members(sync.sync(), room)) == {bob.user_id, carol.user_id}


def test_gappy_sync_carries_membership_changes_of_the_gap(api: Api) -> None:
    alice, bob, carol, dave = (new_user(api, n) for n in ("alice", "bob", "carol", "dave"))
    room = public_room(alice, bob, carol)
    send_many(bob, room, 10)
    sync = Syncer(alice, LAZY)
    assert set(members(sync.sync(), room)) == {alice.user_id, bob.user_id}

    dave.join(room)  # joins during the gap, says nothing
    send_many(carol, room, 20)
    body = sync.sync()
    assert joined(body, room)["timeline"]["limited"] is True
    assert members(body, room) == {carol.user_id: "join", dave.user_id: "join"}

    dave.leave(room)
    send_many(carol, room, 20)
    # Carol's member was sent last time: only Dave's leave is new.
    assert members(sync.sync(), room) == {dave.user_id: "leave"}


def test_gappy_sync_sends_a_returning_speakers_member(api: Api) -> None:
    alice, bob, carol = (new_user(api, n) for n in ("alice", "bob", "carol"))
    room = public_room(alice, bob, carol)
    send_many(bob, room, 10)
    sync = Syncer(alice, LAZY)
    sync.sync()
    send_many(bob, room, 10)
    send_many(carol, room, 10)
    assert members(sync.sync(), room) == {carol.user_id: "join"}


def test_a_new_sync_sequence_sends_members_again(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room = public_room(alice, bob)
    send_many(bob, room, 12)
    first = Syncer(alice, LAZY)
    first.sync()
    assert bob.user_id in members(Syncer(alice, LAZY).sync(), room)


# -- summaries ---------------------------------------------------------------------------

def test_named_room_summary_has_counts_but_no_heroes(api: Api) -> None:
    alice, bob, carol = (new_user(api, n) for n in ("alice", "bob", "carol"))
    named = public_room(alice, bob, carol)
    summary = joined(Syncer(alice, LAZY).sync(), named)["summary"]
    assert summary == {"m.joined_member_count": 3, "m.invited_member_count": 0}

    unnamed = alice.create_room(preset="public_chat")
    bob.join(unnamed)
    carol.join(unnamed)
    summary = joined(Syncer(alice, LAZY).sync(), unnamed)["summary"]
    assert summary == {"m.joined_member_count": 3, "m.invited_member_count": 0,
                       "m.heroes": sorted([bob.user_id, carol.user_id])}

    # Everyone else left: the heroes are the ones who were here.
    bob.leave(unnamed)
    carol.leave(unnamed)
    summary = joined(Syncer(alice).sync(), unnamed)["summary"]
    assert summary["m.joined_member_count"] == 1
    assert summary["m.heroes"] == sorted([bob.user_id, carol.user_id])


# -- filters -------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["lazy_load_members", "include_redundant_members"])
@pytest.mark.parametrize("value", ["true", 1, {}])
def test_lazy_loading_flags_must_be_booleans(api: Api, field: str, value: Any) -> None:
    alice = new_user(api, "alice")
    bad = {"room": {"state": {field: value}}}
    alice.err("POST", f"/user/{alice.user_id}/filter", bad, status=400, errcode="M_BAD_JSON")
    alice.ok("POST", f"/user/{alice.user_id}/filter", {"room": {"state": {field: True}}})


@pytest.mark.parametrize("bad", [{"room": {"timeline": {"rooms": ["not_a_room_id"]}}},
                                 {"room": {"timeline": {"senders": ["not_a_sender_id"]}}},
                                 {"room": {"rooms": ["#alias:x"]}},
                                 {"room": {"timeline": {"not_senders": ["@nocolon"]}}}])
def test_filters_naming_things_that_are_not_ids_are_refused(api: Api,
                                                            bad: dict[str, Any]) -> None:
    alice = new_user(api, "alice")
    alice.err("POST", f"/user/{alice.user_id}/filter", bad, status=400, errcode="M_BAD_JSON")


# -- other sync edges ------------------------------------------------------------------------

def test_ignored_users_events_and_invites_are_left_out(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room = public_room(bob, alice)
    alice.ok("PUT", f"/user/{alice.user_id}/account_data/m.ignored_user_list",
             {"ignored_users": {bob.user_id: {}}})
    sync = Syncer(alice)
    sync.sync()
    bob.send(room, "ignored")
    alice.send(room, "mine")
    invite_room = bob.create_room()
    bob.invite(invite_room, alice.user_id)
    body = sync.sync()
    assert [e["sender"] for e in joined(body, room)["timeline"]["events"]] == [alice.user_id]
    assert invite_room not in body["rooms"]["invite"]
    assert invite_room not in Syncer(alice).sync()["rooms"]["invite"]


def test_presence_of_users_newly_sharing_a_room(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room = alice.create_room(preset="public_chat")
    for user in (alice, bob):
        user.ok("PUT", f"/presence/{user.user_id}/status", {"presence": "online"})
    alice_sync, bob_sync = Syncer(alice), Syncer(bob)
    alice_sync.sync()
    bob_sync.sync()
    bob.join(room)
    senders = [e["sender"] for e in alice_sync.sync()["presence"]["events"]]
    assert bob.user_id in senders
    senders = [e["sender"] for e in bob_sync.sync()["presence"]["events"]]
    assert alice.user_id in senders


def test_room_joined_and_left_between_syncs_comes_with_its_state(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room = alice.create_room()
    alice.put_state(room, "a.test.state", {"my_key": 1})
    alice.invite(room, bob.user_id)
    only = {"room": {"timeline": {"types": []}, "state": {"types": ["a.test.state"]},
                     "include_leave": True}}
    sync = Syncer(bob, only)
    sync.sync()
    bob.join(room)
    bob.leave(room)
    left = sync.sync()["rooms"]["leave"][room]
    assert [(e["type"], e["content"]) for e in left["state"]["events"]] == \
        [("a.test.state", {"my_key": 1})]


def test_current_state_shows_in_the_timeline_despite_history_visibility(api: Api) -> None:
    creator, syncer, invitee = (new_user(api, n) for n in ("creator", "syncer", "invitee"))
    room = creator.create_room(preset="public_chat")
    syncer.join(room)
    creator.put_state(room, "m.room.history_visibility", {"history_visibility": "joined"})
    creator.invite(room, invitee.user_id)
    sync = Syncer(syncer)
    sync.sync()
    syncer.leave(room)
    invitee.join(room)
    syncer.join(room)
    events = joined(sync.sync(), room)["timeline"]["events"]
    assert any(e["type"] == "m.room.member" and e["state_key"] == invitee.user_id
               and e["content"]["membership"] == "join" for e in events)
