"""What a client sees of another server's users, rooms and media, across two
Myelin servers (each behind TLS, as the judges run them): remote profiles,
aliases, device keys and one-time keys, public rooms, space hierarchies and
media; and the federation endpoints themselves, as another server calls them."""

from __future__ import annotations

import io
import itertools
import os
import time
from typing import Any

from PIL import Image
from signedjson.key import generate_signing_key, get_verify_key
from unpaddedbase64 import encode_base64

from myelin.federation.queries import media_from_multipart
from tests.federation.queries_support import (
    FED,
    MEDIA,
    NOWHERE,
    Crypto,
    as_server,
    download,
    fetch_raw,
    png,
    q,
    requests_to,
    upload,
)
from tests.support.client import LoggedIn
from tests.support.fed_client import sign_request, signing_key
from tests.support.federation import MyelinPeer

Pair = tuple[MyelinPeer, MyelinPeer]
_ids = itertools.count()


# -- profiles ------------------------------------------------------------------------
def test_a_remote_profile_is_asked_of_its_server(myelin_pair: Pair) -> None:
    a_server, b_server = myelin_pair
    alice, bob = LoggedIn.new(a_server), LoggedIn.new(b_server)
    alice.ok("PUT", f"/profile/{q(alice.user_id)}/displayname", {"displayname": "Alice A"})
    alice.ok("PUT", f"/profile/{q(alice.user_id)}/avatar_url",
             {"avatar_url": f"mxc://{a_server.server_name}/avatar"})
    before = requests_to(a_server, "/query/profile")
    profile = bob.ok("GET", f"/profile/{q(alice.user_id)}")
    assert profile == {"displayname": "Alice A",
                       "avatar_url": f"mxc://{a_server.server_name}/avatar"}
    # Cached briefly: asking again does not ask again.
    assert bob.ok("GET", f"/profile/{q(alice.user_id)}") == profile
    assert requests_to(a_server, "/query/profile") == before + 1
    assert bob.ok("GET", f"/profile/{q(alice.user_id)}/displayname") == \
        {"displayname": "Alice A"}
    # The remote's 404s pass through: no such user, no such field.
    nobody = f"@nobody{next(_ids)}:{a_server.server_name}"
    bob.err("GET", f"/profile/{q(nobody)}", status=404, errcode="M_NOT_FOUND")
    bob.err("GET", f"/profile/{q(nobody)}/displayname", status=404, errcode="M_NOT_FOUND")
    bob.err("GET", f"/profile/{q(alice.user_id)}/m.tz", status=404, errcode="M_NOT_FOUND")
    # A server that is not there.
    bob.err("GET", f"/profile/{q('@x:' + NOWHERE)}", status=502)


def test_query_profile_as_another_server_sees_it(myelin_pair: Pair) -> None:
    a_server, b_server = myelin_pair
    alice = LoggedIn.new(a_server)
    alice.ok("PUT", f"/profile/{q(alice.user_id)}/displayname", {"displayname": "Alice"})
    uri = f"{FED}/query/profile?user_id={q(alice.user_id)}"
    assert as_server(b_server, a_server, "GET", uri) == (200, {"displayname": "Alice"})
    assert as_server(b_server, a_server, "GET", uri + "&field=displayname") == \
        (200, {"displayname": "Alice"})
    status, body = as_server(b_server, a_server, "GET", uri + "&field=avatar_url")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    # Not signed: refused before anything is looked up.
    status, body = a_server.https("GET", uri)
    assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")
    # Users of other servers are not ours to describe.
    status, body = as_server(b_server, a_server, "GET",
                             f"{FED}/query/profile?user_id={q('@x:' + b_server.server_name)}")
    assert status == 400
    # A query type nobody defined.
    status, body = as_server(b_server, a_server, "GET", f"{FED}/query/nonsense?x=1")
    assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")


# -- aliases ---------------------------------------------------------------------------
def test_a_remote_alias_resolves_to_its_room_and_servers(myelin_pair: Pair) -> None:
    a_server, b_server = myelin_pair
    alice, bob = LoggedIn.new(a_server), LoggedIn.new(b_server)
    room_id = alice.room(preset="public_chat")
    alias = f"#lobby{next(_ids)}:{a_server.server_name}"
    alice.ok("PUT", f"/directory/room/{q(alias)}", {"room_id": room_id})
    assert bob.ok("GET", f"/directory/room/{q(alias)}") == \
        {"room_id": room_id, "servers": [a_server.server_name]}
    missing = f"#missing{next(_ids)}:{a_server.server_name}"
    bob.err("GET", f"/directory/room/{q(missing)}", status=404, errcode="M_NOT_FOUND")
    # The federation endpoint: only our own aliases.
    status, body = as_server(b_server, a_server, "GET",
                             f"{FED}/query/directory?room_alias={q(alias)}")
    assert (status, body) == (200, {"room_id": room_id, "servers": [a_server.server_name]})
    other = f"#x:{b_server.server_name}"
    status, _ = as_server(b_server, a_server, "GET",
                          f"{FED}/query/directory?room_alias={q(other)}")
    assert status == 400


