"""Federation queries between Myelin and a real Synapse, both ways: profiles,
aliases, device keys and one-time keys, public rooms, space children and
media (Synapse parses our multipart answers; we parse Synapse's)."""

from __future__ import annotations

import itertools
from typing import Any

from tests.federation.queries_support import MEDIA, Crypto, download, png, q, upload
from tests.support.client import LoggedIn
from tests.support.federation import MyelinPeer
from tests.support.synapse_peer import SynapsePeer

Pair = tuple[MyelinPeer, SynapsePeer]
_ids = itertools.count()


def both_ways(pair: Pair) -> list[tuple[Any, Any]]:
    """(asking server, answering server): Myelin asks Synapse, then the reverse."""
    myelin, synapse = pair
    return [(myelin, synapse), (synapse, myelin)]


def test_profiles_across(synapse_pair: Pair) -> None:
    for asking, answering in both_ways(synapse_pair):
        owner, viewer = LoggedIn.new(answering), LoggedIn.new(asking)
        name = f"Named on {answering.kind}"
        owner.ok("PUT", f"/profile/{q(owner.user_id)}/displayname", {"displayname": name})
        profile = viewer.ok("GET", f"/profile/{q(owner.user_id)}")
        assert profile.get("displayname") == name, (asking.kind, profile)
        assert viewer.ok("GET", f"/profile/{q(owner.user_id)}/displayname") == \
            {"displayname": name}
        nobody = f"@nobody{next(_ids)}:{answering.server_name}"
        viewer.err("GET", f"/profile/{q(nobody)}", status=404, errcode="M_NOT_FOUND")


def test_aliases_across(synapse_pair: Pair) -> None:
    for asking, answering in both_ways(synapse_pair):
        owner, viewer = LoggedIn.new(answering), LoggedIn.new(asking)
        room_id = owner.room(preset="public_chat")
        alias = f"#across{next(_ids)}:{answering.server_name}"
        owner.ok("PUT", f"/directory/room/{q(alias)}", {"room_id": room_id})
        found = viewer.ok("GET", f"/directory/room/{q(alias)}")
        assert found["room_id"] == room_id and answering.server_name in found["servers"]
        missing = f"#missing{next(_ids)}:{answering.server_name}"
        viewer.err("GET", f"/directory/room/{q(missing)}", status=404, errcode="M_NOT_FOUND")


def test_keys_across(synapse_pair: Pair) -> None:
    for asking, answering in both_ways(synapse_pair):
        owner, viewer = Crypto.new(answering), Crypto.new(asking)
        device_keys = owner.device_keys()
        owner.ok("POST", "/keys/upload", {"device_keys": device_keys,
                                          "one_time_keys": owner.one_time_keys(1)})
        out = viewer.ok("POST", "/keys/query", {"device_keys": {owner.user_id: []}})
        got = out["device_keys"][owner.user_id][owner.device_id]
        assert {k: v for k, v in got.items() if k != "unsigned"} == device_keys, asking.kind
        assert out["failures"] == {}
        wanted = {"one_time_keys": {owner.user_id: {owner.device_id: "signed_curve25519"}}}
        claimed = viewer.ok("POST", "/keys/claim", wanted)
        assert list(claimed["one_time_keys"][owner.user_id][owner.device_id]) == \
            ["signed_curve25519:K0"], asking.kind
        assert viewer.ok("POST", "/keys/claim", wanted)["one_time_keys"] == {}


def test_public_rooms_across(synapse_pair: Pair) -> None:
    myelin, synapse = synapse_pair
    # Synapse asks for Myelin's list.
    owner, viewer = LoggedIn.new(myelin), LoggedIn.new(synapse)
    name = f"Across the servers {next(_ids)}"
    room_id = owner.room(preset="public_chat", visibility="public", name=name)
    listed = viewer.ok("GET", f"/publicRooms?server={q(myelin.server_name)}")
    assert room_id in [r["room_id"] for r in listed["chunk"]]
    found = viewer.ok("POST", f"/publicRooms?server={q(myelin.server_name)}",
                      {"filter": {"generic_search_term": name}})
    assert [(r["room_id"], r["name"]) for r in found["chunk"]] == [(room_id, name)]
    # Myelin asks for Synapse's: what Synapse's own users see. (The harness's
    # Synapse keeps its default room_list_publication_rules, which publish
    # nothing, so the list may well be empty.)
    theirs, ours = LoggedIn.new(synapse), LoggedIn.new(myelin)
    local = theirs.ok("POST", "/publicRooms", {"limit": 50})
    proxied = ours.ok("POST", f"/publicRooms?server={q(synapse.server_name)}", {"limit": 50})
    assert [r["room_id"] for r in proxied["chunk"]] == [r["room_id"] for r in local["chunk"]]
    assert proxied["total_room_count_estimate"] == local["total_room_count_estimate"]


def test_space_children_across(synapse_pair: Pair) -> None:
    for asking, answering in both_ways(synapse_pair):
        owner, viewer = LoggedIn.new(answering), LoggedIn.new(asking)
        child = owner.room(preset="public_chat", name=f"Child on {answering.kind}")
        space = viewer.room(preset="public_chat", name="Space",
                            creation_content={"type": "m.space"})
        viewer.ok("PUT", f"/rooms/{q(space)}/state/m.space.child/{q(child)}",
                  {"via": [answering.server_name]})
        status, answer = asking.request(
            "GET", f"/_matrix/client/v1/rooms/{q(space)}/hierarchy", token=viewer.token)
        assert status == 200, answer
        rooms = {r["room_id"]: r for r in answer["rooms"]}
        assert child in rooms, (asking.kind, answer)
        assert rooms[child]["name"] == f"Child on {answering.kind}"


def test_media_across(synapse_pair: Pair) -> None:
    for asking, answering in both_ways(synapse_pair):
        owner, viewer = LoggedIn.new(answering), LoggedIn.new(asking)
        content = png((200, 150), (30, 160, 90))
        media_id = upload(owner, content, "image/png", "leaf.png")
        origin = answering.server_name
        status, body, content_type = download(viewer, f"{MEDIA}/download/{origin}/{media_id}")
        assert (status, content_type) == (200, "image/png"), (asking.kind, body[:200])
        assert body == content
        status, thumb, thumb_type = download(
            viewer, f"{MEDIA}/thumbnail/{origin}/{media_id}?width=32&height=32&method=crop")
        assert status == 200 and thumb_type.startswith("image/"), (asking.kind, thumb[:200])
