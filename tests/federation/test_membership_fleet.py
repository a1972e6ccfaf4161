"""Membership across servers when one side is a fleet: federation served by
the generic workers, a remote user's join persisted through the room's
persister, an incoming invite kept by the persister of its room, our joins
and rejections made from whichever worker took the client's request."""

from __future__ import annotations

import urllib.parse

from tests.support.fed_client import FedUser
from tests.support.federation import FleetPeer, MyelinPeer

q = urllib.parse.quote
Pair = tuple[FleetPeer, MyelinPeer]


def in_section(user: FedUser, name: str, room_id: str) -> None:
    """Until /sync has shown ``room_id`` in ``rooms.<name>`` (counting what it
    has already sent this user)."""
    user.wait(lambda _: any(room_id in r.get("rooms", {}).get(name, {}) for r in user.seen),
              f"{room_id} in rooms.{name}")


def test_a_remote_user_joins_a_fleet_room_and_talks(fleet_pair: Pair) -> None:
    fleet, mono = fleet_pair
    alice, bob = FedUser.make(fleet, "alice"), FedUser.make(mono, "bob")
    room = alice.create_room(preset="public_chat")
    assert bob.join_remote(room, [fleet.server_name]) == room
    alice.wait_membership(room, bob.user_id, "join")
    bob.send(room, "into the fleet")
    alice.wait_bodies(room, ["into the fleet"])
    alice.send(room, "out of the fleet")
    bob.wait_bodies(room, ["out of the fleet"])


def test_a_fleet_user_is_invited_joins_and_rejects_another(fleet_pair: Pair) -> None:
    fleet, mono = fleet_pair
    carol, dave = FedUser.make(mono, "carol"), FedUser.make(fleet, "dave")
    dave.catch_up()
    room = carol.create_room(preset="private_chat", name="from outside")
    other = carol.create_room(preset="private_chat")
    carol.invite(room, dave.user_id)
    carol.invite(other, dave.user_id)
    in_section(dave, "invite", room)
    in_section(dave, "invite", other)
    dave.ok("POST", f"/join/{q(room)}", {}, timeout=120)
    carol.wait_membership(room, dave.user_id, "join")
    dave.send(room, "from a worker")
    carol.wait_bodies(room, ["from a worker"])
    dave.leave(other)
    in_section(dave, "leave", other)
    carol.wait_membership(other, dave.user_id, "leave")
