"""Server-side key backups over HTTP on both engines: versions, keys, the
replacement rule, etag and count, wrong and unknown versions, and a backup
one device makes that another device of the same user restores."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.client import LoggedIn
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"
PASSWORD = "correct horse"
ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
ROOM = "!room:test.localhost"


class Client(LoggedIn):
    PREFIX = "backup"

    def other_device(self) -> Client:
        status, out = self.hs.request("POST", V3 + "/login", {
            "type": "m.login.password", "password": PASSWORD,
            "identifier": {"type": "m.id.user", "user": self.user_id}})
        assert status == 200, out
        return Client(self.hs, out)

    def create(self, auth_data: dict[str, Any] | None = None) -> str:
        out = self.ok("POST", "/room_keys/version", {
            "algorithm": ALGORITHM, "auth_data": auth_data or {"public_key": "pub"}})
        return str(out["version"])


def key(first: int = 0, forwarded: int = 0, verified: bool = False,
        data: str = "x") -> dict[str, Any]:
    return {"first_message_index": first, "forwarded_count": forwarded,
            "is_verified": verified, "session_data": {"ciphertext": data, "mac": "m",
                                                      "ephemeral": "e"}}


def test_versions_lifecycle(hs: ServerProcess) -> None:
    alice = Client.new(hs)
    alice.err("GET", "/room_keys/version", status=404, errcode="M_NOT_FOUND")
    v1 = alice.create({"public_key": "one"})
    info = alice.ok("GET", "/room_keys/version")
    assert info == {"algorithm": ALGORITHM, "auth_data": {"public_key": "one"}, "count": 0,
                    "etag": info["etag"], "version": v1}
    assert isinstance(info["etag"], str)
    assert alice.ok("GET", f"/room_keys/version/{v1}") == info

    # Only auth_data changes; algorithm and version in the body must match.
    alice.ok("PUT", f"/room_keys/version/{v1}", {
        "algorithm": ALGORITHM, "auth_data": {"public_key": "one", "signatures": {}},
        "version": v1})
    assert alice.ok("GET", f"/room_keys/version/{v1}")["auth_data"] == {
        "public_key": "one", "signatures": {}}
    alice.err("PUT", f"/room_keys/version/{v1}", {"algorithm": "org.example.other",
                                                   "auth_data": {"public_key": "evil"}},
              status=400, errcode="M_INVALID_PARAM")
    alice.err("PUT", f"/room_keys/version/{v1}", {"algorithm": ALGORITHM,
                                                   "auth_data": {"public_key": "evil"},
                                                   "version": "999"},
              status=400, errcode="M_INVALID_PARAM")
    alice.err("PUT", f"/room_keys/version/{v1}", {"algorithm": ALGORITHM},
              status=400, errcode="M_MISSING_PARAM")
    alice.err("PUT", "/room_keys/version/999", {"algorithm": ALGORITHM, "auth_data": {}},
              status=404, errcode="M_NOT_FOUND")
    assert alice.ok("GET", f"/room_keys/version/{v1}")["auth_data"]["public_key"] == "one"

    # A new backup becomes the current one; the old one can still be read.
    v2 = alice.create({"public_key": "two"})
    assert int(v2) > int(v1)
    assert alice.ok("GET", "/room_keys/version")["version"] == v2
    assert alice.ok("GET", f"/room_keys/version/{v1}")["auth_data"]["public_key"] == "one"

    # Deleting: idempotent for a deleted version, 404 for one that never existed.
    alice.ok("DELETE", f"/room_keys/version/{v2}")
    alice.ok("DELETE", f"/room_keys/version/{v2}")
    alice.err("DELETE", "/room_keys/version/12345", status=404, errcode="M_NOT_FOUND")
    alice.err("DELETE", "/room_keys/version/notanumber", status=404, errcode="M_NOT_FOUND")
    alice.err("GET", f"/room_keys/version/{v2}", status=404, errcode="M_NOT_FOUND")
    assert alice.ok("GET", "/room_keys/version")["version"] == v1
    # A deleted version's number is never handed out again.
    v3 = alice.create()
    assert int(v3) > int(v2)

    # Backups are per user.
    bob = Client.new(hs)
    bob.err("GET", "/room_keys/version", status=404, errcode="M_NOT_FOUND")
    bob.err("GET", f"/room_keys/version/{v1}", status=404, errcode="M_NOT_FOUND")
    bob.err("DELETE", f"/room_keys/version/{v1}", status=404, errcode="M_NOT_FOUND")
    assert alice.ok("GET", f"/room_keys/version/{v1}")["version"] == v1


def test_bad_version_bodies_change_nothing(hs: ServerProcess) -> None:
    alice = Client.new(hs)
    for body in ({}, {"algorithm": ALGORITHM}, {"auth_data": {}},
                 {"algorithm": 5, "auth_data": {}}, {"algorithm": "", "auth_data": {}},
                 {"algorithm": ALGORITHM, "auth_data": None}):
        got, out = alice.req("POST", "/room_keys/version", body)
        assert got == 400 and out["errcode"] in ("M_MISSING_PARAM", "M_BAD_JSON"), (body, out)
    alice.err("GET", "/room_keys/version", status=404)
    status, _ = hs.request("POST", V3 + "/room_keys/version",
                           {"algorithm": ALGORITHM, "auth_data": {}})
    assert status == 401


def test_keys_replacement_etag_and_count(hs: ServerProcess) -> None:
    alice = Client.new(hs)
    version = alice.create()
    etag0 = alice.ok("GET", "/room_keys/version")["etag"]

    out = alice.ok("PUT", f"/room_keys/keys/{ROOM}/s1?version={version}", key(first=5))
    assert out["count"] == 1 and out["etag"] != etag0
    etag1 = out["etag"]
    assert alice.ok("GET", f"/room_keys/keys/{ROOM}/s1?version={version}") == key(first=5)

    # A worse key (higher first_message_index) is not stored, and the etag stays.
    out = alice.ok("PUT", f"/room_keys/keys/{ROOM}/s1?version={version}",
                   key(first=9, data="worse"))
    assert out == {"count": 1, "etag": etag1}
    assert alice.ok("GET", f"/room_keys/keys/{ROOM}/s1?version={version}") == key(first=5)

    # A lower first_message_index wins.
    out = alice.ok("PUT", f"/room_keys/keys/{ROOM}/s1?version={version}",
                   key(first=2, forwarded=3, data="lower"))
    assert out["etag"] != etag1
    assert alice.ok("GET", f"/room_keys/keys/{ROOM}/s1?version={version}")[
        "session_data"]["ciphertext"] == "lower"

    # Same index: the lower forwarded_count wins; a higher one does not.
    alice.ok("PUT", f"/room_keys/keys/{ROOM}/s1?version={version}",
             key(first=2, forwarded=4, data="more-forwarded"))
    alice.ok("PUT", f"/room_keys/keys/{ROOM}/s1?version={version}",
             key(first=2, forwarded=1, data="less-forwarded"))
    assert alice.ok("GET", f"/room_keys/keys/{ROOM}/s1?version={version}")[
        "session_data"]["ciphertext"] == "less-forwarded"

    # is_verified beats everything: a verified key replaces an unverified one
    # with a lower index, and an unverified one never replaces a verified one.
    alice.ok("PUT", f"/room_keys/keys/{ROOM}/s1?version={version}",
             key(first=50, forwarded=50, verified=True, data="verified"))
    alice.ok("PUT", f"/room_keys/keys/{ROOM}/s1?version={version}",
             key(first=0, forwarded=0, verified=False, data="unverified"))
    assert alice.ok("GET", f"/room_keys/keys/{ROOM}/s1?version={version}") == key(
        first=50, forwarded=50, verified=True, data="verified")

    # Re-uploading the identical key changes nothing.
    etag = alice.ok("GET", "/room_keys/version")["etag"]
    out = alice.ok("PUT", f"/room_keys/keys/{ROOM}/s1?version={version}",
                   key(first=50, forwarded=50, verified=True, data="verified"))
    assert out == {"count": 1, "etag": etag}

    # Bulk forms, per room and for all rooms; count counts sessions.
    other_room = "!other:test.localhost"
    out = alice.ok("PUT", f"/room_keys/keys/{ROOM}?version={version}",
                   {"sessions": {"s2": key(), "s3": key()}})
    assert out["count"] == 3
    out = alice.ok("PUT", f"/room_keys/keys?version={version}",
                   {"rooms": {other_room: {"sessions": {"s4": key(first=1)}}}})
    assert out["count"] == 4
    info = alice.ok("GET", f"/room_keys/version/{version}")
    assert info["count"] == 4 and info["etag"] == out["etag"]
    everything = alice.ok("GET", f"/room_keys/keys?version={version}")
    assert set(everything["rooms"]) == {ROOM, other_room}
    assert set(everything["rooms"][ROOM]["sessions"]) == {"s1", "s2", "s3"}
    assert everything["rooms"][other_room] == {"sessions": {"s4": key(first=1)}}
    assert alice.ok("GET", f"/room_keys/keys/{other_room}?version={version}") == {
        "sessions": {"s4": key(first=1)}}
    assert alice.ok("GET", f"/room_keys/keys/!empty:x?version={version}") == {"sessions": {}}
    alice.err("GET", f"/room_keys/keys/{ROOM}/nosuch?version={version}", status=404,
              errcode="M_NOT_FOUND")

    # Deletes, each with the new count and etag.
    before = alice.ok("GET", "/room_keys/version")["etag"]
    out = alice.ok("DELETE", f"/room_keys/keys/{ROOM}/s2?version={version}")
    assert out["count"] == 3 and out["etag"] != before
    out = alice.ok("DELETE", f"/room_keys/keys/{ROOM}?version={version}")
    assert out["count"] == 1
    assert alice.ok("GET", f"/room_keys/keys/{ROOM}?version={version}") == {"sessions": {}}
    out = alice.ok("DELETE", f"/room_keys/keys?version={version}")
    assert out["count"] == 0
    assert alice.ok("GET", f"/room_keys/keys?version={version}") == {"rooms": {}}


def test_wrong_and_unknown_versions(hs: ServerProcess) -> None:
    alice = Client.new(hs)
    # No backup at all: writes and reads are 404.
    alice.err("PUT", f"/room_keys/keys/{ROOM}/s1?version=1", key(), status=404,
              errcode="M_NOT_FOUND")
    alice.err("GET", "/room_keys/keys?version=1", status=404, errcode="M_NOT_FOUND")
    old = alice.create()
    alice.ok("PUT", f"/room_keys/keys/{ROOM}/s1?version={old}", key(data="old"))
    new = alice.create()

    # Writing to a version that is not the current one: 403 naming the current one.
    for path, body in ((f"/room_keys/keys/{ROOM}/s1?version={old}", key()),
                       (f"/room_keys/keys/{ROOM}?version={old}", {"sessions": {"s": key()}}),
                       (f"/room_keys/keys?version={old}",
                        {"rooms": {ROOM: {"sessions": {"s": key()}}}}),
                       ("/room_keys/keys?version=424242",
                        {"rooms": {ROOM: {"sessions": {"s": key()}}}})):
        out = alice.err("PUT", path, body, status=403, errcode="M_WRONG_ROOM_KEYS_VERSION")
        assert out["current_version"] == new
    # ... and nothing was written: the old backup still has its one key.
    assert alice.ok("GET", f"/room_keys/version/{old}")["count"] == 1
    assert alice.ok("GET", f"/room_keys/keys/{ROOM}/s1?version={old}")[
        "session_data"]["ciphertext"] == "old"
    assert alice.ok("GET", f"/room_keys/keys?version={new}") == {"rooms": {}}

    # The version parameter is required.
    alice.err("PUT", f"/room_keys/keys/{ROOM}/s1", key(), status=400, errcode="M_MISSING_PARAM")
    alice.err("GET", "/room_keys/keys", status=400, errcode="M_MISSING_PARAM")

    # A deleted version's keys are gone with it.
    alice.ok("DELETE", f"/room_keys/version/{old}")
    alice.err("GET", f"/room_keys/keys?version={old}", status=404, errcode="M_NOT_FOUND")
    alice.err("DELETE", f"/room_keys/keys?version={old}", status=404, errcode="M_NOT_FOUND")
    # Deleting the current backup leaves none: writes are 404 again.
    alice.ok("DELETE", f"/room_keys/version/{new}")
    alice.err("PUT", f"/room_keys/keys/{ROOM}/s1?version={new}", key(), status=404,
              errcode="M_NOT_FOUND")


@pytest.mark.parametrize("body", [
    {"first_message_index": 0, "forwarded_count": 0, "is_verified": False},
    {**key(), "first_message_index": "0"},
    {**key(), "first_message_index": -1},
    {**key(), "forwarded_count": None},
    {**key(), "is_verified": "yes"},
    {**key(), "session_data": None},
    {**key(), "forwarded_count": 2**53},
])
def test_bad_key_is_refused_and_changes_nothing(hs: ServerProcess, body: dict[str, Any],
                                                ) -> None:
    alice = Client.new(hs)
    version = alice.create()
    etag = alice.ok("GET", "/room_keys/version")["etag"]
    alice.err("PUT", f"/room_keys/keys/{ROOM}/s1?version={version}", body, status=400,
              errcode="M_BAD_JSON")
    # One bad session in a bulk upload refuses the whole upload.
    alice.err("PUT", f"/room_keys/keys?version={version}",
              {"rooms": {ROOM: {"sessions": {"good": key(), "bad": body}}}}, status=400,
              errcode="M_BAD_JSON")
    assert alice.ok("GET", "/room_keys/version") == {
        "algorithm": ALGORITHM, "auth_data": {"public_key": "pub"}, "count": 0, "etag": etag,
        "version": version}


def test_bad_bulk_shapes(hs: ServerProcess) -> None:
    alice = Client.new(hs)
    version = alice.create()
    alice.err("PUT", f"/room_keys/keys?version={version}", {"rooms": []}, status=400,
              errcode="M_BAD_JSON")
    alice.err("PUT", f"/room_keys/keys?version={version}",
              {"rooms": {"not-a-room": {"sessions": {}}}}, status=400, errcode="M_INVALID_PARAM")
    alice.err("PUT", f"/room_keys/keys/{ROOM}?version={version}", {"sessions": []},
              status=400, errcode="M_BAD_JSON")
    alice.err("PUT", f"/room_keys/keys/{ROOM}?version={version}", {}, status=400,
              errcode="M_BAD_JSON")
    assert alice.ok("GET", "/room_keys/version")["count"] == 0


def test_one_device_backs_up_another_restores(hs: ServerProcess) -> None:
    """Two devices of one user, as two clients would do it: the first creates the
    backup and uploads its sessions; the second, logged in later, discovers the
    current backup, checks its auth_data and etag, and restores every key."""
    laptop = Client.new(hs)
    version = laptop.create({"public_key": "backup-public-key", "signatures": {
        laptop.user_id: {"ed25519:LAPTOP": "sig"}}})
    sessions = {f"session{i}": key(first=i, data=f"cipher{i}") for i in range(5)}
    out = laptop.ok("PUT", f"/room_keys/keys?version={version}",
                    {"rooms": {ROOM: {"sessions": sessions}}})
    assert out["count"] == 5
    etag_after_upload = out["etag"]

    phone = laptop.other_device()
    assert phone.token != laptop.token
    info = phone.ok("GET", "/room_keys/version")
    assert info["version"] == version
    assert info["auth_data"]["public_key"] == "backup-public-key"
    assert info["count"] == 5 and info["etag"] == etag_after_upload
    restored = phone.ok("GET", f"/room_keys/keys?version={info['version']}")
    assert restored == {"rooms": {ROOM: {"sessions": sessions}}}

    # The phone backs up a session of its own; the laptop sees the etag move.
    phone.ok("PUT", f"/room_keys/keys/{ROOM}/phone-session?version={version}", key(data="p"))
    info = laptop.ok("GET", "/room_keys/version")
    assert info["etag"] != etag_after_upload and info["count"] == 6
    assert laptop.ok("GET", f"/room_keys/keys/{ROOM}/phone-session?version={version}") == key(
        data="p")


def test_opaque_backup_data_round_trips(hs: ServerProcess) -> None:
    """auth_data and session_data belong to the backup's algorithm: earlier clients
    stored opaque strings, and they come back as stored (Synapse does the same)."""
    alice = Client.new(hs)
    version = alice.ok("POST", "/room_keys/version", {"algorithm": "m.megolm_backup.v1",
                                                      "auth_data": "opaque"})["version"]
    assert alice.ok("GET", f"/room_keys/version/{version}")["auth_data"] == "opaque"
    opaque = {**key(), "session_data": "ciphertext"}
    alice.ok("PUT", f"/room_keys/keys/{ROOM}/s?version={version}", opaque)
    assert alice.ok("GET", f"/room_keys/keys/{ROOM}/s?version={version}") == opaque
