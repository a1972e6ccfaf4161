"""End-to-end encryption keys over HTTP on both engines: upload, query, claim, changes,
cross-signing and signatures, and what deleting a device does to its keys."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from signedjson.key import generate_signing_key, get_verify_key
from signedjson.sign import sign_json
from unpaddedbase64 import encode_base64

from tests.support.client import TokenClient
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"
PASSWORD = "correct horse"
_ids = itertools.count()


class Client(TokenClient):
    def __init__(self, hs: ServerProcess, login: dict[str, Any]) -> None:
        self.hs = hs
        self.user_id: str = login["user_id"]
        self.token: str = login["access_token"]
        self.device_id: str = login["device_id"]
        self.device_key = generate_signing_key(self.device_id)

    @classmethod
    def new(cls, hs: ServerProcess, prefix: str = "crypto") -> Client:
        return cls(hs, hs.register(f"{prefix}{next(_ids)}", PASSWORD))

    def login_again(self, display_name: str | None = None) -> Client:
        body: dict[str, Any] = {"type": "m.login.password", "password": PASSWORD,
                                "identifier": {"type": "m.id.user", "user": self.user_id}}
        if display_name:
            body["initial_device_display_name"] = display_name
        status, out = self.hs.request("POST", V3 + "/login", body)
        assert status == 200, out
        return Client(self.hs, out)

    # -- key material ------------------------------------------------------
    def device_keys(self) -> dict[str, Any]:
        keys = {
            "user_id": self.user_id, "device_id": self.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"curve25519:{self.device_id}": f"curve-{self.device_id}",
                     f"ed25519:{self.device_id}": self.ed25519},
        }
        return sign_json(keys, self.user_id, self.device_key)

    @property
    def ed25519(self) -> str:
        return encode_base64(get_verify_key(self.device_key).encode())

    def one_time_keys(self, count: int, start: int = 0) -> dict[str, Any]:
        return {f"signed_curve25519:K{i:04d}": sign_json({"key": f"otk-{self.device_id}-{i}"},
                                                          self.user_id, self.device_key)
                for i in range(start, start + count)}

    def upload(self, **body: Any) -> dict[str, int]:
        return dict(self.ok("POST", "/keys/upload", body)["one_time_key_counts"])

    def sync(self, since: str | None = None) -> Any:
        return self.ok("GET", "/sync?timeout=0" + (f"&since={quote(since)}" if since else ""))


def cross_signing_key(user_id: str, usage: str) -> tuple[Any, dict[str, Any]]:
    key = generate_signing_key("x")
    pub = encode_base64(get_verify_key(key).encode())
    key.version = pub
    return key, {"user_id": user_id, "usage": [usage], "keys": {f"ed25519:{pub}": pub}}


def test_upload_and_query(hs: ServerProcess) -> None:
    alice = Client.new(hs)
    alice.ok("PUT", f"/devices/{alice.device_id}", {"display_name": "Alice's phone"})
    counts = alice.upload(device_keys=alice.device_keys(), one_time_keys=alice.one_time_keys(5),
                          fallback_keys={"signed_curve25519:FB1": sign_json(
                              {"key": "fallback", "fallback": True}, alice.user_id,
                              alice.device_key)})
    assert counts == {"signed_curve25519": 5}
    assert alice.upload() == {"signed_curve25519": 5}
    # Re-uploading the same one-time key is fine; changing it is not.
    assert alice.upload(one_time_keys=alice.one_time_keys(1)) == {"signed_curve25519": 5}
    alice.err("POST", "/keys/upload", {"one_time_keys": {"signed_curve25519:K0000": {
        "key": "different"}}}, status=400)
    alice.err("POST", "/keys/upload", {"one_time_keys": {"nocolon": "x"}}, status=400)

    sync = alice.sync()
    assert sync["device_one_time_keys_count"] == {"signed_curve25519": 5}
    assert sync["device_unused_fallback_key_types"] == ["signed_curve25519"]

    bob = Client.new(hs)
    assert bob.upload() == {"signed_curve25519": 0}
    result = bob.ok("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert result["failures"] == {}
    got = result["device_keys"][alice.user_id][alice.device_id]
    assert got["unsigned"] == {"device_display_name": "Alice's phone"}
    assert {k: v for k, v in got.items() if k != "unsigned"} == alice.device_keys()
    # Asking for a named device, an unknown device, a user with no keys.
    result = bob.ok("POST", "/keys/query", {"device_keys": {
        alice.user_id: [alice.device_id, "NOSUCH"], bob.user_id: [],
        "@someone:elsewhere.example": []}})
    assert list(result["device_keys"][alice.user_id]) == [alice.device_id]
    assert result["device_keys"][bob.user_id] == {}
    assert "elsewhere.example" in result["failures"]

    # Keys only for one's own user and device.
    alice.err("POST", "/keys/upload", {"device_keys": bob.device_keys()}, status=400)
    wrong_device = {**alice.device_keys(), "device_id": "OTHERDEV"}
    alice.err("POST", "/keys/upload", {"device_keys": wrong_device}, status=400)
    status, _ = hs.request("POST", V3 + "/keys/query", {"device_keys": {}})
    assert status == 401


def test_claim_exactly_once_then_fallback(hs: ServerProcess) -> None:
    alice = Client.new(hs)
    alice.upload(device_keys=alice.device_keys(), one_time_keys=alice.one_time_keys(3))
    bob = Client.new(hs)
    request = {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}}
    claimed = set()
    for _ in range(3):
        out = bob.ok("POST", "/keys/claim", request)
        assert out["failures"] == {}
        keys = out["one_time_keys"][alice.user_id][alice.device_id]
        assert len(keys) == 1
        (key_id, key), = keys.items()
        assert key == alice.one_time_keys(1, int(key_id.split(":K")[1]))[key_id]
        claimed.add(key_id)
    assert len(claimed) == 3
    assert alice.upload() == {"signed_curve25519": 0}
    # Exhausted, no fallback key: nothing.
    assert bob.ok("POST", "/keys/claim", request)["one_time_keys"] == {}

    fallback = sign_json({"key": "fb", "fallback": True}, alice.user_id, alice.device_key)
    alice.upload(fallback_keys={"signed_curve25519:FB": fallback})
    assert alice.sync()["device_unused_fallback_key_types"] == ["signed_curve25519"]
    for _ in range(2):  # the fallback key is handed out as often as needed
        out = bob.ok("POST", "/keys/claim", request)
        assert out["one_time_keys"] == {
            alice.user_id: {alice.device_id: {"signed_curve25519:FB": fallback}}}
    assert alice.sync()["device_unused_fallback_key_types"] == []
    # Re-uploading the same fallback key does not mark it unused; a new one does.
    alice.upload(fallback_keys={"signed_curve25519:FB": fallback})
    assert alice.sync()["device_unused_fallback_key_types"] == []
    alice.upload(fallback_keys={"signed_curve25519:FB2": fallback})
    assert alice.sync()["device_unused_fallback_key_types"] == ["signed_curve25519"]
    # One-time keys are preferred over the fallback key again once there are some.
    alice.upload(one_time_keys=alice.one_time_keys(1, 100))
    out = bob.ok("POST", "/keys/claim", request)
    assert list(out["one_time_keys"][alice.user_id][alice.device_id]) == \
        ["signed_curve25519:K0100"]
    # Unknown devices and remote users.
    out = bob.ok("POST", "/keys/claim", {"one_time_keys": {
        alice.user_id: {"NOSUCH": "signed_curve25519"},
        "@x:elsewhere.example": {"D": "signed_curve25519"}}})
    assert out["one_time_keys"] == {}
    assert "elsewhere.example" in out["failures"]


def test_concurrent_claims_never_share_a_key(hs: ServerProcess) -> None:
    alice = Client.new(hs)
    alice.upload(device_keys=alice.device_keys(), one_time_keys=alice.one_time_keys(20))
    claimers = [Client.new(hs) for _ in range(4)]
    request = {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}}

    def claim(i: int) -> list[str]:
        out = claimers[i % len(claimers)].ok("POST", "/keys/claim", request)
        return list(out["one_time_keys"].get(alice.user_id, {}).get(alice.device_id, {}))

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(claim, range(30)))
    got = [key for keys in results for key in keys]
    assert len(got) == 20
    assert len(set(got)) == 20
    assert alice.upload() == {"signed_curve25519": 0}


def test_keys_changes(hs: ServerProcess) -> None:
    alice = Client.new(hs)
    bob = Client.new(hs)
    stranger = Client.new(hs)
    room_id = alice.ok("POST", "/createRoom", {"invite": [bob.user_id]})["room_id"]
    bob.ok("POST", f"/join/{quote(room_id)}", {})
    start = alice.sync()["next_batch"]

    bob.upload(device_keys=bob.device_keys())
    stranger.upload(device_keys=stranger.device_keys())
    middle = alice.sync(start)
    assert bob.user_id in middle["device_lists"]["changed"]
    end = middle["next_batch"]

    out = alice.ok("GET", f"/keys/changes?from={quote(start)}&to={quote(end)}")
    assert bob.user_id in out["changed"]
    assert stranger.user_id not in out["changed"]
    assert out["left"] == []
    out = alice.ok("GET", f"/keys/changes?from={quote(end)}&to={quote(end)}")
    assert out["changed"] == []
    # Without `to`: up to now.
    bob.upload(device_keys={**bob.device_keys(), "algorithms": ["m.megolm.v1.aes-sha2"]})
    out = alice.ok("GET", f"/keys/changes?from={quote(end)}")
    assert out["changed"] == [bob.user_id]
    # Re-uploading identical device keys is not a change.
    after = alice.sync(end)["next_batch"]
    bob.upload(device_keys={**bob.device_keys(), "algorithms": ["m.megolm.v1.aes-sha2"]})
    assert alice.ok("GET", f"/keys/changes?from={quote(after)}")["changed"] == []
    alice.err("GET", "/keys/changes?from=garbage", status=400, errcode="M_INVALID_PARAM")
    alice.err("GET", "/keys/changes", status=400)


def test_members_joining_and_leaving_change_device_lists(hs: ServerProcess) -> None:
    """Someone newly sharing a room is "changed" (fetch their keys); someone who
    shares no room any more is "left" — in /sync and in /keys/changes."""
    alice, bob, carol = Client.new(hs), Client.new(hs), Client.new(hs)
    room_id = alice.ok("POST", "/createRoom", {"preset": "public_chat"})["room_id"]
    bob.ok("POST", f"/join/{quote(room_id)}", {})
    start = alice.sync()["next_batch"]

    carol.ok("POST", f"/join/{quote(room_id)}", {})
    body = alice.sync(start)
    assert carol.user_id in body["device_lists"]["changed"]
    assert body["device_lists"]["left"] == []
    middle = body["next_batch"]

    bob.ok("POST", f"/rooms/{quote(room_id)}/leave", {})
    body = alice.sync(middle)
    assert body["device_lists"]["left"] == [bob.user_id]
    assert bob.user_id not in body["device_lists"]["changed"]
    end = body["next_batch"]
    # Nothing more once seen.
    assert alice.sync(end).get("device_lists", {}).get("left", []) == []

    out = alice.ok("GET", f"/keys/changes?from={quote(start)}&to={quote(end)}")
    assert out["left"] == [bob.user_id]
    assert carol.user_id in out["changed"]
    # An invitee is "changed" too (clients encrypt to invitees), not "left".
    erin = Client.new(hs)
    alice.ok("POST", f"/rooms/{quote(room_id)}/invite", {"user_id": erin.user_id})
    body = alice.sync(end)
    assert erin.user_id in body["device_lists"]["changed"]
    assert erin.user_id not in body["device_lists"]["left"]
    # A leaver who still shares another room with us is not "left".
    other = alice.ok("POST", "/createRoom", {"preset": "public_chat"})["room_id"]
    carol.ok("POST", f"/join/{quote(other)}", {})
    since = alice.sync()["next_batch"]
    carol.ok("POST", f"/rooms/{quote(room_id)}/leave", {})
    assert carol.user_id not in alice.sync(since)["device_lists"]["left"]

    # When we are the one who leaves, /keys/changes lists the members left behind.
    dave = Client.new(hs)
    third = dave.ok("POST", "/createRoom", {"preset": "public_chat"})["room_id"]
    alice.ok("POST", f"/join/{quote(third)}", {})
    before = alice.sync()["next_batch"]
    alice.ok("POST", f"/rooms/{quote(third)}/leave", {})
    after = alice.sync(before)
    assert dave.user_id in after["device_lists"]["left"]
    out = alice.ok("GET", f"/keys/changes?from={quote(before)}&to={quote(after['next_batch'])}")
    assert dave.user_id in out["left"]
    # Back in the room: its members are "changed" (no update reached us while
    # we were away), though none of them changed anything.
    alice.ok("POST", f"/join/{quote(third)}", {})
    assert dave.user_id in alice.sync(after["next_batch"])["device_lists"]["changed"]
    # Also seen from before we left (in the room at both ends of the window).
    assert dave.user_id in alice.sync(before)["device_lists"]["changed"]
    out = alice.ok("GET", f"/keys/changes?from={quote(before)}")
    assert dave.user_id in out["changed"] and dave.user_id not in out["left"]


def test_deleting_a_device_deletes_its_keys(hs: ServerProcess) -> None:
    alice = Client.new(hs)
    laptop = alice.login_again("laptop")
    laptop.upload(device_keys=laptop.device_keys(), one_time_keys=laptop.one_time_keys(2),
                  fallback_keys={"signed_curve25519:FB": {"key": "fb", "fallback": True}})
    alice.upload(device_keys=alice.device_keys())
    bob = Client.new(hs)
    query = {"device_keys": {alice.user_id: []}}
    assert set(bob.ok("POST", "/keys/query", query)["device_keys"][alice.user_id]) == \
        {alice.device_id, laptop.device_id}
    assert bob.ok("POST", "/keys/query", query)["device_keys"][alice.user_id][
        laptop.device_id]["unsigned"] == {"device_display_name": "laptop"}

    auth = {"type": "m.login.password", "password": PASSWORD,
            "identifier": {"type": "m.id.user", "user": alice.user_id}}
    alice.ok("DELETE", f"/devices/{laptop.device_id}", {"auth": auth})
    assert list(bob.ok("POST", "/keys/query", query)["device_keys"][alice.user_id]) == \
        [alice.device_id]
    claim = {"one_time_keys": {alice.user_id: {laptop.device_id: "signed_curve25519"}}}
    assert bob.ok("POST", "/keys/claim", claim)["one_time_keys"] == {}


def test_cross_signing_and_signatures(hs: ServerProcess) -> None:
    alice = Client.new(hs)
    alice.upload(device_keys=alice.device_keys())
    master_key, master = cross_signing_key(alice.user_id, "master")
    self_key, self_signing = cross_signing_key(alice.user_id, "self_signing")
    user_key, user_signing = cross_signing_key(alice.user_id, "user_signing")
    self_signing = sign_json(self_signing, alice.user_id, master_key)
    user_signing = sign_json(user_signing, alice.user_id, master_key)

    # A self-signing key not signed by the master key is refused.
    _, unsigned_ssk = cross_signing_key(alice.user_id, "self_signing")
    alice.err("POST", "/keys/device_signing/upload",
              {"master_key": master, "self_signing_key": unsigned_ssk},
              status=400, errcode="M_INVALID_SIGNATURE")
    alice.err("POST", "/keys/device_signing/upload",
              {"master_key": {**master, "usage": ["self_signing"]}}, status=400)
    # First upload: no UIA needed.
    body = {"master_key": master, "self_signing_key": self_signing,
            "user_signing_key": user_signing}
    alice.ok("POST", "/keys/device_signing/upload", body)
    # The same keys again: still none (an idempotent retry).
    alice.ok("POST", "/keys/device_signing/upload", body)
    # New keys need the password.
    new_master_key, new_master = cross_signing_key(alice.user_id, "master")
    out = alice.err("POST", "/keys/device_signing/upload", {"master_key": new_master},
                    status=401)
    assert out["flows"] == [{"stages": ["m.login.password"]}]

    bob = Client.new(hs)
    bob.upload(device_keys=bob.device_keys())
    query = {"device_keys": {alice.user_id: []}}
    result = bob.ok("POST", "/keys/query", query)
    assert result["master_keys"][alice.user_id] == master
    assert result["self_signing_keys"][alice.user_id] == self_signing
    assert alice.user_id not in result["user_signing_keys"]
    own = alice.ok("POST", "/keys/query", query)
    assert own["user_signing_keys"][alice.user_id] == user_signing

    # Alice signs her device with her self-signing key.
    signed_device = sign_json(alice.device_keys(), alice.user_id, self_key)
    ssk_id = f"ed25519:{self_key.version}"
    out = alice.ok("POST", "/keys/signatures/upload",
                   {alice.user_id: {alice.device_id: signed_device}})
    assert out["failures"] == {}
    device = bob.ok("POST", "/keys/query", query)["device_keys"][alice.user_id][alice.device_id]
    assert device["signatures"][alice.user_id][ssk_id] == \
        signed_device["signatures"][alice.user_id][ssk_id]
    assert f"ed25519:{alice.device_id}" in device["signatures"][alice.user_id]

    # Alice's device signs her master key.
    signed_master = sign_json(master, alice.user_id, alice.device_key)
    out = alice.ok("POST", "/keys/signatures/upload",
                   {alice.user_id: {master_key.version: signed_master}})
    assert out["failures"] == {}
    got = bob.ok("POST", "/keys/query", query)["master_keys"][alice.user_id]
    assert got["signatures"][alice.user_id][f"ed25519:{alice.device_id}"] == \
        signed_master["signatures"][alice.user_id][f"ed25519:{alice.device_id}"]

    # Bob sets up cross-signing; Alice signs his master key with her user-signing key.
    bob_master_key, bob_master = cross_signing_key(bob.user_id, "master")
    bob.ok("POST", "/keys/device_signing/upload", {"master_key": bob_master})
    signed_bob = sign_json(bob_master, alice.user_id, user_key)
    out = alice.ok("POST", "/keys/signatures/upload",
                   {bob.user_id: {bob_master_key.version: signed_bob}})
    assert out["failures"] == {}
    bob_query = {"device_keys": {bob.user_id: []}}
    seen_by_alice = alice.ok("POST", "/keys/query", bob_query)["master_keys"][bob.user_id]
    assert alice.user_id in seen_by_alice["signatures"]
    # That signature is Alice's business only.
    seen_by_bob = bob.ok("POST", "/keys/query", bob_query)["master_keys"][bob.user_id]
    assert alice.user_id not in seen_by_bob.get("signatures", {})

    # Bad signatures and unknown keys are failures, not errors.
    forged = {**alice.device_keys(), "signatures": {alice.user_id: {ssk_id: "bm90IGEgc2ln"}}}
    out = alice.ok("POST", "/keys/signatures/upload", {
        alice.user_id: {alice.device_id: forged, "NOSUCHKEY": forged}})
    assert out["failures"][alice.user_id][alice.device_id]["errcode"] == "M_INVALID_SIGNATURE"
    assert "NOSUCHKEY" in out["failures"][alice.user_id]
    tampered = sign_json({**alice.device_keys(), "algorithms": ["evil"]}, alice.user_id, self_key)
    out = alice.ok("POST", "/keys/signatures/upload", {alice.user_id: {alice.device_id: tampered}})
    assert alice.device_id in out["failures"][alice.user_id]

    # Replacing the master key with UIA.
    auth = {"type": "m.login.password", "password": PASSWORD,
            "identifier": {"type": "m.id.user", "user": alice.user_id}}
    alice.ok("POST", "/keys/device_signing/upload", {"master_key": new_master, "auth": auth})
    assert bob.ok("POST", "/keys/query", query)["master_keys"][alice.user_id] == new_master
    assert new_master_key.version != master_key.version
