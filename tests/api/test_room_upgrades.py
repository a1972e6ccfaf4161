"""Room upgrades over HTTP, on SQLite and PostgreSQL: the two rooms point at
each other (tombstone → replacement_room, create → predecessor), state, bans,
aliases and the directory listing move, the old room is closed to ordinary
users, members see the tombstone, and who may not upgrade gets 403 and
changes nothing. Across room versions, v12's creator rules included."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.rooms_support import Api, User, q
from tests.support.server import ServerProcess

_names = itertools.count()


@pytest.fixture
def api(hs: ServerProcess) -> Iterator[Api]:
    yield Api(hs)


def new_user(api: Api, name: str) -> User:
    return api.user(f"{name}{next(_names)}")


def upgrade(user: User, room: str, version: str, **extra: Any) -> str:
    answer = user.ok("POST", f"/rooms/{q(room)}/upgrade", {"new_version": version, **extra})
    return str(answer["replacement_room"])


def content(user: User, room: str, etype: str, state_key: str = "") -> dict[str, Any]:
    return dict(user.state_map(room)[(etype, state_key)]["content"])


def test_upgrade_points_both_ways_and_moves_the_room(api: Api) -> None:
    alice, bob, mallory = (new_user(api, n) for n in ("alice", "bob", "mallory"))
    server = alice.user_id.split(":", 1)[1]
    alias = f"#upgrade{next(_names)}:{server}"
    old = alice.create_room(preset="public_chat", visibility="public", name="Old name",
                            topic="Old topic", room_version="9",
                            room_alias_name=alias[1:].split(":")[0])
    alice.put_state(old, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})
    alice.put_state(old, "m.room.guest_access", {"guest_access": "forbidden"})
    alice.put_state(old, "org.example.custom", {"not": "copied"})
    bob.join(old)
    mallory.join(old)
    alice.ok("POST", f"/rooms/{q(old)}/ban", {"user_id": mallory.user_id})
    since = bob.ok("GET", "/sync?timeout=0")["next_batch"]

    new = upgrade(alice, old, "10")
    assert new != old
    # The old room's tombstone points at the new one, and bob sees it.
    tombstone = content(bob, old, "m.room.tombstone")
    assert tombstone["replacement_room"] == new and tombstone["body"]
    sync = bob.ok("GET", f"/sync?timeout=0&since={since}")
    timeline = sync["rooms"]["join"][old]["timeline"]["events"]
    assert any(e["type"] == "m.room.tombstone" and e["content"]["replacement_room"] == new
               for e in timeline)
    # The new create event points back, in the new version.
    alice_state = alice.state_map(new)
    create = alice_state[("m.room.create", "")]["content"]
    assert create["predecessor"]["room_id"] == old and create["room_version"] == "10"
    tombstone_id = bob.state_map(old)[("m.room.tombstone", "")]["event_id"]
    assert create["predecessor"]["event_id"] == tombstone_id
    # State carried over; what is not on the list is not.
    assert content(alice, new, "m.room.name") == {"name": "Old name"}
    assert content(alice, new, "m.room.topic")["topic"] == "Old topic"
    assert content(alice, new, "m.room.encryption") == {"algorithm": "m.megolm.v1.aes-sha2"}
    assert content(alice, new, "m.room.join_rules") == {"join_rule": "public"}
    assert content(alice, new, "m.room.guest_access") == {"guest_access": "forbidden"}
    assert ("org.example.custom", "") not in alice_state
    assert content(alice, new, "m.room.member", mallory.user_id)["membership"] == "ban"
    assert ("m.room.member", bob.user_id) not in alice_state  # members join themselves
    old_power = content(alice, old, "m.room.power_levels")
    new_power = content(alice, new, "m.room.power_levels")
    assert new_power["users"] == {alice.user_id: 100}
    assert new_power["events_default"] == 0 and new_power["invite"] == 0
    # The old room is closed to ordinary users.
    assert old_power["events_default"] == 50 and old_power["invite"] == 50
    bob.err("POST", f"/rooms/{q(old)}/send/m.room.message", {"msgtype": "m.text",
                                                              "body": "hi"}, status=403)
    # Aliases, the canonical alias and the directory listing moved.
    assert alice.ok("GET", f"/directory/room/{q(alias)}")["room_id"] == new
    assert content(alice, new, "m.room.canonical_alias")["alias"] == alias
    assert "alias" not in content(alice, old, "m.room.canonical_alias")
    assert alice.ok("GET", f"/directory/list/room/{q(new)}")["visibility"] == "public"
    assert alice.ok("GET", f"/directory/list/room/{q(old)}")["visibility"] == "private"
    # Bob follows the tombstone into the new room.
    bob.join(new)
    bob.send(new, "made it")


def test_who_may_not_upgrade_gets_403_and_nothing_changes(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room = alice.create_room(preset="public_chat", room_version="10")
    bob.join(room)
    before = alice.state_ids(room)
    rooms_before = sorted(alice.ok("GET", "/joined_rooms")["joined_rooms"])
    bob.err("POST", f"/rooms/{q(room)}/upgrade", {"new_version": "11"}, status=403,
            errcode="M_FORBIDDEN")
    alice.err("POST", f"/rooms/{q(room)}/upgrade", {"new_version": "99"}, status=400,
              errcode="M_UNSUPPORTED_ROOM_VERSION")
    alice.err("POST", f"/rooms/{q(room)}/upgrade", {}, status=400, errcode="M_BAD_JSON")
    outsider = new_user(api, "outsider")
    outsider.err("POST", f"/rooms/{q(room)}/upgrade", {"new_version": "11"}, status=403)
    assert alice.state_ids(room) == before
    assert sorted(alice.ok("GET", "/joined_rooms")["joined_rooms"]) == rooms_before


def test_a_moderator_with_tombstone_power_upgrades(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room = alice.create_room(preset="public_chat", room_version="10",
                             power_level_content_override={"events": {
                                 "m.room.tombstone": 50, "m.room.power_levels": 100,
                                 "m.room.server_acl": 100}})
    bob.join(room)
    power = content(alice, room, "m.room.power_levels")
    power["users"][bob.user_id] = 50
    alice.put_state(room, "m.room.power_levels", power)
    alice.put_state(room, "m.room.server_acl", {"allow": ["*"], "deny": ["evil.example"],
                                                "allow_ip_literals": False})
    new = upgrade(bob, room, "11")
    new_power = content(bob, new, "m.room.power_levels")
    # Bob had power enough to set the room up, then his old level back.
    assert new_power["users"][bob.user_id] == 50
    assert new_power["users"][alice.user_id] == 100
    assert content(bob, new, "m.room.server_acl")["deny"] == ["evil.example"]
    assert content(bob, room, "m.room.tombstone")["replacement_room"] == new


def test_upgrade_to_and_from_v12(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room = alice.create_room(preset="public_chat", room_version="11", name="Eleven")
    v12 = upgrade(alice, room, "12", additional_creators=[bob.user_id])
    create = alice.state_map(v12)[("m.room.create", "")]
    assert create["content"]["predecessor"] == {"room_id": room}
    assert create["content"]["additional_creators"] == [bob.user_id]
    assert create["sender"] == alice.user_id
    power = content(alice, v12, "m.room.power_levels")
    assert alice.user_id not in power.get("users", {})  # creators need no level
    assert content(alice, v12, "m.room.name") == {"name": "Eleven"}
    alice.put_state(v12, "m.room.topic", {"topic": "still in charge"})
    back = upgrade(alice, v12, "11")
    power = content(alice, back, "m.room.power_levels")
    assert power["users"][alice.user_id] == 100
    assert content(alice, v12, "m.room.tombstone")["replacement_room"] == back
    assert content(alice, back, "m.room.create")["predecessor"]["room_id"] == v12


def test_upgraded_space_keeps_its_type_and_children(api: Api) -> None:
    alice = new_user(api, "alice")
    space = alice.create_room(preset="public_chat", creation_content={"type": "m.space"},
                              room_version="10")
    child = alice.create_room(preset="public_chat")
    alice.put_state(space, "m.space.child", {"via": ["localhost"]}, state_key=child)
    new = upgrade(alice, space, "11")
    assert content(alice, new, "m.room.create")["type"] == "m.space"
    assert content(alice, new, "m.space.child", child) == {"via": ["localhost"]}


def test_upgrade_through_every_room_version(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room = alice.create_room(preset="public_chat", room_version="11", name="Chain")
    bob.join(room)
    for version in [str(v) for v in range(1, 13)]:
        new = upgrade(alice, room, version)
        assert content(alice, room, "m.room.tombstone")["replacement_room"] == new
        create = content(alice, new, "m.room.create")
        assert create["room_version"] == version and create["predecessor"]["room_id"] == room
        assert content(alice, new, "m.room.name") == {"name": "Chain"}
        bob.join(new)
        bob.send(new, f"hello in v{version}")
        room = new


def test_joining_the_replacement_brings_push_rules_and_tags(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    old = alice.create_room(preset="public_chat", room_version="10")
    bob.join(old)
    bob.ok("PUT", f"/pushrules/global/room/{q(old)}", {"actions": ["dont_notify"]})
    bob.ok("PUT", f"/user/{q(bob.user_id)}/rooms/{q(old)}/tags/u.work", {"order": 0.5})
    new = upgrade(alice, old, "11")
    assert bob.ok("GET", f"/user/{q(bob.user_id)}/rooms/{q(new)}/tags")["tags"] == {}
    bob.join(new)
    rule = bob.ok("GET", f"/pushrules/global/room/{q(new)}")
    assert rule["actions"] == ["dont_notify"] and rule["enabled"] is True
    assert bob.ok("GET", f"/user/{q(bob.user_id)}/rooms/{q(new)}/tags")["tags"] == {
        "u.work": {"order": 0.5}}
    # The old room keeps its own.
    assert bob.ok("GET", f"/pushrules/global/room/{q(old)}")["actions"] == ["dont_notify"]


def test_a_direct_chat_stays_direct(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    old = alice.create_room(preset="trusted_private_chat", invite=[bob.user_id], is_direct=True)
    bob.join(old)
    for user, other in ((alice, bob), (bob, alice)):
        user.ok("PUT", f"/user/{q(user.user_id)}/account_data/m.direct", {other.user_id: [old]})
    new = upgrade(alice, old, "11")
    direct = alice.ok("GET", f"/user/{q(alice.user_id)}/account_data/m.direct")
    assert direct == {bob.user_id: [old, new]}
    alice.invite(new, bob.user_id)  # an invite-only room stays invite-only
    bob.join(new)
    direct = bob.ok("GET", f"/user/{q(bob.user_id)}/account_data/m.direct")
    assert direct == {alice.user_id: [old, new]}
