"""Every operation of the spec's client-server OpenAPI answers, and its answer
matches the schema the spec gives for that status.

One test per ``operationId`` of ``../shared/spec/openapi/client-server.json``:
the case below builds a realistic request (a logged-in user, a room with
members and messages, an uploaded file, a key backup…), sends it to a real
server over HTTP, and checks the status is one the spec documents for the
operation and the JSON body validates against that status's schema (JSON
Schema 2020-12, which OpenAPI 3.1 uses). An operation without a case fails:
a new spec operation must be answered and tested, not forgotten.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from jsonschema import Draft202012Validator

from tests.support.server import ServerProcess, http, launch_server

SPEC_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "spec",
                         "openapi", "client-server.json")


def _find_spec() -> str | None:
    for candidate in (SPEC_PATH, "/work/shared/spec/openapi/client-server.json"):
        if os.path.exists(candidate):
            return candidate
    return None


def _load_operations() -> dict[str, tuple[str, str, dict[str, Any]]]:
    path = _find_spec()
    if path is None:
        return {}
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    ops: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for route, methods in spec["paths"].items():
        for method, op in methods.items():
            if method in ("get", "put", "post", "delete"):
                ops[op["operationId"]] = (method.upper(), route.strip(), op)
    return ops


OPERATIONS = _load_operations()
_ids = itertools.count()


@dataclass
class Call:
    method: str
    path: str
    body: Any = None
    query: dict[str, Any] = field(default_factory=dict)
    token: str | None = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # The status the case expects (documented in the spec for the operation).
    status: int = 200
    # A non-JSON answer (media, redirects): only status and content type are checked.
    binary: bool = False
    # An optional feature this server does not offer (SSO without an identity
    # provider): the spec documents only the success, so expect M_UNRECOGNIZED.
    unsupported: bool = False
    # An error the spec requires without documenting its status (appservice-only
    # endpoints called by a user): only the Matrix error shape is checked.
    undocumented_error: bool = False


def q(value: str) -> str:
    return quote(value, safe="")


class World:
    """The users, rooms and files the cases act on, made on first use."""

    def __init__(self, hs: ServerProcess) -> None:
        self.hs = hs

    def user(self, prefix: str = "u", admin: bool = False) -> dict[str, Any]:
        login = self.hs.register(f"{prefix}{next(_ids)}", admin=admin)
        return login

    def call(self, method: str, path: str, body: Any = None, token: str | None = None,
             ) -> Any:
        status, out = self.hs.request(method, "/_matrix/client/v3" + path, body, token=token)
        assert status == 200, (method, path, status, out)
        return out

    @cached_property
    def alice(self) -> dict[str, Any]:
        return self.user("alice", admin=True)

    @cached_property
    def bob(self) -> dict[str, Any]:
        return self.user("bob")

    @property
    def a(self) -> str:
        return str(self.alice["access_token"])

    @property
    def b(self) -> str:
        return str(self.bob["access_token"])

    @cached_property
    def room(self) -> str:
        """A public room alice made, bob joined, with a message and an alias."""
        alias = f"room{next(_ids)}"
        room = self.call("POST", "/createRoom", {
            "preset": "public_chat", "name": "Conformance", "topic": "spec answers",
            "room_alias_name": alias, "visibility": "public"}, self.a)["room_id"]
        self.call("POST", f"/join/{q(room)}", {}, self.b)
        self.alias = f"#{alias}:{self.hs.server_name}"
        return str(room)

    @cached_property
    def event(self) -> str:
        out = self.call("PUT", f"/rooms/{q(self.room)}/send/m.room.message/{uuid.uuid4().hex}",
                        {"msgtype": "m.text", "body": "hello conformance"}, self.a)
        return str(out["event_id"])

    @cached_property
    def thread_reply(self) -> str:
        out = self.call("PUT", f"/rooms/{q(self.room)}/send/m.room.message/{uuid.uuid4().hex}",
                        {"msgtype": "m.text", "body": "in thread",
                         "m.relates_to": {"rel_type": "m.thread", "event_id": self.event}},
                        self.b)
        return str(out["event_id"])

    @cached_property
    def space(self) -> str:
        space = self.call("POST", "/createRoom", {
            "preset": "public_chat", "name": "Space",
            "creation_content": {"type": "m.space"}}, self.a)["room_id"]
        self.call("PUT", f"/rooms/{q(space)}/state/m.space.child/{q(self.room)}",
                  {"via": [self.hs.server_name], "suggested": True}, self.a)
        return str(space)

    @cached_property
    def media(self) -> str:
        status, out = http("POST", self.hs.url("/_matrix/media/v3/upload?filename=hello.png"),
                           raw=_PNG, token=self.a, headers={"Content-Type": "image/png"})
        assert status == 200, out
        return str(out["content_uri"])[len("mxc://"):]

    @cached_property
    def backup_version(self) -> str:
        out = self.call("POST", "/room_keys/version", {
            "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
            "auth_data": {"public_key": "abcdefg", "signatures": {}}}, self.a)
        return str(out["version"])

    @cached_property
    def filter_id(self) -> str:
        out = self.call("POST", f"/user/{q(self.alice['user_id'])}/filter",
                        {"room": {"timeline": {"limit": 5}}}, self.a)
        return str(out["filter_id"])

    @cached_property
    def uploaded_keys(self) -> None:
        self.call("POST", "/keys/upload", {
            "device_keys": {
                "user_id": self.alice["user_id"], "device_id": self.alice["device_id"],
                "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
                "keys": {f"curve25519:{self.alice['device_id']}": "curvekey",
                         f"ed25519:{self.alice['device_id']}": "edkey"},
                "signatures": {self.alice["user_id"]: {
                    f"ed25519:{self.alice['device_id']}": "sig"}}},
            "one_time_keys": {f"signed_curve25519:AAAA{next(_ids)}": {
                "key": "otk", "signatures": {self.alice["user_id"]: {
                    f"ed25519:{self.alice['device_id']}": "sig"}}}}}, self.a)

    def since(self, token: str) -> str:
        status, out = self.hs.request("GET", "/_matrix/client/v3/sync?timeout=0", token=token)
        assert status == 200, out
        return str(out["next_batch"])


# A 2x2 PNG: small enough to inline, a real image for thumbnails.
# A 2x2 red PNG that decodes (thumbnailing reads the pixels).
_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000002000000020802000000fdd49a73"
    "000000164944415478da63fccfc0c0c0c0c0c4c0c0c0c0c000000d1d0103681ed3de"
    "0000000049454e44ae426082")

CASES: dict[str, Callable[[World], Call]] = {}


def case(operation_id: str) -> Callable[[Callable[[World], Call]], Callable[[World], Call]]:
    def register(fn: Callable[[World], Call]) -> Callable[[World], Call]:
        assert operation_id not in CASES, operation_id
        CASES[operation_id] = fn
        return fn
    return register


C = "/_matrix/client"
V3 = C + "/v3"
V1 = C + "/v1"
M3 = "/_matrix/media/v3"


def simple(operation_id: str, method: str, path: str | Callable[[World], str], *,
           body: Any = None, auth: bool = True, status: int = 200,
           query: dict[str, Any] | None = None, binary: bool = False,
           unsupported: bool = False) -> None:
    """A case whose request needs only the world's standing objects."""
    def build(w: World) -> Call:
        resolved = path(w) if callable(path) else path
        return Call(method, resolved, body, dict(query or {}), w.a if auth else None,
                    status=status, binary=binary, unsupported=unsupported)
    case(operation_id)(build)