# -- device keys and one-time keys --------------------------------------------------------
def test_keys_of_remote_users_are_queried_and_claimed(myelin_pair: Pair) -> None:
    a_server, b_server = myelin_pair
    alice, bob = Crypto.new(a_server), Crypto.new(b_server)
    alice.ok("PUT", f"/devices/{alice.device_id}", {"display_name": "Alice's laptop"})
    device_keys = alice.device_keys()
    alice.ok("POST", "/keys/upload", {"device_keys": device_keys,
                                      "one_time_keys": alice.one_time_keys(2)})
    out = bob.ok("POST", "/keys/query", {"device_keys": {alice.user_id: [],
                                                         "@x:" + NOWHERE: []}})
    got = out["device_keys"][alice.user_id][alice.device_id]
    # Device names stay home (allow_device_name_lookup_over_federation is off).
    assert got == {**device_keys, "unsigned": {}}
    assert set(out["failures"]) == {NOWHERE}
    # Only the devices asked for.
    out = bob.ok("POST", "/keys/query", {"device_keys": {alice.user_id: ["NOSUCH"]}})
    assert out["device_keys"][alice.user_id] == {} and out["failures"] == {}

    wanted = {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}}
    first = bob.ok("POST", "/keys/claim", wanted)
    second = bob.ok("POST", "/keys/claim", wanted)
    keys = [next(iter(r["one_time_keys"][alice.user_id][alice.device_id]))
            for r in (first, second)]
    assert sorted(keys) == ["signed_curve25519:K0", "signed_curve25519:K1"]
    assert first["failures"] == {}
    # Both are gone from Alice's server: none is left to claim.
    assert bob.ok("POST", "/keys/claim", wanted)["one_time_keys"] == {}
    assert alice.ok("POST", "/keys/upload", {})["one_time_key_counts"] == \
        {"signed_curve25519": 0}
    out = bob.ok("POST", "/keys/claim", {"one_time_keys": {
        "@x:" + NOWHERE: {"D": "signed_curve25519"}}})
    assert out["one_time_keys"] == {} and set(out["failures"]) == {NOWHERE}


def test_user_devices_and_keys_as_another_server_sees_them(myelin_pair: Pair) -> None:
    a_server, b_server = myelin_pair
    alice = Crypto.new(a_server)
    alice.ok("POST", "/keys/upload", {"device_keys": alice.device_keys()})
    master_key = generate_signing_key("m")
    pub = encode_base64(get_verify_key(master_key).encode())
    master = {"user_id": alice.user_id, "usage": ["master"], "keys": {f"ed25519:{pub}": pub}}
    alice.ok("POST", "/keys/device_signing/upload", {"master_key": master})
    status, body = as_server(b_server, a_server, "GET",
                             f"{FED}/user/devices/{q(alice.user_id)}")
    assert status == 200, body
    assert body["user_id"] == alice.user_id and isinstance(body["stream_id"], int)
    assert body["stream_id"] > 0
    assert body["devices"] == [{"device_id": alice.device_id, "keys": alice.device_keys()}]
    assert body["master_key"] == master
    status, body = as_server(b_server, a_server, "POST", f"{FED}/user/keys/query",
                             {"device_keys": {alice.user_id: []}})
    assert status == 200, body
    assert body["device_keys"][alice.user_id][alice.device_id]["keys"] == \
        alice.device_keys()["keys"]
    assert body["master_keys"] == {alice.user_id: master}
    status, _ = as_server(b_server, a_server, "GET",
                          f"{FED}/user/devices/{q('@x:' + b_server.server_name)}")
    assert status == 400


