"""Joining, leaving, inviting and knocking between Myelin and a real Synapse,
in both directions: Synapse is the other implementation our handshakes must
agree with (its templates, its invite v2, its send_join answers)."""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

from tests.support.fed_client import FedUser
from tests.support.federation import MyelinPeer
from tests.support.synapse_peer import SynapsePeer

q = urllib.parse.quote
Pair = tuple[MyelinPeer, SynapsePeer]


def section(user: FedUser, name: str, room_id: str) -> dict[str, Any]:
    got = user.wait(lambda rs: any(room_id in r.get("rooms", {}).get(name, {}) for r in rs),
                    f"{room_id} in rooms.{name}")
    return next(r["rooms"][name][room_id] for r in got
                if room_id in r.get("rooms", {}).get(name, {}))


def test_a_synapse_user_is_invited_to_a_myelin_room_and_joins(synapse_pair: Pair) -> None:
    myelin, synapse = synapse_pair
    alice, bob = FedUser.make(myelin, "alice"), FedUser.make(synapse, "bob")
    bob.catch_up()
    room = alice.create_room(preset="private_chat", name="on myelin")
    alice.invite(room, bob.user_id)
    invite = section(bob, "invite", room)
    names = [e for e in invite["invite_state"]["events"] if e["type"] == "m.room.name"]
    assert names and names[0]["content"]["name"] == "on myelin"
    bob.ok("POST", f"/join/{q(room)}", {}, timeout=120)
    alice.wait_membership(room, bob.user_id, "join")
    bob.send(room, "hi from synapse")
    alice.wait_bodies(room, ["hi from synapse"])


def test_a_myelin_user_is_invited_to_a_synapse_room_and_joins(synapse_pair: Pair) -> None:
    myelin, synapse = synapse_pair
    carol, dave = FedUser.make(synapse, "carol"), FedUser.make(myelin, "dave")
    dave.catch_up()
    room = carol.create_room(preset="private_chat", name="on synapse")
    carol.invite(room, dave.user_id)
    invite = section(dave, "invite", room)
    stripped = {(e["type"], e.get("state_key")): e for e in invite["invite_state"]["events"]}
    assert stripped[("m.room.name", "")]["content"]["name"] == "on synapse"
    assert stripped[("m.room.member", dave.user_id)]["sender"] == carol.user_id
    dave.ok("POST", f"/join/{q(room)}", {}, timeout=120)
    carol.wait_membership(room, dave.user_id, "join")
    assert dave.members(room) == {carol.user_id: "join", dave.user_id: "join"}
    dave.send(room, "hi from myelin")
    carol.wait_bodies(room, ["hi from myelin"])
    carol.send(room, "hi back")
    dave.wait_bodies(room, ["hi back"])


def test_a_myelin_user_rejects_a_synapse_invite(synapse_pair: Pair) -> None:
    myelin, synapse = synapse_pair
    carol, dave = FedUser.make(synapse, "carol"), FedUser.make(myelin, "dave")
    dave.catch_up()
    room = carol.create_room(preset="private_chat")
    carol.invite(room, dave.user_id)
    section(dave, "invite", room)
    dave.leave(room)
    section(dave, "leave", room)
    carol.wait_membership(room, dave.user_id, "leave")


def test_a_myelin_user_joins_a_synapse_room_by_alias_leaves_and_rejoins(
        synapse_pair: Pair) -> None:
    myelin, synapse = synapse_pair
    carol, dave = FedUser.make(synapse, "carol"), FedUser.make(myelin, "dave")
    localpart = f"square{os.urandom(3).hex()}"
    room = carol.create_room(preset="public_chat", room_alias_name=localpart)
    out = dave.ok("POST", f"/join/{q('#' + localpart + ':' + synapse.server_name)}", {},
                  timeout=120)
    assert out["room_id"] == room
    carol.wait_membership(room, dave.user_id, "join")
    dave.leave(room)
    carol.wait_membership(room, dave.user_id, "leave")
    assert dave.join_remote(room, [synapse.server_name]) == room
    carol.wait_membership(room, dave.user_id, "join")


def test_a_myelin_user_knocks_on_a_synapse_room(synapse_pair: Pair) -> None:
    myelin, synapse = synapse_pair
    carol, dave = FedUser.make(synapse, "carol"), FedUser.make(myelin, "dave")
    dave.catch_up()
    room = carol.create_room(preset="private_chat", room_version="10",
                             initial_state=[{"type": "m.room.join_rules", "state_key": "",
                                             "content": {"join_rule": "knock"}}])
    dave.ok("POST", f"/knock/{q(room)}?via={q(synapse.server_name)}", {}, timeout=120)
    knock = section(dave, "knock", room)
    assert any(e["type"] == "m.room.join_rules" for e in knock["knock_state"]["events"])
    carol.wait_membership(room, dave.user_id, "knock")


def test_a_synapse_user_knocks_on_a_myelin_room_and_is_let_in(synapse_pair: Pair) -> None:
    myelin, synapse = synapse_pair
    alice, bob = FedUser.make(myelin, "alice"), FedUser.make(synapse, "bob")
    bob.catch_up()
    room = alice.create_room(preset="private_chat", room_version="10",
                             initial_state=[{"type": "m.room.join_rules", "state_key": "",
                                             "content": {"join_rule": "knock"}}])
    bob.ok("POST", f"/knock/{q(room)}?server_name={q(myelin.server_name)}", {}, timeout=120)
    alice.wait_membership(room, bob.user_id, "knock")
    alice.invite(room, bob.user_id)
    section(bob, "invite", room)
    bob.ok("POST", f"/join/{q(room)}", {}, timeout=120)
    alice.wait_membership(room, bob.user_id, "join")