# -- discovery and server info ------------------------------------------------
simple("getWellknown", "GET", "/.well-known/matrix/client", auth=False)
simple("getWellknownPolicy", "GET", "/.well-known/matrix/policy_server", auth=False, status=404)
simple("getWellknownSupport", "GET", "/.well-known/matrix/support", auth=False, status=404)
simple("getVersions", "GET", C + "/versions", auth=False)
simple("getCapabilities", "GET", V3 + "/capabilities")
simple("getAuthMetadata", "GET", V1 + "/auth_metadata", auth=False, status=404)
simple("getTurnServer", "GET", V3 + "/voip/turnServer")
simple("getProtocols", "GET", V3 + "/thirdparty/protocols")
simple("getProtocolMetadata", "GET", V3 + "/thirdparty/protocol/irc", status=404)
simple("queryLocationByProtocol", "GET", V3 + "/thirdparty/location/irc", status=404)
simple("queryUserByProtocol", "GET", V3 + "/thirdparty/user/irc", status=404)
simple("queryLocationByAlias", "GET", V3 + "/thirdparty/location",
       query={"alias": "#irc_x:example.org"}, status=404)
simple("queryUserByID", "GET", V3 + "/thirdparty/user",
       query={"userid": "@irc_x:example.org"}, status=404)


# -- login, registration, tokens ------------------------------------------------
simple("getLoginFlows", "GET", V3 + "/login", auth=False)


@case("login")
def _login(w: World) -> Call:
    user = w.user()
    return Call("POST", V3 + "/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user",
                                                   "user": user["user_id"]},
        "password": "correct horse", "refresh_token": True})


@case("refresh")
def _refresh(w: World) -> Call:
    user = w.user()
    status, out = w.hs.request("POST", V3 + "/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user",
                                                   "user": user["user_id"]},
        "password": "correct horse", "refresh_token": True})
    assert status == 200 and "refresh_token" in out, out
    return Call("POST", V3 + "/refresh", {"refresh_token": out["refresh_token"]})


simple("redirectToSSO", "GET", V3 + "/login/sso/redirect",
       query={"redirectUrl": "https://client.example/"}, auth=False, status=404,
       unsupported=True)
simple("redirectToIdP", "GET", V3 + "/login/sso/redirect/oidc",
       query={"redirectUrl": "https://client.example/"}, auth=False, status=404,
       unsupported=True)


@case("generateLoginToken")
def _get_token(w: World) -> Call:
    # The server does not offer login tokens: the spec's answer for that.
    return Call("POST", V1 + "/login/get_token", {}, token=w.b, status=400)


@case("register")
def _register(w: World) -> Call:
    return Call("POST", V3 + "/register", {
        "username": f"reg{next(_ids)}", "password": "a long password",
        "auth": {"type": "m.login.dummy"}, "initial_device_display_name": "conformance"})


simple("checkUsernameAvailability", "GET", V3 + "/register/available",
       query={"username": "certainlyfree"}, auth=False)
simple("registrationTokenValidity", "GET", V1 + "/register/m.login.registration_token/validity",
       query={"token": "nope"}, auth=False)

