"""Joining, leaving, inviting and knocking across two Myelin servers.

``host`` holds the rooms (alice, its users); ``far`` is the other server
(bob). Everything goes over loopback TLS through each server's nginx. The
last tests speak to ``host`` as ``far`` would, with ``far``'s signing key,
to check what the membership endpoints refuse (and that a refusal changes
nothing).
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

import pytest

from tests.support.fed_client import FedUser, sign_request, signing_key
from tests.support.federation import MyelinPeer

q = urllib.parse.quote
Pair = tuple[MyelinPeer, MyelinPeer]


def membership(user: FedUser, room_id: str, user_id: str) -> str | None:
    status, event = user.get_state(room_id, "m.room.member", user_id)
    return event.get("membership") if status == 200 else None


def section(user: FedUser, name: str, room_id: str) -> dict[str, Any]:
    """Sync on until ``room_id`` shows in ``rooms.<name>``; that entry."""
    got = user.wait(lambda rs: any(room_id in r.get("rooms", {}).get(name, {}) for r in rs),
                    f"{room_id} in rooms.{name}")
    return next(r["rooms"][name][room_id] for r in got
                if room_id in r.get("rooms", {}).get(name, {}))


def as_far(pair: Pair, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """A request to host signed by far (as far's server would send it)."""
    host, far = pair
    key = signing_key(os.path.join(far.workdir, "signing.key"))
    auth = sign_request(key, far.server_name, host.server_name, method, path, body)
    return host.https(method, path, body, {"Authorization": auth})


# -- invites --------------------------------------------------------------------------

def test_an_invite_crosses_and_the_invitee_joins_both_see_the_join(myelin_pair: Pair) -> None:
    host, far = myelin_pair
    alice, bob = FedUser.make(host, "alice"), FedUser.make(far, "bob")
    bob.catch_up()
    room = alice.create_room(preset="private_chat", name="invite-only")
    alice.invite(room, bob.user_id)
    invite = section(bob, "invite", room)
    stripped = {(e["type"], e.get("state_key")): e for e in invite["invite_state"]["events"]}
    assert stripped[("m.room.name", "")]["content"]["name"] == "invite-only"
    assert stripped[("m.room.member", bob.user_id)]["sender"] == alice.user_id
    assert stripped[("m.room.member", alice.user_id)]["content"]["membership"] == "join"
    # The invite event on host carries far's signature as well as host's.
    assert membership(alice, room, bob.user_id) == "invite"
    bob.ok("POST", f"/rooms/{q(room)}/join", {}, timeout=120)
    assert room in bob.ok("GET", "/joined_rooms")["joined_rooms"]
    alice.wait_membership(room, bob.user_id, "join")
    assert bob.members(room) == alice.members(room) == {alice.user_id: "join",
                                                        bob.user_id: "join"}
    # The room behaves as any room for bob now: he talks and host hears it.
    bob.send(room, "hello from far")
    alice.wait_bodies(room, ["hello from far"])


def test_a_rejected_invite_is_a_leave_on_both_servers(myelin_pair: Pair) -> None:
    host, far = myelin_pair
    alice, bob = FedUser.make(host, "alice"), FedUser.make(far, "bob")
    bob.catch_up()
    room = alice.create_room(preset="private_chat")
    alice.invite(room, bob.user_id)
    section(bob, "invite", room)
    bob.leave(room)
    section(bob, "leave", room)
    alice.wait_membership(room, bob.user_id, "leave")
    assert room not in bob.ok("GET", "/joined_rooms")["joined_rooms"]
    # Rejected is rejected: a second leave has nothing to leave.
    status, body = bob.req("POST", f"/rooms/{q(room)}/leave", {})
    assert status == 403, body


# -- join, leave, ban, rejoin -----------------------------------------------------------

def test_leave_ban_unban_rejoin(myelin_pair: Pair) -> None:
    host, far = myelin_pair
    alice, bob = FedUser.make(host, "alice"), FedUser.make(far, "bob")
    room = alice.create_room(preset="public_chat")
    assert bob.join_remote(room, [host.server_name]) == room
    alice.wait_membership(room, bob.user_id, "join")

    bob.leave(room)
    alice.wait_membership(room, bob.user_id, "leave")
    alice.ban(room, bob.user_id)
    status, body = bob.req("POST", f"/join/{q(room)}?server_name={q(host.server_name)}", {})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN", body
    assert membership(alice, room, bob.user_id) == "ban"

    alice.unban(room, bob.user_id)
    assert bob.join_remote(room, [host.server_name]) == room
    alice.wait_membership(room, bob.user_id, "join")
    alice.send(room, "welcome back")
    bob.wait_bodies(room, ["welcome back"])


def test_a_joined_remote_user_who_is_banned_is_out_and_may_not_rejoin(
        myelin_pair: Pair) -> None:
    host, far = myelin_pair
    alice, bob = FedUser.make(host, "alice"), FedUser.make(far, "bob")
    room = alice.create_room(preset="public_chat")
    assert bob.join_remote(room, [host.server_name]) == room
    alice.wait_membership(room, bob.user_id, "join")
    bob.catch_up()
    alice.ban(room, bob.user_id, reason="spam")
    section(bob, "leave", room)
    assert room not in bob.ok("GET", "/joined_rooms")["joined_rooms"]
    # Banned, bob reads nothing more of the room.
    status, body = bob.get_state(room, "m.room.member", bob.user_id)
    assert status == 403, body
    status, body = bob.req("POST", f"/join/{q(room)}?server_name={q(host.server_name)}", {})
    assert status == 403, body
    alice.unban(room, bob.user_id)
    assert bob.join_remote(room, [host.server_name]) == room
    alice.wait_membership(room, bob.user_id, "join")


def test_a_remote_alias_is_resolved_and_joined_without_naming_a_server(
        myelin_pair: Pair) -> None:
    host, far = myelin_pair
    alice, bob = FedUser.make(host, "alice"), FedUser.make(far, "bob")
    localpart = f"lobby{os.urandom(3).hex()}"
    room = alice.create_room(preset="public_chat", room_alias_name=localpart)
    alias = f"#{localpart}:{host.server_name}"
    out = bob.ok("POST", f"/join/{q(alias)}", {}, timeout=120)
    assert out["room_id"] == room
    alice.wait_membership(room, bob.user_id, "join")
    status, body = bob.req("POST", f"/join/{q('#nowhere:' + host.server_name)}", {})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND", body


def test_joining_a_room_nobody_can_reach_is_not_found(myelin_pair: Pair) -> None:
    _, far = myelin_pair
    bob = FedUser.make(far, "bob")
    status, body = bob.req("POST", f"/join/{q('!nothing:' + far.server_name)}", {})
    assert status == 404, body
    assert bob.ok("GET", "/joined_rooms")["joined_rooms"] == []


# -- knocking ----------------------------------------------------------------------------

def test_a_knock_crosses_and_is_let_in(myelin_pair: Pair) -> None:
    host, far = myelin_pair
    alice, bob = FedUser.make(host, "alice"), FedUser.make(far, "bob")
    bob.catch_up()
    room = alice.create_room(preset="private_chat", room_version="10", name="knock here",
                             initial_state=[{"type": "m.room.join_rules", "state_key": "",
                                             "content": {"join_rule": "knock"}}])
    out = bob.ok("POST", f"/knock/{q(room)}?server_name={q(host.server_name)}",
                 {"reason": "let me in"}, timeout=120)
    assert out["room_id"] == room
    knock = section(bob, "knock", room)
    stripped = {(e["type"], e.get("state_key")): e for e in knock["knock_state"]["events"]}
    assert stripped[("m.room.join_rules", "")]["content"]["join_rule"] == "knock"
    assert stripped[("m.room.member", bob.user_id)]["content"]["membership"] == "knock"
    alice.wait_membership(room, bob.user_id, "knock")
    alice.invite(room, bob.user_id)
    section(bob, "invite", room)
    bob.ok("POST", f"/join/{q(room)}", {}, timeout=120)
    alice.wait_membership(room, bob.user_id, "join")


def test_a_knock_can_be_taken_back(myelin_pair: Pair) -> None:
    host, far = myelin_pair
    alice, bob = FedUser.make(host, "alice"), FedUser.make(far, "bob")
    bob.catch_up()
    room = alice.create_room(preset="private_chat", room_version="10",
                             initial_state=[{"type": "m.room.join_rules", "state_key": "",
                                             "content": {"join_rule": "knock"}}])
    bob.ok("POST", f"/knock/{q(room)}?via={q(host.server_name)}", {}, timeout=120)
    section(bob, "knock", room)
    alice.wait_membership(room, bob.user_id, "knock")
    bob.leave(room)
    section(bob, "leave", room)
    alice.wait_membership(room, bob.user_id, "leave")


def test_knocking_where_the_join_rule_is_not_knock_is_forbidden(myelin_pair: Pair) -> None:
    host, far = myelin_pair
    alice, bob = FedUser.make(host, "alice"), FedUser.make(far, "bob")
    room = alice.create_room(preset="private_chat", room_version="10")
    status, body = bob.req("POST", f"/knock/{q(room)}?via={q(host.server_name)}", {})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN", body
    assert membership(alice, room, bob.user_id) is None


# -- restricted rooms -------------------------------------------------------------------

def test_a_member_of_an_allowed_room_joins_a_restricted_room_through_its_server(
        myelin_pair: Pair) -> None:
    host, far = myelin_pair
    alice, bob = FedUser.make(host, "alice"), FedUser.make(far, "bob")
    lobby = alice.create_room(preset="public_chat")
    rule = {"join_rule": "restricted",
            "allow": [{"type": "m.room_membership", "room_id": lobby}]}
    inner = alice.create_room(preset="private_chat", room_version="10",
                              initial_state=[{"type": "m.room.join_rules", "state_key": "",
                                              "content": rule}])
    # Not yet a member of the lobby: refused.
    status, body = bob.req("POST", f"/join/{q(inner)}?via={q(host.server_name)}", {})
    assert status == 403, body
    assert bob.join_remote(lobby, [host.server_name]) == lobby
    alice.wait_membership(lobby, bob.user_id, "join")
    assert bob.join_remote(inner, [host.server_name]) == inner
    alice.wait_membership(inner, bob.user_id, "join")
    status, join = alice.get_state(inner, "m.room.member", bob.user_id)
    assert status == 200 and join["join_authorised_via_users_server"] == alice.user_id


# -- what host refuses ------------------------------------------------------------------

@pytest.fixture(scope="module")
def public_room(myelin_pair: Pair) -> tuple[FedUser, str]:
    alice = FedUser.make(myelin_pair[0], "alice")
    return alice, alice.create_room(preset="public_chat")


def test_make_join_names_the_room_version_a_server_lacks(
        myelin_pair: Pair, public_room: tuple[FedUser, str]) -> None:
    _, room = public_room
    user = f"@someone:{myelin_pair[1].server_name}"
    status, body = as_far(myelin_pair, "GET",
                          f"/_matrix/federation/v1/make_join/{q(room)}/{q(user)}?ver=1")
    assert status == 400 and body["errcode"] == "M_INCOMPATIBLE_ROOM_VERSION", body
    assert body["room_version"] != "1"
    status, body = as_far(myelin_pair, "GET",
                          f"/_matrix/federation/v1/make_join/{q(room)}/{q(user)}"
                          f"?ver=10&ver=11&ver=12")
    assert status == 200, body
    event = body["event"]
    assert event["content"]["membership"] == "join" and event["state_key"] == user


def test_make_join_for_a_user_of_another_server_is_forbidden(
        myelin_pair: Pair, public_room: tuple[FedUser, str]) -> None:
    alice, room = public_room
    status, body = as_far(myelin_pair, "GET", f"/_matrix/federation/v1/make_join/{q(room)}/"
                          f"{q(alice.user_id)}?ver=10&ver=11&ver=12")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN", body


def test_make_join_of_an_unknown_room_is_not_found(myelin_pair: Pair) -> None:
    user = f"@someone:{myelin_pair[1].server_name}"
    room = f"!unknown:{myelin_pair[0].server_name}"
    status, body = as_far(myelin_pair, "GET",
                          f"/_matrix/federation/v1/make_join/{q(room)}/{q(user)}?ver=10")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND", body


def test_make_join_unsigned_is_unauthorized(myelin_pair: Pair,
                                            public_room: tuple[FedUser, str]) -> None:
    _, room = public_room
    user = f"@someone:{myelin_pair[1].server_name}"
    status, body = myelin_pair[0].https(
        "GET", f"/_matrix/federation/v1/make_join/{q(room)}/{q(user)}?ver=10")
    assert status == 401, body


def test_send_join_of_another_event_than_the_path_names_changes_nothing(
        myelin_pair: Pair, public_room: tuple[FedUser, str]) -> None:
    alice, room = public_room
    before = alice.members(room)
    user = f"@mallory:{myelin_pair[1].server_name}"
    status, body = as_far(myelin_pair, "PUT",
                          f"/_matrix/federation/v2/send_join/{q(room)}/{q('$nope')}",
                          {"type": "m.room.member", "room_id": room, "sender": user,
                           "state_key": user, "content": {"membership": "join"},
                           "depth": 5, "prev_events": [], "auth_events": [],
                           "origin_server_ts": 1})
    assert status in (400, 403), body
    assert alice.members(room) == before


def test_a_third_party_invite_exchange_without_a_pending_invite_is_refused(
        myelin_pair: Pair, public_room: tuple[FedUser, str]) -> None:
    alice, room = public_room
    before = alice.members(room)
    user = f"@carol:{myelin_pair[1].server_name}"
    body = {"type": "m.room.member", "room_id": room, "sender": alice.user_id,
            "state_key": user,
            "content": {"membership": "invite", "third_party_invite": {
                "display_name": "carol", "signed": {"mxid": user, "token": "nope",
                                                    "signatures": {}}}}}
    status, answer = as_far(myelin_pair, "PUT",
                            f"/_matrix/federation/v1/exchange_third_party_invite/{q(room)}",
                            body)
    assert status == 403 and answer["errcode"] == "M_FORBIDDEN", answer
    assert alice.members(room) == before
