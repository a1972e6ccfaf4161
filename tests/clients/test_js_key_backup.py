"""Key backup with the real matrix-js-sdk (Rust crypto), on both engines: one device
backs its room keys up, a second device of the same user restores them and reads
messages it was never sent the keys for (see tests/js/scenarios/backup_*.mjs)."""

from __future__ import annotations

from typing import Any

from tests.clients.jsclient import run_js
from tests.support.server import ServerProcess

PASSWORD = "backup password"


def _creds(login: dict[str, Any]) -> dict[str, str]:
    return {"userId": login["user_id"], "accessToken": login["access_token"],
            "deviceId": login["device_id"]}


def test_backup_made_by_one_client_is_restored_by_another(server: ServerProcess) -> None:
    laptop = server.register("keeper", PASSWORD)
    made = run_js("backup_create", timeout=150, baseUrl=server.base_url,
                  laptop=_creds(laptop), messages=2)
    assert made["backupInfo"]["version"] == made["version"]
    assert made["backupInfo"]["algorithm"] == "m.megolm_backup.v1.curve25519-aes-sha2"
    # The SDK signed the backup's auth_data with its device key.
    auth_data = made["backupInfo"]["auth_data"]
    assert f"ed25519:{laptop['device_id']}" in auth_data["signatures"][laptop["user_id"]]

    # The server holds the key, encrypted, under the room.
    status, keys = server.request("GET", "/_matrix/client/v3/room_keys/keys?version="
                                  + made["version"], token=laptop["access_token"])
    assert status == 200
    sessions = keys["rooms"][made["roomId"]]["sessions"]
    assert sessions and all(set(s["session_data"]) >= {"ciphertext", "ephemeral", "mac"}
                            for s in sessions.values())

    # A second device logs in only now: nobody shares the room key with it.
    status, phone = server.request("POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "password": PASSWORD,
        "identifier": {"type": "m.id.user", "user": laptop["user_id"]}})
    assert status == 200, phone
    restored = run_js("backup_restore", timeout=150, baseUrl=server.base_url,
                      phone=_creds(phone), privateKey=made["privateKey"],
                      version=made["version"], roomId=made["roomId"],
                      eventIds=[m["event_id"] for m in made["sent"]])
    assert all(m["decryptionFailure"] for m in restored["before"]), restored["before"]
    assert restored["backupVersion"] == made["version"]
    assert restored["restored"]["imported"] >= 1
    assert restored["restored"]["total"] == len(sessions)
    assert [(m["type"], m["body"]) for m in restored["after"]] == [
        ("m.room.message", m["body"]) for m in made["sent"]]