_EMAIL = {"client_secret": "secret123", "email": "a@example.org", "send_attempt": 1}
_MSISDN = {"client_secret": "secret123", "country": "GB", "phone_number": "07700900001",
           "send_attempt": 1}
simple("requestTokenToRegisterEmail", "POST", V3 + "/register/email/requestToken",
       body=_EMAIL, auth=False, status=400)
simple("requestTokenToRegisterMSISDN", "POST", V3 + "/register/msisdn/requestToken",
       body=_MSISDN, auth=False, status=400)
simple("requestTokenToResetPasswordEmail", "POST", V3 + "/account/password/email/requestToken",
       body=_EMAIL, auth=False, status=400)
simple("requestTokenToResetPasswordMSISDN", "POST",
       V3 + "/account/password/msisdn/requestToken", body=_MSISDN, auth=False, status=400)
simple("requestTokenTo3PIDEmail", "POST", V3 + "/account/3pid/email/requestToken",
       body=_EMAIL, status=400)
simple("requestTokenTo3PIDMSISDN", "POST", V3 + "/account/3pid/msisdn/requestToken",
       body=_MSISDN, status=400)


@case("logout")
def _logout(w: World) -> Call:
    return Call("POST", V3 + "/logout", {}, token=w.user()["access_token"])


@case("logout_all")
def _logout_all(w: World) -> Call:
    return Call("POST", V3 + "/logout/all", {}, token=w.user()["access_token"])


# -- account ------------------------------------------------------------------
simple("getTokenOwner", "GET", V3 + "/account/whoami")
simple("getAccount3PIDs", "GET", V3 + "/account/3pid")


@case("post3PIDs")
def _post_3pids(w: World) -> Call:
    # No identity server or validated session: the spec's 403.
    return Call("POST", V3 + "/account/3pid", {"three_pid_creds": {
        "client_secret": "secret123", "sid": "nosuchsession", "id_server": "id.example.org"}},
        token=w.b, status=403)


@case("add3PID")
def _add_3pid(w: World) -> Call:
    user = w.user()
    return Call("POST", V3 + "/account/3pid/add", {
        "client_secret": "secret123", "sid": "nosuchsession",
        "auth": {"type": "m.login.password", "password": "correct horse",
                 "identifier": {"type": "m.id.user", "user": user["user_id"]}}},
        token=user["access_token"], status=401)


@case("bind3PID")
def _bind_3pid(w: World) -> Call:
    # No identity server is trusted: an error the spec does not list (it
    # documents only success and rate limiting for this proxying endpoint).
    return Call("POST", V3 + "/account/3pid/bind", {
        "client_secret": "secret123", "sid": "nosuchsession", "id_server": "id.example.org",
        "id_access_token": "abc"}, token=w.b, status=400, undocumented_error=True)


simple("delete3pidFromAccount", "POST", V3 + "/account/3pid/delete",
       body={"medium": "email", "address": "nobody@example.org"})
simple("unbind3pidFromAccount", "POST", V3 + "/account/3pid/unbind",
       body={"medium": "email", "address": "nobody@example.org"})


@case("changePassword")
def _change_password(w: World) -> Call:
    user = w.user()
    return Call("POST", V3 + "/account/password", {
        "new_password": "another horse", "logout_devices": False,
        "auth": {"type": "m.login.password", "password": "correct horse",
                 "identifier": {"type": "m.id.user", "user": user["user_id"]}}},
        token=user["access_token"])


@case("deactivateAccount")
def _deactivate(w: World) -> Call:
    user = w.user()
    return Call("POST", V3 + "/account/deactivate", {
        "auth": {"type": "m.login.password", "password": "correct horse",
                 "identifier": {"type": "m.id.user", "user": user["user_id"]}}},
        token=user["access_token"])


@case("getWhoIs")
def _whois(w: World) -> Call:
    return Call("GET", V3 + f"/admin/whois/{q(w.bob['user_id'])}", token=w.a)


@case("getAdminLockUser")
def _get_lock(w: World) -> Call:
    return Call("GET", V1 + f"/admin/lock/{q(w.bob['user_id'])}", token=w.a)


@case("setAdminLockUser")
def _set_lock(w: World) -> Call:
    return Call("PUT", V1 + f"/admin/lock/{q(w.user()['user_id'])}", {"locked": True},
                token=w.a)


@case("getAdminSuspendUser")
def _get_suspend(w: World) -> Call:
    return Call("GET", V1 + f"/admin/suspend/{q(w.bob['user_id'])}", token=w.a)


@case("setAdminSuspendUser")
def _set_suspend(w: World) -> Call:
    return Call("PUT", V1 + f"/admin/suspend/{q(w.user()['user_id'])}", {"suspended": True},
                token=w.a)


@case("pingAppservice")
def _ping(w: World) -> Call:
    return Call("POST", V1 + "/appservice/nosuchservice/ping", {}, token=w.a, status=403)


@case("updateAppserviceRoomDirectoryVisibility")
def _as_directory(w: World) -> Call:
    # Only an application service may list rooms in its network's directory.
    return Call("PUT", V3 + f"/directory/list/appservice/irc/{q(w.room)}",
                {"visibility": "public"}, token=w.a, status=403, undocumented_error=True)


# -- devices and keys ------------------------------------------------------------
simple("getDevices", "GET", V3 + "/devices")
simple("getDevice", "GET", lambda w: V3 + f"/devices/{q(w.alice['device_id'])}")
simple("updateDevice", "PUT", lambda w: V3 + f"/devices/{q(w.alice['device_id'])}",
       body={"display_name": "conformance device"})


