"""Discovery and the smaller client endpoints over HTTP on both engines:
``.well-known`` documents, TURN credentials, OpenID tokens (and the federation
``/openid/userinfo`` that checks them), mutual rooms, ``/events/{eventId}``,
third-party lookups and the appservice-only endpoints on a server with no bridges."""

from __future__ import annotations

import base64
import hashlib
import hmac
import shutil
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.client import LoggedIn
from tests.support.server import ServerProcess, launch_server

V3 = "/_matrix/client/v3"
V1 = "/_matrix/client/v1"
SECRET = "turn-secret"

CONFIG: dict[str, Any] = {
    "serve_client_wellknown": True,
    "default_identity_server": "https://id.example.org",
    "extra_well_known_client_content": {
        "org.example.custom": {"x": 1},
        "m.homeserver": {"base_url": "https://evil.example.org"},
    },
    "support": {
        "contacts": [{"matrix_id": "@admin:test.localhost", "role": "m.role.admin"},
                     {"email_address": "security@example.org", "role": "m.role.security"}],
        "support_page": "https://example.org/help",
    },
    "turn_uris": ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"],
    "turn_shared_secret": SECRET,
    "turn_user_lifetime": "2h",
    "turn_allow_guests": False,
    "allow_guest_access": True,
}


def q(value: str) -> str:
    return quote(value, safe="")


