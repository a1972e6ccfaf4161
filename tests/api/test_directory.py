"""The room directory over raw HTTP: aliases, room visibility and /publicRooms."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.rooms_support import V3, Api, q
from tests.support.server import ServerProcess

SERVER = "test.localhost"


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Api]:
    checker = Api(server)
    yield checker
    checker.verify_all()


def alias_path(alias: str) -> str:
    return f"/directory/room/{q(alias)}"


def test_alias_lifecycle(api: Api) -> None:
    alice, bob, eve = api.user("alice"), api.user("bob"), api.user("eve")
    room = alice.create_room(preset="public_chat")
    alias = f"#lounge:{SERVER}"

    alice.ok("PUT", alias_path(alias), {"room_id": room})
    resolved = alice.ok("GET", alias_path(alias))
    assert resolved == {"room_id": room, "servers": [SERVER]}
    # Resolving needs no access token.
    status, body = api.server.request("GET", V3 + alias_path(alias))
    assert status == 200 and body["room_id"] == room
    # Legacy r0 paths work too.
    assert alice.ok("GET", "/_matrix/client/r0" + alias_path(alias))["room_id"] == room

    # Taken.
    other = alice.create_room()
    alice.err("PUT", alias_path(alias), {"room_id": other}, status=409, errcode="M_UNKNOWN")
    assert alice.ok("GET", alias_path(alias))["room_id"] == room

    # Bad aliases and bodies.
    for bad in ("#elsewhere:other.example", "lounge2", f"#:{SERVER}", "#nocolon",
                f"#with space:{SERVER}"):
        alice.err("PUT", alias_path(bad), {"room_id": room}, status=400,
                  errcode="M_INVALID_PARAM")
    alice.err("PUT", alias_path(f"#x:{SERVER}"), {}, status=400,
              errcode=("M_MISSING_PARAM", "M_BAD_JSON", "M_INVALID_PARAM"))
    alice.err("PUT", alias_path(f"#x:{SERVER}"), raw=b"{", status=400, errcode="M_NOT_JSON")
    alice.err("PUT", alias_path(f"#x:{SERVER}"), {"room_id": "!nope:test.localhost"},
              status=404, errcode="M_NOT_FOUND")
    alice.err("GET", alias_path(f"#x:{SERVER}"), status=404, errcode="M_NOT_FOUND")
    alice.err("GET", alias_path("not-an-alias"), status=400, errcode="M_INVALID_PARAM")
    status, body = api.server.request("PUT", V3 + alias_path(f"#x:{SERVER}"), {"room_id": room})
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
    # Only members make aliases for a room.
    eve.err("PUT", alias_path(f"#eves:{SERVER}"), {"room_id": room}, status=403,
            errcode="M_FORBIDDEN")
    alice.err("GET", alias_path(f"#eves:{SERVER}"), status=404)

    # Joining by alias.
    assert bob.ok("POST", f"/join/{q(alias)}", {})["room_id"] == room
    bob.ok("PUT", alias_path(f"#bobs:{SERVER}"), {"room_id": room})

    # Local aliases of the room: members only.
    aliases = alice.ok("GET", f"/rooms/{q(room)}/aliases")["aliases"]
    assert sorted(aliases) == sorted([alias, f"#bobs:{SERVER}"])
    eve.err("GET", f"/rooms/{q(room)}/aliases", status=403, errcode="M_FORBIDDEN")
    assert alice.ok("GET", f"/rooms/{q(other)}/aliases") == {"aliases": []}

    # Deleting: not by strangers, nor by members without power over the canonical alias.
    eve.err("DELETE", alias_path(alias), status=403, errcode="M_FORBIDDEN")
    bob.err("DELETE", alias_path(alias), status=403, errcode="M_FORBIDDEN")
    assert alice.ok("GET", alias_path(alias))["room_id"] == room
    # The creator of an alias may delete it; so may the room's moderators.
    bob.ok("DELETE", alias_path(f"#bobs:{SERVER}"))
    alice.err("GET", alias_path(f"#bobs:{SERVER}"), status=404, errcode="M_NOT_FOUND")
    bob.ok("PUT", alias_path(f"#bobs2:{SERVER}"), {"room_id": room})
    alice.ok("DELETE", alias_path(f"#bobs2:{SERVER}"))
    alice.ok("DELETE", alias_path(alias))
    alice.err("GET", alias_path(alias), status=404, errcode="M_NOT_FOUND")
    alice.err("DELETE", alias_path(alias), status=404, errcode="M_NOT_FOUND")
    assert alice.ok("GET", f"/rooms/{q(room)}/aliases") == {"aliases": []}
    # Once deleted, the alias is free again.
    alice.ok("PUT", alias_path(alias), {"room_id": other})
    assert alice.ok("GET", alias_path(alias))["room_id"] == other

    # Server admins may delete any alias, and see any room's aliases.
    admin = api.user("root", admin=True)
    assert admin.ok("GET", f"/rooms/{q(other)}/aliases")["aliases"] == [alias]
    admin.ok("DELETE", alias_path(alias))
    alice.err("GET", alias_path(alias), status=404)


def test_deleting_the_canonical_alias_updates_the_room(api: Api) -> None:
    alice = api.user("alice")
    created = alice.ok("POST", "/createRoom", {"room_alias_name": "canon"})
    room, alias = created["room_id"], created["room_alias"]
    assert alice.get_state(room, "m.room.canonical_alias")["alias"] == alias
    alt = f"#alt:{SERVER}"
    alice.ok("PUT", alias_path(alt), {"room_id": room})
    alice.put_state(room, "m.room.canonical_alias", {"alias": alias, "alt_aliases": [alt]})
    alice.ok("DELETE", alias_path(alt))
    assert alice.get_state(room, "m.room.canonical_alias") == {"alias": alias,
                                                               "alt_aliases": []}
    alice.ok("DELETE", alias_path(alias))
    assert "alias" not in alice.get_state(room, "m.room.canonical_alias")


def test_room_directory_visibility(api: Api) -> None:
    alice, bob, eve = api.user("alice"), api.user("bob"), api.user("eve")
    room = alice.create_room(preset="public_chat")
    path = f"/directory/list/room/{q(room)}"
    # Readable without a token.
    status, body = api.server.request("GET", V3 + path)
    assert status == 200 and body == {"visibility": "private"}
    alice.ok("PUT", path, {"visibility": "public"})
    assert alice.ok("GET", path) == {"visibility": "public"}
    bob.join(room)
    bob.err("PUT", path, {"visibility": "private"}, status=403, errcode="M_FORBIDDEN")
    eve.err("PUT", path, {"visibility": "private"}, status=403, errcode="M_FORBIDDEN")
    assert alice.ok("GET", path) == {"visibility": "public"}
    alice.err("PUT", path, {"visibility": "secret"}, status=400)
    alice.err("PUT", path, raw=b"{{", status=400, errcode="M_NOT_JSON")
    # Power to send m.room.canonical_alias is what counts.
    power = alice.get_state(room, "m.room.power_levels")
    power["events"]["m.room.canonical_alias"] = 0
    alice.put_state(room, "m.room.power_levels", power)
    bob.ok("PUT", path, {"visibility": "private"})
    assert alice.ok("GET", path) == {"visibility": "private"}
    # An empty body means public.
    alice.ok("PUT", path, {})
    assert alice.ok("GET", path) == {"visibility": "public"}
    admin = api.user("root", admin=True)
    admin.ok("PUT", path, {"visibility": "private"})
    assert alice.ok("GET", path) == {"visibility": "private"}

    unknown = f"/directory/list/room/{q('!unknown:test.localhost')}"
    alice.err("GET", unknown, status=404, errcode="M_NOT_FOUND")
    alice.err("PUT", unknown, {"visibility": "public"}, status=404, errcode="M_NOT_FOUND")


def _public_rooms(api: Api, token: str | None = None, **body: Any) -> Any:
    if token is None:
        from urllib.parse import urlencode

        status, data = api.server.request("GET", V3 + "/publicRooms?" + urlencode(body))
    else:
        status, data = api.request("POST", V3 + "/publicRooms", body, token)
    assert status == 200, data
    for entry in data["chunk"]:
        for field in ("room_id", "num_joined_members", "world_readable", "guest_can_join"):
            assert field in entry, (field, entry)
    return data


def test_public_rooms(api: Api) -> None:
    alice, bob, carol = api.user("alice"), api.user("bob"), api.user("carol")
    cheese = alice.ok("POST", "/createRoom", {
        "visibility": "public", "name": "Cheese Lovers", "topic": "Tasty tasty cheese",
        "room_alias_name": "cheese",
        "initial_state": [{"type": "m.room.avatar", "content": {"url": "mxc://x/cheese"}}],
    })["room_id"]
    space = alice.ok("POST", "/createRoom", {
        "visibility": "public", "name": "A space", "creation_content": {"type": "m.space"},
        "initial_state": [{"type": "m.room.history_visibility",
                           "content": {"history_visibility": "world_readable"}},
                          {"type": "m.room.guest_access",
                           "content": {"guest_access": "can_join"}}],
    })["room_id"]
    quiet = alice.ok("POST", "/createRoom", {"visibility": "public",
                                             "topic": "nothing about dairy"})["room_id"]
    private = alice.create_room(name="Cheese secrets")
    bob.join(cheese)
    carol.join(cheese)
    bob.join(space)

    everything = _public_rooms(api)
    by_id = {e["room_id"]: e for e in everything["chunk"]}
    assert set(by_id) == {cheese, space, quiet}
    assert private not in by_id
    assert everything["total_room_count_estimate"] == 3
    assert "next_batch" not in everything and "prev_batch" not in everything
    # Largest first.
    assert [e["room_id"] for e in everything["chunk"]] == [cheese, space, quiet]
    assert by_id[cheese] == {
        "room_id": cheese, "name": "Cheese Lovers", "topic": "Tasty tasty cheese",
        "canonical_alias": f"#cheese:{SERVER}", "num_joined_members": 3,
        "world_readable": False, "guest_can_join": False, "join_rule": "public",
        "avatar_url": "mxc://x/cheese"}
    assert by_id[space]["room_type"] == "m.space"
    assert by_id[space]["world_readable"] is True and by_id[space]["guest_can_join"] is True
    assert by_id[space]["num_joined_members"] == 2
    assert "name" not in by_id[quiet] and "room_type" not in by_id[quiet]

    # Pages of one, forwards then back.
    first = _public_rooms(api, limit=1)
    assert [e["room_id"] for e in first["chunk"]] == [cheese] and "prev_batch" not in first
    second = _public_rooms(api, limit=1, since=first["next_batch"])
    assert [e["room_id"] for e in second["chunk"]] == [space]
    third = _public_rooms(api, limit=1, since=second["next_batch"])
    assert [e["room_id"] for e in third["chunk"]] == [quiet] and "next_batch" not in third
    back = _public_rooms(api, limit=1, since=third["prev_batch"])
    assert [e["room_id"] for e in back["chunk"]] == [space]
    assert _public_rooms(api, token=alice.token, limit=2)["next_batch"]
    status, body = api.server.request("GET", V3 + "/publicRooms?since=bogus")
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"

    # Searching: name, topic, alias; case-insensitive.
    def search(term: str, **extra: Any) -> set[str]:
        data = _public_rooms(api, token=bob.token, filter={"generic_search_term": term},
                             **extra)
        return {e["room_id"] for e in data["chunk"]}

    assert search("CHEESE") == {cheese}
    assert search("dairy") == {quiet}
    assert search("#cheese:") == {cheese}
    assert search("tasty") == {cheese}
    assert search("nothing matches this") == set()
    assert search("") == {cheese, space, quiet}
    typed = _public_rooms(api, token=bob.token, filter={"room_types": ["m.space"]})
    assert [e["room_id"] for e in typed["chunk"]] == [space]
    untyped = _public_rooms(api, token=bob.token, filter={"room_types": [None]})
    assert {e["room_id"] for e in untyped["chunk"]} == {cheese, quiet}
    limited = _public_rooms(api, token=bob.token, limit=2, filter={})
    assert len(limited["chunk"]) == 2 and limited["total_room_count_estimate"] == 3
    third_party = _public_rooms(api, token=bob.token, third_party_instance_id="irc")
    assert third_party["chunk"] == []

    # POST needs a token; bad bodies are refused.
    status, _ = api.server.request("POST", V3 + "/publicRooms", {})
    assert status == 401
    bob.err("POST", "/publicRooms", {"limit": "ten"}, status=400, errcode="M_BAD_JSON")
    bob.err("POST", "/publicRooms", {"filter": []}, status=400, errcode="M_BAD_JSON")
    bob.err("POST", "/publicRooms", raw=b"nope", status=400, errcode="M_NOT_JSON")

    # Unpublishing removes the room; empty rooms are not listed.
    alice.ok("PUT", f"/directory/list/room/{q(quiet)}", {"visibility": "private"})
    assert {e["room_id"] for e in _public_rooms(api)["chunk"]} == {cheese, space}
    alice.leave(space)
    bob.leave(space)
    assert {e["room_id"] for e in _public_rooms(api)["chunk"]} == {cheese}