@case("deleteDevice")
def _delete_device(w: World) -> Call:
    user = w.user()
    return Call("DELETE", V3 + f"/devices/{q(user['device_id'])}", {
        "auth": {"type": "m.login.password", "password": "correct horse",
                 "identifier": {"type": "m.id.user", "user": user["user_id"]}}},
        token=user["access_token"])


@case("deleteDevices")
def _delete_devices(w: World) -> Call:
    user = w.user()
    return Call("POST", V3 + "/delete_devices", {
        "devices": [user["device_id"]],
        "auth": {"type": "m.login.password", "password": "correct horse",
                 "identifier": {"type": "m.id.user", "user": user["user_id"]}}},
        token=user["access_token"])


@case("uploadKeys")
def _upload_keys(w: World) -> Call:
    user = w.user()
    return Call("POST", V3 + "/keys/upload", {"one_time_keys": {
        "signed_curve25519:AAAAHg": {"key": "zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs",
                                     "signatures": {user["user_id"]: {
                                         f"ed25519:{user['device_id']}": "sig"}}}}},
        token=user["access_token"])


@case("queryKeys")
def _query_keys(w: World) -> Call:
    _ = w.uploaded_keys
    return Call("POST", V3 + "/keys/query", {"device_keys": {w.alice["user_id"]: []}},
                token=w.b)


@case("claimKeys")
def _claim_keys(w: World) -> Call:
    _ = w.uploaded_keys
    return Call("POST", V3 + "/keys/claim", {"one_time_keys": {
        w.alice["user_id"]: {w.alice["device_id"]: "signed_curve25519"}}}, token=w.b)


@case("getKeysChanges")
def _keys_changes(w: World) -> Call:
    since = w.since(w.b)
    return Call("GET", V3 + "/keys/changes", query={"from": since, "to": since}, token=w.b)


@case("uploadCrossSigningKeys")
def _cross_signing(w: World) -> Call:
    user = w.user()
    uid = user["user_id"]
    return Call("POST", V3 + "/keys/device_signing/upload", {
        "master_key": {"user_id": uid, "usage": ["master"], "keys": {"ed25519:mk": "mk"}},
        "auth": {"type": "m.login.password", "password": "correct horse",
                 "identifier": {"type": "m.id.user", "user": uid}}},
        token=user["access_token"])


simple("uploadCrossSigningSignatures", "POST", V3 + "/keys/signatures/upload", body={})


# -- key backup ------------------------------------------------------------------
_SESSION = {"first_message_index": 1, "forwarded_count": 0, "is_verified": True,
            "session_data": {"ephemeral": "e", "ciphertext": "c", "mac": "m"}}


@case("postRoomKeysVersion")
def _backup_create(w: World) -> Call:
    # A user of its own: a new backup replaces the current one, and alice's
    # (w.backup_version) must stay current for the key cases.
    return Call("POST", V3 + "/room_keys/version", {
        "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
        "auth_data": {"public_key": "abcdefg", "signatures": {}}},
        token=w.user()["access_token"])


@case("getRoomKeysVersionCurrent")
def _backup_current(w: World) -> Call:
    _ = w.backup_version
    return Call("GET", V3 + "/room_keys/version", token=w.a)


simple("getRoomKeysVersion", "GET", lambda w: V3 + f"/room_keys/version/{w.backup_version}")
simple("putRoomKeysVersion", "PUT", lambda w: V3 + f"/room_keys/version/{w.backup_version}",
       body={"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
             "auth_data": {"public_key": "abcdefg", "signatures": {}}})


@case("deleteRoomKeysVersion")
def _backup_delete(w: World) -> Call:
    user = w.user()
    version = w.call("POST", "/room_keys/version", {
        "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
        "auth_data": {"public_key": "k"}}, user["access_token"])["version"]
    return Call("DELETE", V3 + f"/room_keys/version/{version}", token=user["access_token"])


def _keys_path(w: World, tail: str = "") -> str:
    return V3 + "/room_keys/keys" + tail


def _room_keys(operation_id: str, method: str, tail: Callable[[World], str],
               body: Callable[[World], Any] | None = None) -> None:
    def build(w: World) -> Call:
        return Call(method, _keys_path(w, tail(w)), body(w) if body else None,
                    {"version": w.backup_version}, token=w.a)
    case(operation_id)(build)


_room_keys("putRoomKeys", "PUT", lambda w: "",
           lambda w: {"rooms": {w.room: {"sessions": {"s1": _SESSION}}}})
_room_keys("getRoomKeys", "GET", lambda w: "")
_room_keys("deleteRoomKeys", "DELETE", lambda w: "")
_room_keys("putRoomKeysByRoomId", "PUT", lambda w: f"/{q(w.room)}",
           lambda w: {"sessions": {"s2": _SESSION}})
_room_keys("getRoomKeysByRoomId", "GET", lambda w: f"/{q(w.room)}")
_room_keys("deleteRoomKeysByRoomId", "DELETE", lambda w: f"/{q(w.room)}")
_room_keys("putRoomKeyBySessionId", "PUT", lambda w: f"/{q(w.room)}/s3", lambda w: _SESSION)


