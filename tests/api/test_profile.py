"""Profiles over raw HTTP, and profile changes reaching the rooms a user is in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.rooms_support import V3, Api, q
from tests.support.server import ServerProcess


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Api]:
    checker = Api(server)
    yield checker
    checker.verify_all()


def test_get_and_set_profile(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    me = f"/profile/{q(alice.user_id)}"
    # A new user's display name is their localpart; there is no avatar yet.
    assert alice.ok("GET", me) == {"displayname": "alice"}
    assert alice.ok("GET", f"{me}/displayname") == {"displayname": "alice"}
    alice.err("GET", f"{me}/avatar_url", status=404, errcode="M_NOT_FOUND")
    # Profiles are public: no token needed to read.
    status, body = api.server.request("GET", V3 + me)
    assert status == 200 and body == {"displayname": "alice"}

    alice.ok("PUT", f"{me}/displayname", {"displayname": "Alice Liddell"})
    alice.ok("PUT", f"{me}/avatar_url", {"avatar_url": "mxc://test.localhost/abcDEF123"})
    assert alice.ok("GET", me) == {"displayname": "Alice Liddell",
                                   "avatar_url": "mxc://test.localhost/abcDEF123"}
    assert bob.ok("GET", f"{me}/displayname") == {"displayname": "Alice Liddell"}
    assert bob.ok("GET", f"{me}/avatar_url") == {"avatar_url": "mxc://test.localhost/abcDEF123"}
    assert alice.ok("GET", "/_matrix/client/r0" + me)["displayname"] == "Alice Liddell"
    # Unicode survives.
    alice.ok("PUT", f"{me}/displayname", {"displayname": "Алиса 🐇"})
    assert alice.ok("GET", f"{me}/displayname") == {"displayname": "Алиса 🐇"}

    # Removing fields.
    alice.ok("DELETE", f"{me}/avatar_url")
    alice.err("GET", f"{me}/avatar_url", status=404, errcode="M_NOT_FOUND")
    alice.ok("PUT", f"{me}/displayname", {"displayname": ""})
    assert alice.ok("GET", me) == {}


def test_profile_errors(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    me = f"/profile/{q(alice.user_id)}"
    # Only your own profile.
    bob.err("PUT", f"{me}/displayname", {"displayname": "not alice"}, status=403,
            errcode="M_FORBIDDEN")
    bob.err("PUT", f"{me}/avatar_url", {"avatar_url": "mxc://x/y"}, status=403,
            errcode="M_FORBIDDEN")
    bob.err("DELETE", f"{me}/displayname", status=403, errcode="M_FORBIDDEN")
    status, body = api.server.request("PUT", V3 + f"{me}/displayname", {"displayname": "x"})
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
    assert alice.ok("GET", f"{me}/displayname") == {"displayname": "alice"}

    # Unknown users.
    nobody = f"/profile/{q('@nobody:test.localhost')}"
    for path in (nobody, f"{nobody}/displayname", f"{nobody}/avatar_url"):
        alice.err("GET", path, status=404, errcode="M_NOT_FOUND")
    # A server that cannot be reached: 502, as Synapse answers (the remote's
    # own 404s pass through: tests/federation/test_queries.py).
    alice.err("GET", f"/profile/{q('@someone:elsewhere.example')}", status=502,
              errcode="M_UNKNOWN")

    # Wrong value types, missing keys, bad JSON, bad keys.
    for key, value in (("displayname", 12), ("displayname", {"a": 1}), ("displayname", ["x"]),
                       ("avatar_url", 5), ("avatar_url", "no scheme here"),
                       ("avatar_url", True), ("displayname", "x" * 300)):
        alice.err("PUT", f"{me}/{key}", {key: value}, status=400)
    alice.err("PUT", f"{me}/displayname", {"avatar_url": "mxc://x/y"}, status=400,
              errcode="M_MISSING_PARAM")
    alice.err("PUT", f"{me}/displayname", raw=b"{\"displayname\": ", status=400,
              errcode="M_NOT_JSON")
    alice.err("PUT", f"{me}/displayname", raw=b"[\"x\"]", status=400, errcode="M_BAD_JSON")
    alice.err("PUT", f"{me}/Not-A-Key", {"Not-A-Key": 1}, status=400, errcode="M_INVALID_PARAM")
    alice.err("GET", f"{me}/Not-A-Key", status=400, errcode="M_INVALID_PARAM")
    assert alice.ok("GET", me) == {"displayname": "alice"}

    # A server admin may change other users' profiles.
    admin = api.user("root", admin=True)
    admin.ok("PUT", f"{me}/displayname", {"displayname": "Renamed"})
    assert alice.ok("GET", f"{me}/displayname") == {"displayname": "Renamed"}


def test_custom_profile_fields(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    me = f"/profile/{q(alice.user_id)}"
    alice.ok("PUT", f"{me}/m.tz", {"m.tz": "Europe/London"})
    alice.ok("PUT", f"{me}/org.example.pronouns", {"org.example.pronouns": {"en": ["she"]}})
    assert bob.ok("GET", f"{me}/m.tz") == {"m.tz": "Europe/London"}
    assert bob.ok("GET", me) == {"displayname": "alice", "m.tz": "Europe/London",
                                 "org.example.pronouns": {"en": ["she"]}}
    alice.ok("DELETE", f"{me}/m.tz")
    alice.err("GET", f"{me}/m.tz", status=404, errcode="M_NOT_FOUND")
    bob.err("PUT", f"{me}/m.tz", {"m.tz": "UTC"}, status=403, errcode="M_FORBIDDEN")
    alice.err("PUT", f"{me}/m.tz", {"m.tz": 5}, status=400, errcode="M_INVALID_PARAM")
    alice.err("PUT", "/profile/" + q(alice.user_id) + "/org." + "a" * 260,
              {"org." + "a" * 260: 1}, status=400, errcode="M_KEY_TOO_LARGE")
    alice.err("PUT", f"{me}/org.example.big", {"org.example.big": "x" * 70000}, status=400,
              errcode="M_PROFILE_TOO_LARGE")
    # Nothing was stored by the refused writes.
    assert alice.ok("GET", me) == {"displayname": "alice",
                                   "org.example.pronouns": {"en": ["she"]}}
    caps = alice.ok("GET", "/capabilities")["capabilities"]
    assert caps["m.profile_fields"] == {"enabled": True}


def test_profile_changes_reach_joined_rooms(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    one = alice.create_room(preset="public_chat", name="one")
    two = bob.create_room(preset="public_chat", room_version="10")
    left = bob.create_room(preset="public_chat")
    invited = bob.create_room()
    alice.join(two)
    alice.join(left)
    alice.leave(left)
    bob.invite(invited, alice.user_id)
    bob.join(one)
    before = {room: len(bob.all_messages(room)) for room in (one, two, left, invited)}

    me = f"/profile/{q(alice.user_id)}"
    alice.ok("PUT", f"{me}/displayname", {"displayname": "Alice in Rooms"})
    alice.ok("PUT", f"{me}/avatar_url", {"avatar_url": "mxc://test.localhost/face"})
    for room in (one, two):
        member = bob.get_state(room, "m.room.member", alice.user_id)
        assert member == {"membership": "join", "displayname": "Alice in Rooms",
                          "avatar_url": "mxc://test.localhost/face"}
        joined = bob.ok("GET", f"/rooms/{q(room)}/joined_members")["joined"]
        assert joined[alice.user_id] == {"display_name": "Alice in Rooms",
                                         "avatar_url": "mxc://test.localhost/face"}
        history = bob.all_messages(room)
        assert len(history) == before[room] + 2  # one join event per change
        latest = history[0]
        assert latest["type"] == "m.room.member" and latest["state_key"] == alice.user_id
        assert latest["sender"] == alice.user_id
        assert latest["unsigned"]["prev_content"]["displayname"] == "Alice in Rooms"
        assert "avatar_url" not in latest["unsigned"]["prev_content"]
        assert history[1]["unsigned"]["prev_content"]["displayname"] == "alice"
    # Rooms she left or is only invited to are untouched.
    for room in (left, invited):
        assert len(bob.all_messages(room)) == before[room]
    assert bob.get_state(left, "m.room.member", alice.user_id)["membership"] == "leave"
    assert bob.get_state(invited, "m.room.member", alice.user_id)["membership"] == "invite"

    # Setting the same value again changes nothing anywhere.
    alice.ok("PUT", f"{me}/displayname", {"displayname": "Alice in Rooms"})
    assert len(bob.all_messages(one)) == before[one] + 2
    # New joins carry the profile.
    alice.join(invited)
    member = bob.get_state(invited, "m.room.member", alice.user_id)
    assert member["displayname"] == "Alice in Rooms"
    assert member["avatar_url"] == "mxc://test.localhost/face"
    # Clearing the avatar removes it from the membership events.
    alice.ok("DELETE", f"{me}/avatar_url")
    assert bob.get_state(one, "m.room.member", alice.user_id) == {
        "membership": "join", "displayname": "Alice in Rooms"}


def test_avatar_url_may_be_any_uri(api: Api) -> None:
    """The spec types avatar_url as a URI: an http(s) one is kept as given."""
    alice = api.user("alice")
    me = f"{V3}/profile/{q(alice.user_id)}"
    room = alice.create_room()
    alice.ok("PUT", f"{me}/avatar_url", {"avatar_url": "https://example.com/a.png"})
    assert alice.ok("GET", f"{me}/avatar_url") == {"avatar_url": "https://example.com/a.png"}
    member = alice.get_state(room, "m.room.member", alice.user_id)
    assert member["avatar_url"] == "https://example.com/a.png"
