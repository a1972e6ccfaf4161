"""Spaces and room previews over HTTP, on SQLite and PostgreSQL: a space's
/hierarchy (children in the spec's order, rooms the requester may not see
left out, suggested_only, max_depth, paging) and /room_summary (public rooms
for anyone, private rooms for nobody outside)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.api.rooms_support import Api, User, q
from tests.support.server import ServerProcess

V1 = "/_matrix/client/v1"
_names = itertools.count()


@pytest.fixture
def api(hs: ServerProcess) -> Iterator[Api]:
    yield Api(hs)


def new_user(api: Api, name: str) -> User:
    return api.user(f"{name}{next(_names)}")


def make_space(user: User, **extra: Any) -> str:
    return user.create_room(preset="public_chat", creation_content={"type": "m.space"},
                            name="Space", **extra)


def add_child(user: User, space: str, child: str, **content: Any) -> None:
    user.put_state(space, "m.space.child", {"via": ["localhost"], **content}, state_key=child)


def hierarchy(user: User, space: str, **params: Any) -> Any:
    query = f"?{urlencode(params)}" if params else ""
    return user.ok("GET", f"{V1}/rooms/{q(space)}/hierarchy{query}")


def room_ids(answer: Any) -> list[str]:
    return [r["room_id"] for r in answer["rooms"]]


def test_hierarchy_lists_visible_children_in_order(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    space = make_space(alice, topic="All the rooms")
    public = alice.create_room(preset="public_chat", name="Public")
    private = alice.create_room(preset="private_chat", name="Private")
    ordered = alice.create_room(preset="public_chat", name="Ordered")
    add_child(alice, space, public)
    add_child(alice, space, private)
    add_child(alice, space, ordered, order="a")
    alice.put_state(space, "m.space.child", {}, state_key="!removed:localhost")
    alice.put_state(space, "m.space.child", {"via": ["elsewhere.example"]},
                    state_key="!remote:elsewhere.example")
    # Bob is in the space but not invited to the private room.
    bob.join(space)
    answer = hierarchy(bob, space)
    assert room_ids(answer) == [space, ordered, public]
    root = answer["rooms"][0]
    assert root["room_type"] == "m.space" and root["name"] == "Space"
    assert root["topic"] == "All the rooms" and root["join_rule"] == "public"
    assert root["num_joined_members"] == 2 and root["world_readable"] is False
    assert root["guest_can_join"] is False
    children = [c["state_key"] for c in root["children_state"]]
    # Every child with a via, in the spec's order (order key first, then by time).
    assert children[:3] == [ordered, public, private]
    assert "!removed:localhost" not in children
    state = root["children_state"][0]
    assert set(state) == {"type", "state_key", "content", "sender", "origin_server_ts"}
    assert state["content"] == {"via": ["localhost"], "order": "a"}
    # Alice, who is in the private room, sees it too.
    assert room_ids(hierarchy(alice, space)) == [space, ordered, public, private]
    assert hierarchy(alice, space)["rooms"][3]["children_state"] == []


def test_hierarchy_suggested_only_max_depth_and_paging(api: Api) -> None:
    alice = new_user(api, "alice")
    space = make_space(alice)
    subspace = make_space(alice)
    leaf = alice.create_room(preset="public_chat")
    other = alice.create_room(preset="public_chat")
    add_child(alice, space, subspace, suggested=True, order="1")
    add_child(alice, space, other, order="2")
    add_child(alice, subspace, leaf, suggested=True)
    add_child(alice, subspace, space)  # a loop: each room once
    assert room_ids(hierarchy(alice, space)) == [space, subspace, other, leaf]
    assert room_ids(hierarchy(alice, space, suggested_only="true")) == [space, subspace, leaf]
    assert room_ids(hierarchy(alice, space, max_depth=0)) == [space]
    assert room_ids(hierarchy(alice, space, max_depth=1)) == [space, subspace, other]
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = hierarchy(alice, space, **params)
        assert len(page["rooms"]) <= 3
        seen.extend(room_ids(page))
        if "next_batch" not in page:
            break
        params["from"] = page["next_batch"]
    assert seen == [space, subspace, other, leaf]
    first = hierarchy(alice, space, limit=1)
    alice.err("GET", f"{V1}/rooms/{q(space)}/hierarchy?from={first['next_batch']}"
                     "&suggested_only=true", status=400, errcode="M_INVALID_PARAM")
    for query in ("limit=0", "max_depth=-1", "from=junk"):
        alice.err("GET", f"{V1}/rooms/{q(space)}/hierarchy?{query}", status=400,
                  errcode="M_INVALID_PARAM")


def test_hierarchy_of_a_private_space_is_forbidden(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    space = alice.create_room(preset="private_chat", creation_content={"type": "m.space"})
    bob.err("GET", f"{V1}/rooms/{q(space)}/hierarchy", status=403, errcode="M_FORBIDDEN")
    bob.err("GET", f"{V1}/rooms/{q('!unknown:localhost')}/hierarchy", status=403,
            errcode="M_FORBIDDEN")
    alice.invite(space, bob.user_id)  # an invitee may look before joining
    assert room_ids(hierarchy(bob, space)) == [space]


def test_restricted_child_visible_to_members_of_the_allowed_room(api: Api) -> None:
    alice, bob, carol = (new_user(api, n) for n in ("alice", "bob", "carol"))
    space = make_space(alice)
    restricted = alice.create_room(preset="private_chat", room_version="10", initial_state=[{
        "type": "m.room.join_rules", "state_key": "",
        "content": {"join_rule": "restricted",
                    "allow": [{"type": "m.room_membership", "room_id": space}]}}])
    add_child(alice, space, restricted)
    bob.join(space)
    answer = hierarchy(bob, space)
    assert room_ids(answer) == [space, restricted]
    assert answer["rooms"][1]["allowed_room_ids"] == [space]
    # Carol, outside the space, sees the space (public) but not the restricted room.
    assert room_ids(hierarchy(carol, space)) == [space]


def summary(user: User | None, api: Api, room: str, unstable: bool = False,
            ) -> tuple[int, Any]:
    path = (f"/_matrix/client/unstable/im.nheko.summary/rooms/{q(room)}/summary" if unstable
            else f"{V1}/room_summary/{q(room)}")
    if user is None:
        return api.request("GET", path)
    return user.req("GET", path)


def test_room_summary(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    alias_name = f"summary{next(_names)}"
    room = alice.create_room(preset="public_chat", name="Summary", topic="What it is",
                             room_alias_name=alias_name, room_version="10")
    alice.put_state(room, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})
    status, answer = summary(bob, api, room)
    assert status == 200, answer
    assert answer["room_id"] == room and answer["name"] == "Summary"
    assert answer["topic"] == "What it is" and answer["join_rule"] == "public"
    assert answer["room_version"] == "10" and answer["num_joined_members"] == 1
    assert answer["encryption"] == "m.megolm.v1.aes-sha2"
    alias = f"#{alias_name}:{alice.user_id.split(':', 1)[1]}"
    assert answer["canonical_alias"] == alias
    assert answer["membership"] == "leave" and answer["world_readable"] is False
    # By alias, on the unstable path, and without a token (no membership then).
    assert summary(bob, api, alias)[1] == answer
    assert summary(bob, api, room, unstable=True)[1] == answer
    status, anonymous = summary(None, api, room)
    assert status == 200 and "membership" not in anonymous
    assert summary(alice, api, room)[1]["membership"] == "join"


def test_room_summary_of_a_private_room_is_not_found(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room = alice.create_room(preset="private_chat", name="Secret")
    for who in (bob, None):
        status, answer = summary(who, api, room)
        assert status == 404 and answer["errcode"] == "M_NOT_FOUND", answer
        assert "name" not in answer
    status, answer = summary(bob, api, "!unknown:localhost")
    assert status == 404 and answer["errcode"] == "M_NOT_FOUND"
    alice.invite(room, bob.user_id)
    status, answer = summary(bob, api, room)
    assert status == 200 and answer["membership"] == "invite" and answer["name"] == "Secret"
    alice.put_state(room, "m.room.history_visibility", {"history_visibility": "world_readable"})
    status, answer = summary(None, api, room)
    assert status == 200 and answer["world_readable"] is True