@case("getRoomKeyBySessionId")
def _get_session(w: World) -> Call:
    w.hs.request("PUT", _keys_path(w, f"/{q(w.room)}/s4") + f"?version={w.backup_version}",
                 _SESSION, token=w.a)
    return Call("GET", _keys_path(w, f"/{q(w.room)}/s4"), query={"version": w.backup_version},
                token=w.a)


_room_keys("deleteRoomKeyBySessionId", "DELETE", lambda w: f"/{q(w.room)}/s4")


# -- rooms ---------------------------------------------------------------------------
simple("createRoom", "POST", V3 + "/createRoom",
       body={"preset": "private_chat", "name": "made", "room_version": "11"})
simple("getJoinedRooms", "GET", V3 + "/joined_rooms")


@case("joinRoom")
def _join(w: World) -> Call:
    return Call("POST", V3 + f"/join/{q(w.room)}", {"reason": "conformance"},
                token=w.user()["access_token"])


@case("joinRoomById")
def _join_by_id(w: World) -> Call:
    return Call("POST", V3 + f"/rooms/{q(w.room)}/join", {}, token=w.user()["access_token"])


@case("knockRoom")
def _knock(w: World) -> Call:
    room = w.call("POST", "/createRoom", {"preset": "private_chat",
                                         "initial_state": [{"type": "m.room.join_rules",
                                                            "state_key": "",
                                                            "content": {"join_rule": "knock"}}]},
                  w.a)["room_id"]
    return Call("POST", V3 + f"/knock/{q(room)}", {"reason": "let me in"},
                token=w.user()["access_token"])


def _member_action(operation_id: str, action: str, prepare: str | None) -> None:
    def build(w: World) -> Call:
        target = w.user()
        if prepare == "join":
            w.call("POST", f"/join/{q(w.room)}", {}, target["access_token"])
        elif prepare == "ban":
            w.call("POST", f"/rooms/{q(w.room)}/ban", {"user_id": target["user_id"]}, w.a)
        return Call("POST", V3 + f"/rooms/{q(w.room)}/{action}",
                    {"user_id": target["user_id"], "reason": "conformance"}, token=w.a)
    case(operation_id)(build)


_member_action("inviteUser", "invite", None)
_member_action("kick", "kick", "join")
_member_action("ban", "ban", None)
_member_action("unban", "unban", "ban")


@case("inviteBy3PID")
def _invite_3pid(w: World) -> Call:
    # id.example.org cannot be reached: the spec's M_SERVER_NOT_TRUSTED, with a
    # status (400) this operation's responses do not list.
    return Call("POST", V3 + f"/rooms/{q(w.room)}/invite", {
        "id_server": "id.example.org", "id_access_token": "abc", "medium": "email",
        "address": "someone@example.org"}, token=w.a, status=400, undocumented_error=True)


@case("leaveRoom")
def _leave(w: World) -> Call:
    user = w.user()
    w.call("POST", f"/join/{q(w.room)}", {}, user["access_token"])
    return Call("POST", V3 + f"/rooms/{q(w.room)}/leave", {"reason": "bye"},
                token=user["access_token"])


@case("forgetRoom")
def _forget(w: World) -> Call:
    user = w.user()
    w.call("POST", f"/join/{q(w.room)}", {}, user["access_token"])
    w.call("POST", f"/rooms/{q(w.room)}/leave", {}, user["access_token"])
    return Call("POST", V3 + f"/rooms/{q(w.room)}/forget", {}, token=user["access_token"])


simple("getJoinedMembersByRoom", "GET", lambda w: V3 + f"/rooms/{q(w.room)}/joined_members")
simple("getMembersByRoom", "GET", lambda w: V3 + f"/rooms/{q(w.room)}/members")
simple("getRoomState", "GET", lambda w: V3 + f"/rooms/{q(w.room)}/state")
simple("getRoomStateWithKey", "GET", lambda w: V3 + f"/rooms/{q(w.room)}/state/m.room.name/")
simple("setRoomStateWithKey", "PUT", lambda w: V3 + f"/rooms/{q(w.room)}/state/m.room.topic/",
       body={"topic": "set by the conformance test"})
simple("getRoomEvents", "GET", lambda w: V3 + f"/rooms/{q(w.room)}/messages",
       query={"dir": "b", "limit": 5})
simple("getOneRoomEvent", "GET", lambda w: V3 + f"/rooms/{q(w.room)}/event/{q(w.event)}")
simple("getEventContext", "GET", lambda w: V3 + f"/rooms/{q(w.room)}/context/{q(w.event)}",
       query={"limit": 3})
simple("roomInitialSync", "GET", lambda w: V3 + f"/rooms/{q(w.room)}/initialSync")
simple("sendMessage", "PUT",
       lambda w: V3 + f"/rooms/{q(w.room)}/send/m.room.message/{uuid.uuid4().hex}",
       body={"msgtype": "m.text", "body": "sent"})


@case("redactEvent")
def _redact(w: World) -> Call:
    event = w.call("PUT", f"/rooms/{q(w.room)}/send/m.room.message/{uuid.uuid4().hex}",
                   {"msgtype": "m.text", "body": "regret"}, w.a)["event_id"]
    return Call("PUT", V3 + f"/rooms/{q(w.room)}/redact/{q(event)}/{uuid.uuid4().hex}",
                {"reason": "oops"}, token=w.a)


simple("setTyping", "PUT",
       lambda w: V3 + f"/rooms/{q(w.room)}/typing/{q(w.alice['user_id'])}",
       body={"typing": True, "timeout": 3000})