class Client(LoggedIn):
    PREFIX = "extra"

    def v1(self, path: str, **params: str) -> tuple[int, Any]:
        query = "&".join(f"{k}={q(v)}" for k, v in params.items())
        return self.hs.request("GET", V1 + path + (f"?{query}" if query else ""),
                               token=self.token)

    def ok_v1(self, path: str, **params: str) -> Any:
        status, out = self.v1(path, **params)
        assert status == 200, (path, params, status, out)
        return out


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def configured(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    pg = request.getfixturevalue("postgres_server") if request.param == "postgres" else None
    proc = launch_server(request.param, pg, CONFIG)
    try:
        yield proc
    finally:
        proc.stop()
        shutil.rmtree(proc.workdir, ignore_errors=True)


# -- .well-known ---------------------------------------------------------------------
def test_client_wellknown(configured: ServerProcess, hs: ServerProcess) -> None:
    status, doc = configured.request("GET", "/.well-known/matrix/client")
    assert status == 200
    assert doc == {"m.homeserver": {"base_url": configured.base_url + "/"},
                   "m.identity_server": {"base_url": "https://id.example.org"},
                   "org.example.custom": {"x": 1}}
    # Not served unless configured (as in Synapse).
    status, out = hs.request("GET", "/.well-known/matrix/client")
    assert (status, out["errcode"]) == (404, "M_NOT_FOUND")


def test_support_and_policy_server_wellknown(configured: ServerProcess,
                                             hs: ServerProcess) -> None:
    status, doc = configured.request("GET", "/.well-known/matrix/support")
    assert status == 200
    assert doc == {"contacts": CONFIG["support"]["contacts"],
                   "support_page": "https://example.org/help"}
    status, out = hs.request("GET", "/.well-known/matrix/support")
    assert (status, out["errcode"]) == (404, "M_NOT_FOUND")
    for server in (configured, hs):
        status, out = server.request("GET", "/.well-known/matrix/policy_server")
        assert (status, out["errcode"]) == (404, "M_NOT_FOUND")


# -- TURN ------------------------------------------------------------------------------
def test_turn_server_ephemeral_credentials(configured: ServerProcess) -> None:
    alice = Client.new(configured)
    before = int(time.time())
    creds = alice.ok("GET", "/voip/turnServer")
    after = int(time.time())
    assert creds["uris"] == CONFIG["turn_uris"]
    assert creds["ttl"] == 7200
    expiry, _, user_id = creds["username"].partition(":")
    assert user_id == alice.user_id
    assert before + 7200 <= int(expiry) <= after + 7200
    # What a TURN server with use-auth-secret checks: base64(HMAC-SHA1(secret, username)).
    expected = base64.b64encode(hmac.new(SECRET.encode(), creds["username"].encode(),
                                         hashlib.sha1).digest()).decode()
    assert creds["password"] == expected
    # The legacy prefix too.
    status, out = configured.request("GET", "/_matrix/client/api/v1/voip/turnServer",
                                     token=alice.token)
    assert status == 200 and out["uris"] == CONFIG["turn_uris"]


def test_turn_server_auth_guests_and_unconfigured(configured: ServerProcess,
                                                  hs: ServerProcess) -> None:
    status, _ = configured.request("GET", V3 + "/voip/turnServer")
    assert status == 401
    status, guest = configured.request("POST", V3 + "/register?kind=guest", {})
    assert status == 200, guest
    status, out = configured.request("GET", V3 + "/voip/turnServer",
                                     token=guest["access_token"])
    assert (status, out["errcode"]) == (403, "M_FORBIDDEN")
    # No TURN configured: an empty object, as the spec says.
    assert Client.new(hs).ok("GET", "/voip/turnServer") == {}


# -- OpenID ------------------------------------------------------------------------------
def test_openid_token_checked_by_federation_userinfo(configured: ServerProcess) -> None:
    alice, bob = Client.new(configured), Client.new(configured)
    out = alice.ok("POST", f"/user/{q(alice.user_id)}/openid/request_token", {})
    assert out["token_type"] == "Bearer"
    assert out["matrix_server_name"] == configured.server_name
    assert out["expires_in"] == 3600
    token = out["access_token"]
    status, info = configured.request(
        "GET", f"/_matrix/federation/v1/openid/userinfo?access_token={q(token)}")
    assert (status, info) == (200, {"sub": alice.user_id})

    # The token is only good for userinfo: not as a client access token.
    status, out = configured.request("GET", V3 + "/account/whoami", token=token)
    assert status == 401
    # Unknown tokens and missing ones.
    status, out = configured.request(
        "GET", "/_matrix/federation/v1/openid/userinfo?access_token=nope")
    assert (status, out["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    status, out = configured.request("GET", "/_matrix/federation/v1/openid/userinfo")
    assert (status, out["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    # Only for oneself, and with a valid token.
    bob.err("POST", f"/user/{q(alice.user_id)}/openid/request_token", {}, status=403,
            errcode="M_FORBIDDEN")
    status, _ = configured.request(
        "POST", f"{V3}/user/{q(alice.user_id)}/openid/request_token", {})
    assert status == 401


# -- mutual rooms ---------------------------------------------------------------------
def test_mutual_rooms(configured: ServerProcess) -> None:
    alice, bob, carol = (Client.new(configured) for _ in range(3))
    shared = sorted(alice.room(preset="public_chat") for _ in range(3))
    for room in shared:
        bob.ok("POST", f"/join/{q(room)}", {})
    alice.room()  # alice alone
    left = alice.room(preset="public_chat")
    bob.ok("POST", f"/join/{q(left)}", {})
    bob.ok("POST", f"/rooms/{q(left)}/leave", {})

    out = alice.ok_v1("/mutual_rooms", user_id=bob.user_id)
    assert out == {"joined": shared, "count": 3}
    assert alice.ok_v1("/mutual_rooms", user_id=carol.user_id) == {"joined": [], "count": 0}
    assert alice.ok_v1("/mutual_rooms", user_id="@nobody:test.localhost") == {
        "joined": [], "count": 0}
    # The pagination token continues after the room it names.
    rest = alice.ok_v1("/mutual_rooms", user_id=bob.user_id, **{"from": shared[0]})
    assert rest["joined"] == shared[1:] and rest["count"] == 3
    # The path clients used before it was stable.
    status, out = configured.request(
        "GET", "/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms"
        f"?user_id={q(bob.user_id)}", token=alice.token)
    assert status == 200 and out["joined"] == shared

    for params in ({}, {"user_id": alice.user_id}, {"user_id": "bob"},
                   {"user_id": bob.user_id, "from": "garbage"}):
        status, out = alice.v1("/mutual_rooms", **params)
        assert (status, out["errcode"]) in ((400, "M_INVALID_PARAM"),
                                            (400, "M_MISSING_PARAM")), params
    status, _ = configured.request("GET", f"{V1}/mutual_rooms?user_id={q(bob.user_id)}")
    assert status == 401


# -- /events/{eventId} -----------------------------------------------------------------
def test_get_event_by_id(configured: ServerProcess) -> None:
    alice, eve = Client.new(configured), Client.new(configured)
    room = alice.room(preset="private_chat")
    event_id = alice.ok("PUT", f"/rooms/{q(room)}/send/m.room.message/t1",
                        {"msgtype": "m.text", "body": "hi"})["event_id"]
    event = alice.ok("GET", f"/events/{q(event_id)}")
    assert (event["event_id"], event["room_id"], event["content"]["body"]) == (
        event_id, room, "hi")
    same = alice.ok("GET", f"/rooms/{q(room)}/event/{q(event_id)}")
    assert {k: v for k, v in event.items() if k != "unsigned"} == {
        k: v for k, v in same.items() if k != "unsigned"}
    status, legacy = configured.request("GET", f"/_matrix/client/r0/events/{q(event_id)}",
                                        token=alice.token)
    assert status == 200 and legacy["event_id"] == event_id
    # Not a member, or no such event: the same 404.
    eve.err("GET", f"/events/{q(event_id)}", status=404, errcode="M_NOT_FOUND")
    eve.err("GET", f"/events/{q('$nosuch')}", status=404, errcode="M_NOT_FOUND")
    status, _ = configured.request("GET", f"{V3}/events/{q(event_id)}")
    assert status == 401


# -- third-party networks and application services ----------------------------------
def test_thirdparty_without_bridges(hs: ServerProcess) -> None:
    alice = Client.new(hs)
    assert alice.ok("GET", "/thirdparty/protocols") == {}
    for path in ("/thirdparty/protocol/irc", "/thirdparty/location/irc?channel=x",
                 "/thirdparty/user/irc?nick=x", "/thirdparty/location?alias=%23a:x",
                 "/thirdparty/user?userid=%40a:x"):
        alice.err("GET", path, status=404, errcode="M_NOT_FOUND")
    alice.err("GET", "/thirdparty/location", status=400, errcode="M_MISSING_PARAM")
    alice.err("GET", "/thirdparty/user", status=400, errcode="M_MISSING_PARAM")
    alice.err("GET", "/thirdparty/location?alias=nope", status=400, errcode="M_INVALID_PARAM")
    status, _ = hs.request("GET", V3 + "/thirdparty/protocols")
    assert status == 401


def test_appservice_only_endpoints_refuse_users(hs: ServerProcess) -> None:
    alice = Client.new(hs)
    room = alice.room(preset="public_chat")
    alice.err("PUT", f"/directory/list/appservice/irc/{q(room)}", {"visibility": "public"},
              status=403, errcode="M_FORBIDDEN")
    # ... and the room was not published anywhere.
    assert alice.ok("GET", f"/directory/list/room/{q(room)}")["visibility"] == "private"
    status, out = hs.request("POST", V1 + "/appservice/bridge/ping", {}, token=alice.token)
    assert (status, out["errcode"]) == (403, "M_FORBIDDEN")
    status, _ = hs.request("POST", V1 + "/appservice/bridge/ping", {})
    assert status == 401

