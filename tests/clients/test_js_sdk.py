"""The real matrix-js-sdk against a real server, on both engines (see tests/js/README.md)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tests.clients.jsclient import JSClientError, run_js
from tests.support.server import ServerProcess


def _creds(login: dict[str, Any]) -> dict[str, str]:
    return {"userId": login["user_id"], "accessToken": login["access_token"],
            "deviceId": login["device_id"]}


def test_whoami_and_sdk_errors_reach_python(server: ServerProcess) -> None:
    login = server.register("carol")
    assert run_js("whoami", baseUrl=server.base_url, **_creds(login)) == {
        "user_id": "@carol:test.localhost", "device_id": login["device_id"], "is_guest": False}

    with pytest.raises(JSClientError) as failure:
        run_js("whoami", baseUrl=server.base_url, accessToken="not-a-token")
    assert failure.value.errcode == "M_UNKNOWN_TOKEN"
    assert failure.value.error["httpStatus"] == 401


def test_accounts_register_login_devices_logout(server: ServerProcess) -> None:
    password = "js-sdk password 1"
    r = run_js("accounts", baseUrl=server.base_url, username="jsalice", password=password,
               registerDeviceName="js reg device", deviceName="js laptop",
               newDeviceName="js laptop (renamed)")
    user_id = "@jsalice:test.localhost"
    assert r["userId"] == user_id

    # Registration went through user-interactive auth with the dummy stage.
    reg = r["registration"]
    assert reg["user_id"] == user_id
    assert reg["has_access_token"] and reg["device_id"]
    assert {"stages": ["m.login.dummy"]} in reg["flows"]
    assert reg["attempts"][0] is None
    assert reg["attempts"][-1]["type"] == "m.login.dummy" and reg["attempts"][-1]["session"]

    # Both password logins (identifier form and legacy top-level "user") made new devices.
    device_id = r["login"]["device_id"]
    assert r["login"]["user_id"] == r["legacyLogin"]["user_id"] == user_id
    assert len({reg["device_id"], device_id, r["legacyLogin"]["device_id"]}) == 3
    assert r["wrongPassword"] == {"errcode": "M_FORBIDDEN", "httpStatus": 403,
                                  "message": r["wrongPassword"]["message"]}

    assert r["whoami"]["user_id"] == user_id
    assert r["whoami"]["device_id"] == device_id
    assert r["whoami"].get("is_guest", False) is False

    names = {d["device_id"]: d.get("display_name") for d in r["devices"]}
    assert names == {reg["device_id"]: "js reg device", device_id: "js laptop",
                     r["legacyLogin"]["device_id"]: None}
    assert r["renamed"]["device_id"] == device_id
    assert r["renamed"]["display_name"] == "js laptop (renamed)"
    renamed = {d["device_id"]: d.get("display_name") for d in r["devicesAfterRename"]}
    assert renamed == {**names, device_id: "js laptop (renamed)"}

    # Logout kills the token (seen by the SDK and by raw HTTP) and deletes the device only.
    assert r["logout"] == {}
    assert r["whoamiAfterLogout"]["errcode"] == "M_UNKNOWN_TOKEN"
    assert r["whoamiAfterLogout"]["httpStatus"] == 401
    status, body = server.request("GET", "/_matrix/client/v3/account/whoami",
                                  token=r["login"]["access_token"])
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    assert r["otherWhoami"]["device_id"] == r["legacyLogin"]["device_id"]
    assert {d["device_id"] for d in r["devicesAfterLogout"]} == set(names) - {device_id}
    status, body = server.request("GET", f"/_matrix/client/v3/devices/{device_id}",
                                  token=r["legacyLogin"]["access_token"])
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = server.request("GET", "/_matrix/client/v3/account/whoami",
                                  token=r["legacyLogin"]["access_token"])
    assert status == 200 and body["user_id"] == user_id


def test_chat_two_syncing_clients(server: ServerProcess) -> None:
    alice, bob = server.register("alice"), server.register("bob")
    r = run_js("chat", baseUrl=server.base_url, alice=_creds(alice), bob=_creds(bob),
               messages=3)

    assert r["joinedRoomId"] == r["roomId"]
    assert r["membership"] == {"bobSeesOwnMembership": "join", "aliceSeesBob": "join",
                               "bobSeesAlice": "join"}
    assert "@alice:test.localhost" in r["typingUsersSeenByBob"]

    # Bob's live timeline has alice's messages exactly once each, in sending order.
    sent = [(m["event_id"], m["body"]) for m in r["sent"]]
    assert [m["body"] for m in r["sent"]] == [f"message {i} from js-sdk" for i in (1, 2, 3)]
    live = [m for m in r["bobMessages"] if m["live"] and not m["removed"]]
    assert [(m["event_id"], m["body"]) for m in live] == sent
    assert all(m["sender"] == "@alice:test.localhost" for m in live)
    assert not [m for m in r["bobMessages"] if m["toStartOfTimeline"]]
    assert r["syncStates"] == {"alice": "SYNCING", "bob": "SYNCING"}


def test_pagination_scrollback_to_room_creation(server: ServerProcess) -> None:
    alice, bob = server.register("alice"), server.register("bob")
    r = run_js("pagination", baseUrl=server.base_url, alice=_creds(alice), bob=_creds(bob),
               messages=40, initialSyncLimit=5, pageSize=7)
    assert r["initialCount"] <= 10  # the initial sync did not hand over everything
    assert r["atStart"] and r["scrollbacks"] >= 3

    # The room's full history, straight from the server.
    status, history = server.request(
        "GET", f"/_matrix/client/v3/rooms/{quote(r['roomId'], safe='')}/messages?dir=b&limit=1000",
        token=alice["access_token"])
    assert status == 200, history
    full = [e["event_id"] for e in reversed(history["chunk"])]
    assert history["chunk"][-1]["type"] == "m.room.create"

    ids = [e["event_id"] for e in r["timeline"]]
    assert len(ids) == len(set(ids)), "duplicates in the scrolled-back timeline"
    assert r["timeline"][0]["type"] == "m.room.create"
    assert ids == full, "scrollback + sync differs from the room's history"
    assert ids[-1] == r["liveId"]
    messages = [e["event_id"] for e in r["timeline"] if e["type"] == "m.room.message"]
    assert messages == [*r["sent"], r["liveId"]]


def test_threads_and_edits_in_a_thread_aware_client(server: ServerProcess) -> None:
    alice, bob = server.register("alice"), server.register("bob")
    r = run_js("threads", baseUrl=server.base_url, alice=_creds(alice), bob=_creds(bob),
               replies=3)
    assert r["threadIds"] == [r["root"]]
    assert r["threadLength"] == 3  # the server's count
    assert r["latestReply"] == r["replies"][-1]
    assert r["threadReplies"] == r["replies"]
    # The edit came bundled on the root: the SDK shows the new content.
    assert r["rootReplacedBy"] == r["edit"]
    assert r["rootBody"] == "thread root, edited"


def test_search_room_events_pages_and_user_directory(server: ServerProcess) -> None:
    login = server.register("searcher")
    token = login["access_token"]
    mate = server.register("searchmate")
    status, room = server.request("POST", "/_matrix/client/v3/createRoom",
                                  {"preset": "private_chat", "invite": [mate["user_id"]]},
                                  token)
    assert status == 200, room
    room_id = room["room_id"]
    status, _ = server.request("POST", f"/_matrix/client/v3/join/{quote(room_id)}", {},
                               mate["access_token"])
    assert status == 200
    for i, body in enumerate(["filler", "pineapple one", "between", "pineapple two",
                              "pineapple three"]):
        status, _ = server.request(
            "PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/t{i}",
            {"msgtype": "m.text", "body": body}, token)
        assert status == 200
    r = run_js("search", baseUrl=server.base_url, term="pineapple", userTerm="searchmate",
               **_creds(login))
    # Newest first, two per page, the rest through next_batch: nothing repeated.
    bodies = [[hit["body"] for hit in page] for page in r["pages"]]
    assert bodies == [["pineapple three", "pineapple two"], ["pineapple one"]]
    assert r["count"] == 3
    assert "pineapple" in r["highlights"]
    # Each result came with its context (one event before it).
    assert r["pages"][0][1]["before"] == ["between"]
    # The user directory finds the room-mate (sharing a private room).
    assert r["users"] == [mate["user_id"]]