simple("postReceipt", "POST",
       lambda w: V3 + f"/rooms/{q(w.room)}/receipt/m.read/{q(w.event)}", body={})
@case("setReadMarker")
def _read_markers(w: World) -> Call:
    return Call("POST", V3 + f"/rooms/{q(w.room)}/read_markers",
                {"m.fully_read": w.event, "m.read": w.event}, token=w.a)


simple("getLocalAliases", "GET", lambda w: V3 + f"/rooms/{q(w.room)}/aliases")
simple("reportRoom", "POST", lambda w: V3 + f"/rooms/{q(w.room)}/report",
       body={"reason": "conformance"})
simple("reportEvent", "POST", lambda w: V3 + f"/rooms/{q(w.room)}/report/{q(w.event)}",
       body={"reason": "conformance", "score": -100})
simple("reportUser", "POST", lambda w: V3 + f"/users/{q(w.bob['user_id'])}/report",
       body={"reason": "conformance"})


@case("upgradeRoom")
def _upgrade(w: World) -> Call:
    room = w.call("POST", "/createRoom", {"preset": "private_chat", "name": "old"},
                  w.a)["room_id"]
    return Call("POST", V3 + f"/rooms/{q(room)}/upgrade", {"new_version": "11"}, token=w.a)


simple("getEventByTimestamp", "GET",
       lambda w: V1 + f"/rooms/{q(w.room)}/timestamp_to_event",
       query={"ts": 2_000_000_000_000, "dir": "b"})


# -- relations, threads, spaces, summaries -----------------------------------------
@case("getRelatingEvents")
def _relations(w: World) -> Call:
    _ = w.thread_reply
    return Call("GET", V1 + f"/rooms/{q(w.room)}/relations/{q(w.event)}", token=w.a)


@case("getRelatingEventsWithRelType")
def _relations_type(w: World) -> Call:
    _ = w.thread_reply
    return Call("GET", V1 + f"/rooms/{q(w.room)}/relations/{q(w.event)}/m.thread", token=w.a)


@case("getRelatingEventsWithRelTypeAndEventType")
def _relations_type_event(w: World) -> Call:
    _ = w.thread_reply
    return Call("GET", V1 + f"/rooms/{q(w.room)}/relations/{q(w.event)}/m.thread/m.room.message",
                query={"recurse": "true"}, token=w.a)


@case("getThreadRoots")
def _threads(w: World) -> Call:
    _ = w.thread_reply
    return Call("GET", V1 + f"/rooms/{q(w.room)}/threads", query={"include": "all"}, token=w.a)


simple("getSpaceHierarchy", "GET", lambda w: V1 + f"/rooms/{q(w.space)}/hierarchy")
simple("getRoomSummary", "GET", lambda w: V1 + f"/room_summary/{q(w.room)}")


# -- directory -------------------------------------------------------------------------
simple("getPublicRooms", "GET", V3 + "/publicRooms", query={"limit": 5}, auth=False)
simple("queryPublicRooms", "POST", V3 + "/publicRooms",
       body={"limit": 5, "filter": {"generic_search_term": "Conformance"}})
simple("getRoomVisibilityOnDirectory", "GET",
       lambda w: V3 + f"/directory/list/room/{q(w.room)}", auth=False)
simple("setRoomVisibilityOnDirectory", "PUT",
       lambda w: V3 + f"/directory/list/room/{q(w.room)}", body={"visibility": "public"})


@case("getRoomIdByAlias")
def _get_alias(w: World) -> Call:
    _ = w.room
    return Call("GET", V3 + f"/directory/room/{q(w.alias)}")


@case("setRoomAlias")
def _set_alias(w: World) -> Call:
    alias = f"#extra{next(_ids)}:{w.hs.server_name}"
    return Call("PUT", V3 + f"/directory/room/{q(alias)}", {"room_id": w.room}, token=w.a)


@case("deleteRoomAlias")
def _delete_alias(w: World) -> Call:
    alias = f"#gone{next(_ids)}:{w.hs.server_name}"
    w.call("PUT", f"/directory/room/{q(alias)}", {"room_id": w.room}, w.a)
    return Call("DELETE", V3 + f"/directory/room/{q(alias)}", token=w.a)


simple("searchUserDirectory", "POST", V3 + "/user_directory/search",
       body={"search_term": "bob", "limit": 5})
simple("search", "POST", V3 + "/search", body={"search_categories": {"room_events": {
    "search_term": "conformance", "order_by": "recent",
    "event_context": {"before_limit": 1, "after_limit": 1}}}})


@case("getMutualRooms")
def _mutual(w: World) -> Call:
    _ = w.room
    return Call("GET", V1 + "/mutual_rooms", query={"user_id": w.bob["user_id"]}, token=w.a)


# -- sync and legacy events --------------------------------------------------------------
simple("sync", "GET", V3 + "/sync", query={"timeout": 0})


@case("getEvents")
def _events(w: World) -> Call:
    return Call("GET", V3 + "/events", query={"timeout": 0, "from": w.since(w.a)}, token=w.a)


@case("peekEvents")
def _peek(w: World) -> Call:
    return Call("GET", V3 + "/events", query={"timeout": 0, "room_id": w.room}, token=w.a)


simple("getOneEvent", "GET", lambda w: V3 + f"/events/{q(w.event)}")
simple("initialSync", "GET", V3 + "/initialSync", query={"limit": 2})