# -- public rooms --------------------------------------------------------------------------
def test_the_public_rooms_of_a_remote_server(myelin_pair: Pair) -> None:
    a_server, b_server = myelin_pair
    alice, bob = LoggedIn.new(a_server), LoggedIn.new(b_server)
    name = f"Federated lounge {next(_ids)}"
    room_id = alice.room(preset="public_chat", visibility="public", name=name,
                         topic="for everyone")
    listed = bob.ok("GET", f"/publicRooms?server={q(a_server.server_name)}")
    entry = next(r for r in listed["chunk"] if r["room_id"] == room_id)
    assert entry["name"] == name and entry["topic"] == "for everyone"
    assert entry["num_joined_members"] == 1 and entry["join_rule"] == "public"
    # Bob's own server's list does not have it.
    assert room_id not in [r["room_id"] for r in bob.ok("GET", "/publicRooms")["chunk"]]
    found = bob.ok("POST", f"/publicRooms?server={q(a_server.server_name)}",
                   {"filter": {"generic_search_term": name}})
    assert [r["room_id"] for r in found["chunk"]] == [room_id]
    none = bob.ok("POST", f"/publicRooms?server={q(a_server.server_name)}",
                  {"filter": {"generic_search_term": "no such room anywhere"}})
    assert none["chunk"] == []
    # Pagination is the remote's.
    page = bob.ok("GET", f"/publicRooms?server={q(a_server.server_name)}&limit=1")
    assert len(page["chunk"]) == 1
    bob.err("GET", f"/publicRooms?server={q(NOWHERE)}", status=502)


# -- spaces ----------------------------------------------------------------------------------
def test_a_space_lists_a_child_room_of_another_server(myelin_pair: Pair) -> None:
    a_server, b_server = myelin_pair
    alice, bob = LoggedIn.new(a_server), LoggedIn.new(b_server)
    remote_room = alice.room(preset="public_chat", name="Over there")
    private_room = alice.room(preset="private_chat", name="Secret")
    remote_space = alice.room(preset="public_chat", name="Their space",
                              creation_content={"type": "m.space"})
    for child in (remote_room, private_room):
        alice.ok("PUT", f"/rooms/{q(remote_space)}/state/m.space.child/{q(child)}",
                 {"via": [a_server.server_name]})
    # What Alice's server tells another server.
    status, body = as_server(b_server, a_server, "GET", f"{FED}/hierarchy/{q(remote_space)}")
    assert status == 200, body
    assert body["room"]["room_id"] == remote_space and body["room"]["name"] == "Their space"
    assert [c["room_id"] for c in body["children"]] == [remote_room]
    assert body["inaccessible_children"] == [private_room]
    status, body = as_server(b_server, a_server, "GET", f"{FED}/hierarchy/{q(private_room)}")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")

    # Bob's space on his server has Alice's space as a child: the walk goes on there.
    space = bob.room(preset="public_chat", name="Bob's space",
                     creation_content={"type": "m.space"})
    bob.ok("PUT", f"/rooms/{q(space)}/state/m.space.child/{q(remote_space)}",
           {"via": [a_server.server_name]})
    status, answer = b_server.request("GET", f"/_matrix/client/v1/rooms/{q(space)}/hierarchy",
                                      token=bob.token)
    assert status == 200, answer
    rooms = answer["rooms"]
    assert [r["room_id"] for r in rooms] == [space, remote_space, remote_room]
    assert rooms[1]["name"] == "Their space" and rooms[2]["name"] == "Over there"
    assert [c["state_key"] for c in rooms[1]["children_state"]] == [remote_room,
                                                                     private_room]


# -- media ------------------------------------------------------------------------------------
def test_remote_media_is_fetched_cached_and_thumbnailed(myelin_pair: Pair) -> None:
    a_server, b_server = myelin_pair
    alice, bob = LoggedIn.new(a_server), LoggedIn.new(b_server)
    content = png((300, 200), (10, 120, 200))
    media_id = upload(alice, content, "image/png", "sky.png")
    origin = a_server.server_name
    before = requests_to(a_server, f"/media/download/{media_id}")
    status, body, content_type = download(bob, f"{MEDIA}/download/{origin}/{media_id}")
    assert (status, body, content_type) == (200, content, "image/png")
    # Cached: a second download (and a thumbnail) do not go back to Alice's server.
    assert download(bob, f"{MEDIA}/download/{origin}/{media_id}")[1] == content
    thumb_path = f"/thumbnail/{origin}/{media_id}?width=64&height=64&method=scale"
    status, thumb, thumb_type = download(bob, MEDIA + thumb_path)
    assert status == 200 and thumb_type == "image/png"
    assert requests_to(a_server, f"/media/download/{media_id}") == before + 1
    # The same thumbnail, byte for byte, as Alice's server makes of its own media.
    assert download(alice, MEDIA + thumb_path)[1] == thumb
    assert Image.open(io.BytesIO(thumb)).size[0] <= 300
    # Media Alice's server does not have.
    status, body, _ = download(bob, f"{MEDIA}/download/{origin}/doesNotExist{next(_ids)}")
    assert status == 404