# -- profile, presence, account data, tags, filters ---------------------------------
simple("getUserProfile", "GET", lambda w: V3 + f"/profile/{q(w.alice['user_id'])}")
@case("getProfileField")
def _profile_field(w: World) -> Call:
    w.call("PUT", f"/profile/{q(w.alice['user_id'])}/displayname", {"displayname": "Alice"},
           w.a)
    return Call("GET", V3 + f"/profile/{q(w.alice['user_id'])}/displayname", token=w.a)


simple("setProfileField", "PUT", lambda w: V3 + f"/profile/{q(w.alice['user_id'])}/displayname",
       body={"displayname": "Alice"})


@case("deleteProfileField")
def _delete_profile(w: World) -> Call:
    user = w.user()
    w.call("PUT", f"/profile/{q(user['user_id'])}/m.tz", {"m.tz": "Europe/London"},
           user["access_token"])
    return Call("DELETE", V3 + f"/profile/{q(user['user_id'])}/m.tz",
                token=user["access_token"])


simple("getPresence", "GET", lambda w: V3 + f"/presence/{q(w.alice['user_id'])}/status")
simple("setPresence", "PUT", lambda w: V3 + f"/presence/{q(w.alice['user_id'])}/status",
       body={"presence": "online", "status_msg": "checking the spec"})


def _account_data_path(w: World, room: bool) -> str:
    base = f"/user/{q(w.alice['user_id'])}"
    if room:
        base += f"/rooms/{q(w.room)}"
    return V3 + base + "/account_data/org.example.conformance"


simple("setAccountData", "PUT", lambda w: _account_data_path(w, False), body={"x": 1})
simple("setAccountDataPerRoom", "PUT", lambda w: _account_data_path(w, True), body={"x": 1})


@case("getAccountData")
def _get_account_data(w: World) -> Call:
    w.hs.request("PUT", _account_data_path(w, False), {"x": 1}, token=w.a)
    return Call("GET", _account_data_path(w, False), token=w.a)


@case("getAccountDataPerRoom")
def _get_room_account_data(w: World) -> Call:
    w.hs.request("PUT", _account_data_path(w, True), {"x": 1}, token=w.a)
    return Call("GET", _account_data_path(w, True), token=w.a)


def _tags_path(w: World, tag: str = "") -> str:
    return V3 + f"/user/{q(w.alice['user_id'])}/rooms/{q(w.room)}/tags" + tag


simple("setRoomTag", "PUT", lambda w: _tags_path(w, "/u.work"), body={"order": 0.5})
simple("getRoomTags", "GET", lambda w: _tags_path(w))
simple("deleteRoomTag", "DELETE", lambda w: _tags_path(w, "/u.work"))
simple("defineFilter", "POST", lambda w: V3 + f"/user/{q(w.alice['user_id'])}/filter",
       body={"room": {"timeline": {"limit": 10}}})
simple("getFilter", "GET",
       lambda w: V3 + f"/user/{q(w.alice['user_id'])}/filter/{w.filter_id}")
simple("requestOpenIdToken", "POST",
       lambda w: V3 + f"/user/{q(w.alice['user_id'])}/openid/request_token", body={})
simple("sendToDevice", "PUT", lambda w: V3 + f"/sendToDevice/m.test/{uuid.uuid4().hex}",
       body={"messages": {}})

# -- push -----------------------------------------------------------------------------
simple("getPushRules", "GET", V3 + "/pushrules/")
simple("getPushRulesGlobal", "GET", V3 + "/pushrules/global/")
simple("getPushRule", "GET", V3 + "/pushrules/global/override/.m.rule.master")
simple("getPushRuleActions", "GET", V3 + "/pushrules/global/override/.m.rule.master/actions")
simple("isPushRuleEnabled", "GET", V3 + "/pushrules/global/override/.m.rule.master/enabled")
simple("setPushRuleEnabled", "PUT",
       V3 + "/pushrules/global/override/.m.rule.suppress_notices/enabled",
       body={"enabled": True})
simple("setPushRuleActions", "PUT",
       V3 + "/pushrules/global/override/.m.rule.suppress_notices/actions",
       body={"actions": []})
simple("setPushRule", "PUT", V3 + "/pushrules/global/content/conformance",
       body={"pattern": "conformance", "actions": ["notify"]})


@case("deletePushRule")
def _delete_push_rule(w: World) -> Call:
    w.hs.request("PUT", V3 + "/pushrules/global/room/" + q(w.room),
                 {"actions": ["notify"]}, token=w.a)
    return Call("DELETE", V3 + "/pushrules/global/room/" + q(w.room), token=w.a)


simple("getNotifications", "GET", V3 + "/notifications", query={"limit": 5})
simple("getPushers", "GET", V3 + "/pushers")
simple("postPusher", "POST", V3 + "/pushers/set", body={
    "kind": "http", "app_id": "org.example.app", "pushkey": "key1",
    "app_display_name": "App", "device_display_name": "Phone", "lang": "en",
    "data": {"url": "https://push.example.org/_matrix/push/v1/notify"}})

# -- media -------------------------------------------------------------------------------
simple("getConfigAuthed", "GET", V1 + "/media/config")
simple("getConfig", "GET", M3 + "/config")
simple("getContentAuthed", "GET", lambda w: V1 + f"/media/download/{w.media}", binary=True)
simple("getContentOverrideNameAuthed", "GET",
       lambda w: V1 + f"/media/download/{w.media}/other.png", binary=True)