def test_federation_media_endpoints_answer_multipart(myelin_pair: Pair) -> None:
    a_server, b_server = myelin_pair
    alice = LoggedIn.new(a_server)
    content = png((120, 80), (250, 200, 0))
    media_id = upload(alice, content, "image/png")
    key = signing_key(os.path.join(b_server.workdir, "signing.key"))
    uri = f"{FED}/media/download/{media_id}"
    auth = sign_request(key, b_server.server_name, a_server.server_name, "GET", uri)
    status, body, content_type = fetch_raw(a_server, uri, {"Authorization": auth})
    assert status == 200 and content_type.startswith("multipart/mixed")
    got = media_from_multipart(body, content_type)
    assert got.body == content and got.content_type == "image/png"
    uri = f"{FED}/media/thumbnail/{media_id}?width=32&height=32&method=crop"
    auth = sign_request(key, b_server.server_name, a_server.server_name, "GET", uri)
    status, body, content_type = fetch_raw(a_server, uri, {"Authorization": auth})
    thumb = media_from_multipart(body, content_type)
    assert Image.open(io.BytesIO(thumb.body)).size == (32, 32)
    # Unsigned: refused.
    status, answer = a_server.https("GET", f"{FED}/media/download/{media_id}")
    assert (status, answer["errcode"]) == (401, "M_UNAUTHORIZED")


# -- device lists --------------------------------------------------------------------------
def wait_for(what: str, check: Any, deadline_s: float = 45.0) -> Any:
    end = time.monotonic() + deadline_s
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_a_remote_device_list_is_cached_and_kept_fresh(myelin_pair: Pair) -> None:
    a_server, b_server = myelin_pair
    alice, bob = Crypto.new(a_server), Crypto.new(b_server)
    alice.ok("POST", "/keys/upload", {"device_keys": alice.device_keys()})
    room_id = bob.room(preset="public_chat")
    alice.ok("POST", f"/join/{q(room_id)}?server_name={q(b_server.server_name)}", {})
    wait_for("alice's join on bob's server", lambda: alice.user_id in bob.ok(
        "GET", f"/rooms/{q(room_id)}/joined_members")["joined"])
    since = bob.ok("GET", "/sync?timeout=0")["next_batch"]
    query = {"device_keys": {alice.user_id: []}}
    assert list(bob.ok("POST", "/keys/query", query)["device_keys"][alice.user_id]) == \
        [alice.device_id]
    # Bob's server now holds Alice's list (fetched with /user/devices): asking
    # again is answered from it.
    fetches = requests_to(a_server, "/user/devices/") + requests_to(a_server,
                                                                     "/user/keys/query")
    bob.ok("POST", "/keys/query", query)
    assert requests_to(a_server, "/user/devices/") + requests_to(
        a_server, "/user/keys/query") == fetches

    # Alice signs in on a new device: her server tells Bob's (m.device_list_update).
    status, login = a_server.request("POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "password": "correct horse",
        "identifier": {"type": "m.id.user", "user": alice.user_id}})
    assert status == 200, login
    phone = Crypto(a_server, login)
    phone.ok("POST", "/keys/upload", {"device_keys": phone.device_keys()})
    wait_for("alice's new device in bob's /keys/changes", lambda: alice.user_id in bob.ok(
        "GET", f"/keys/changes?from={q(since)}")["changed"])
    wait_for("alice's new device keys on bob's server", lambda: phone.device_id in bob.ok(
        "POST", "/keys/query", query)["device_keys"][alice.user_id])
    synced = bob.ok("GET", f"/sync?timeout=0&since={q(since)}")
    assert alice.user_id in synced["device_lists"]["changed"]

    # Alice leaves the only room they share: Bob's server forgets her list, so
    # the next query is asked of her server again.
    alice.ok("POST", f"/rooms/{q(room_id)}/leave", {})
    wait_for("alice's leave on bob's server", lambda: alice.user_id not in bob.ok(
        "GET", f"/rooms/{q(room_id)}/joined_members")["joined"])
    before = requests_to(a_server, "/user/keys/query")
    wait_for("a fresh query to alice's server", lambda: (
        bob.ok("POST", "/keys/query", query),
        requests_to(a_server, "/user/keys/query") > before)[1])