simple("getContentThumbnailAuthed", "GET", lambda w: V1 + f"/media/thumbnail/{w.media}",
       query={"width": 32, "height": 32, "method": "scale"}, binary=True)
simple("getContent", "GET", lambda w: M3 + f"/download/{w.media}", auth=False, binary=True)
simple("getContentOverrideName", "GET", lambda w: M3 + f"/download/{w.media}/other.png",
       auth=False, binary=True)
simple("getContentThumbnail", "GET", lambda w: M3 + f"/thumbnail/{w.media}",
       query={"width": 32, "height": 32, "method": "crop"}, auth=False, binary=True)


@case("getUrlPreviewAuthed")
def _preview_authed(w: World) -> Call:
    return Call("GET", V1 + "/media/preview_url",
                query={"url": w.hs.url("/_matrix/client/versions")}, token=w.a)


@case("getUrlPreview")
def _preview(w: World) -> Call:
    return Call("GET", M3 + "/preview_url",
                query={"url": w.hs.url("/_matrix/client/versions")}, token=w.a)


@case("uploadContent")
def _upload(w: World) -> Call:
    return Call("POST", M3 + "/upload", query={"filename": "x.png"}, token=w.a, raw=_PNG,
                headers={"Content-Type": "image/png"})


simple("createContent", "POST", "/_matrix/media/v1/create", body=None)


@case("uploadContentToMXC")
def _upload_to_mxc(w: World) -> Call:
    status, out = w.hs.request("POST", "/_matrix/media/v1/create", token=w.a)
    assert status == 200, out
    server_media = str(out["content_uri"])[len("mxc://"):]
    return Call("PUT", M3 + f"/upload/{server_media}", token=w.a, raw=_PNG,
                headers={"Content-Type": "image/png"})


# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    server = launch_server("sqlite", None, {
        "allow_guest_access": True,
        "url_preview_enabled": True,
        "url_preview_ip_range_whitelist": ["127.0.0.0/8"],
        # The legacy unauthenticated downloads are operations too: do not
        # freeze them (the spec lets a frozen server answer 404).
        "enable_authenticated_media": False,
        # Off by default (as in Synapse): without them these answer 404 and {}.
        "serve_client_wellknown": True,
        "turn_uris": ["turn:turn.example.org:3478?transport=udp"],
        "turn_shared_secret": "conformance",
    })
    try:
        yield World(server)
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


# Known, deliberate deviations: a device's unknown fields, and a joined
# member's missing name or avatar, are sent as null (as Synapse does) because
# clients require the keys (matrix-nio's device schema; sytest's
# joined_members test); the spec types them as optional strings. Everything
# else is checked.
NULL_DEVICE_FIELDS = {"getDevices", "getDevice", "getJoinedMembersByRoom"}
_NULLABLE = ("display_name", "last_seen_ip", "last_seen_ts", "avatar_url")


def _drop_device_nulls(body: Any) -> Any:
    def clean(entry: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in entry.items() if not (v is None and k in _NULLABLE)}
    if isinstance(body, dict) and isinstance(body.get("devices"), list):
        return {**body, "devices": [clean(d) for d in body["devices"]]}
    if isinstance(body, dict) and isinstance(body.get("joined"), dict):
        return {**body, "joined": {u: clean(m) for u, m in body["joined"].items()}}
    return clean(body) if isinstance(body, dict) else body


def _schema_for(op: dict[str, Any], status: int) -> dict[str, Any] | None:
    response = op["responses"].get(str(status))
    assert response is not None, f"status {status} is not documented for this operation"
    content = response.get("content", {})
    json_content = content.get("application/json")
    return json_content.get("schema") if json_content else None


@pytest.mark.skipif(not OPERATIONS, reason="the spec's OpenAPI file is not next to the repo")
@pytest.mark.parametrize("operation_id", sorted(OPERATIONS))
def test_operation_answers_per_schema(world: World, operation_id: str) -> None:
    method, _route, op = OPERATIONS[operation_id]
    build = CASES.get(operation_id)
    assert build is not None, f"no conformance case for {operation_id}"
    call = build(world)
    assert call.method == method, (call.method, method)
    url = world.hs.url(call.path) + ("?" + urlencode(call.query) if call.query else "")
    status, body = http(call.method, url, call.body, call.token, raw=call.raw,
                        headers=call.headers or None)
    assert status == call.status, (operation_id, status, body)
    if call.unsupported:
        assert isinstance(body, dict) and body.get("errcode") == "M_UNRECOGNIZED", body
        return
    if call.binary:
        assert not isinstance(body, dict) or "errcode" not in body, body
        return
    if call.undocumented_error:
        assert isinstance(body, dict) and isinstance(body.get("errcode"), str), body
        return
    schema = _schema_for(op, status)
    if schema is None:
        return
    if operation_id in NULL_DEVICE_FIELDS:
        body = _drop_device_nulls(body)
    errors = sorted(Draft202012Validator(schema).iter_errors(body), key=str)
    assert not errors, (operation_id, [f"{list(e.absolute_path)}: {e.message}"
                                       for e in errors[:5]], body)


def test_every_operation_has_a_case() -> None:
    assert set(CASES) - set(OPERATIONS) == set(), "cases for operations the spec does not have"
