"""Guests, refresh tokens, 3PIDs, registration tokens, account lock/suspend/whois,
and the UIA and registration fixes — over HTTP against real servers.

Two servers per engine serve the module: ``hs`` (the default test config)
and ``open_hs`` (guest access on, registration tokens required, refreshable
access tokens that live 1.5 s). Rows that only an admin API (not built yet)
would write — threepids, registration tokens — are put straight into the
server's database.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import yaml

from tests.api.rooms_support import Api, User, q
from tests.support.server import ServerProcess, launch_server

V3 = "/_matrix/client/v3"
V1 = "/_matrix/client/v1"
PASSWORD = "correct horse"
_ids = itertools.count()


def fresh(prefix: str = "au") -> str:
    return f"{prefix}{next(_ids)}"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def open_hs(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    pg = request.getfixturevalue("postgres_server") if request.param == "postgres" else None
    proc = launch_server(request.param, pg, {
        "allow_guest_access": True, "registration_requires_token": True,
        "refreshable_access_token_lifetime": 1500})
    try:
        yield proc
    finally:
        proc.stop()
        shutil.rmtree(proc.workdir, ignore_errors=True)


def db_execute(server: ServerProcess, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement (``$n`` placeholders) on the server's own database."""
    with open(server.config_path, encoding="utf-8") as f:
        database = yaml.safe_load(f)["database"]
    if database["name"] == "sqlite3":
        conn = sqlite3.connect(database["args"]["database"], timeout=30)
        try:
            rows = conn.execute(re.sub(r"\$\d+", "?", sql), args).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()

    async def run(a: dict[str, Any]) -> list[tuple[Any, ...]]:
        import asyncpg

        conn = await asyncpg.connect(user=a["user"], host=a["host"], port=a["port"],
                                     database=a["database"])
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run(database["args"])).result()


def password_auth(user: str, session: str | None, password: str = PASSWORD) -> dict[str, Any]:
    auth: dict[str, Any] = {"type": "m.login.password", "password": password,
                            "identifier": {"type": "m.id.user", "user": user}}
    if session:
        auth["session"] = session
    return auth


def login(hs: ServerProcess, user: str, **extra: Any) -> tuple[int, Any]:
    return hs.request("POST", f"{V3}/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
        "password": PASSWORD, **extra})


# -- 7. fixes ------------------------------------------------------------------

@pytest.mark.parametrize("username", ["bad\nname", "name\n", "tab\tname", "sp ace", "ümlaut",
                                      "x" * 250])
def test_username_outside_the_grammar_is_refused(hs: ServerProcess, username: str) -> None:
    status, body = hs.request("GET", f"{V3}/register/available?username="
                              + q(username))
    assert status == 400 and body["errcode"] == "M_INVALID_USERNAME", body
    status, body = hs.request("POST", f"{V3}/register", {
        "username": username, "password": PASSWORD, "auth": {"type": "m.login.dummy"}})
    assert status == 400 and body["errcode"] == "M_INVALID_USERNAME", body
    stripped = username.strip()
    if stripped != username and re.fullmatch(r"[a-z0-9._=/+-]+", stripped):
        # Nothing was registered under the name without its newline either.
        assert hs.request("GET", f"{V3}/register/available?username={stripped}")[0] == 200


def test_uia_for_another_user_is_forbidden_and_deletes_nothing(hs: ServerProcess) -> None:
    victim, attacker = fresh("victim"), fresh("attacker")
    hs.register(victim)
    login_ = hs.register(attacker)
    token, device = login_["access_token"], login_["device_id"]
    status, body = hs.request("DELETE", f"{V3}/devices/{device}", {}, token=token)
    assert status == 401
    status, body = hs.request("DELETE", f"{V3}/devices/{device}",
                              {"auth": password_auth(victim, body["session"])}, token=token)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN", body
    status, body = hs.request("POST", f"{V3}/delete_devices", {
        "devices": [device], "auth": password_auth(victim, None)}, token=token)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN", body
    assert hs.request("GET", f"{V3}/devices/{device}", token=token)[0] == 200


def test_uia_session_is_pinned_to_its_request(hs: ServerProcess) -> None:
    name = fresh()
    first = hs.register(name)
    second = login(hs, name)[1]
    token = first["access_token"]
    status, body = hs.request("POST", f"{V3}/delete_devices",
                              {"devices": [second["device_id"]]}, token=token)
    assert status == 401
    session = body["session"]
    # The same session, now asked to delete a different device: refused.
    status, body = hs.request("POST", f"{V3}/delete_devices", {
        "devices": [first["device_id"]], "auth": password_auth(name, session)}, token=token)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN", body
    devices = {d["device_id"] for d in
               hs.request("GET", f"{V3}/devices", token=token)[1]["devices"]}
    assert devices == {first["device_id"], second["device_id"]}
    # ... and on another endpoint.
    status, body = hs.request("POST", f"{V3}/account/password", {
        "new_password": "other", "auth": password_auth(name, session)}, token=token)
    assert status == 403, body
    assert login(hs, name)[0] == 200
    # The request it started with still completes.
    status, body = hs.request("POST", f"{V3}/delete_devices", {
        "devices": [second["device_id"]], "auth": password_auth(name, session)}, token=token)
    assert status == 200, body


def test_registration_remembers_parameters(hs: ServerProcess) -> None:
    name = fresh("rem")
    status, body = hs.request("POST", f"{V3}/register", {
        "username": name, "password": PASSWORD, "device_id": "XYZZY",
        "initial_device_display_name": "my phone"})
    assert status == 401
    status, body = hs.request("POST", f"{V3}/register", {
        "auth": {"type": "m.login.dummy", "session": body["session"]}})
    assert status == 200, body
    assert body["user_id"] == f"@{name}:{hs.server_name}"
    assert body["device_id"] == "XYZZY"
    status, device = hs.request("GET", f"{V3}/devices/XYZZY", token=body["access_token"])
    assert status == 200 and device["display_name"] == "my phone"
    assert login(hs, name)[0] == 200  # the remembered password


def test_registration_remembers_inhibit_login(hs: ServerProcess) -> None:
    status, body = hs.request("POST", f"{V3}/register", {
        "username": fresh("inh"), "password": PASSWORD, "inhibit_login": True})
    status, body = hs.request("POST", f"{V3}/register", {
        "auth": {"type": "m.login.dummy", "session": body["session"]}})
    assert status == 200 and "access_token" not in body, body


@pytest.mark.parametrize("with_username", [True, False])
def test_registration_is_idempotent(hs: ServerProcess, with_username: bool) -> None:
    request: dict[str, Any] = {"password": PASSWORD}
    if with_username:
        request["username"] = fresh("idem")
    status, body = hs.request("POST", f"{V3}/register", request)
    assert status == 401
    request["auth"] = {"type": "m.login.dummy", "session": body["session"]}
    status, first = hs.request("POST", f"{V3}/register", request)
    assert status == 200, first
    status, again = hs.request("POST", f"{V3}/register", request)
    assert status == 200, again
    assert again["user_id"] == first["user_id"]
    assert hs.request("GET", f"{V3}/account/whoami", token=again["access_token"])[1][
        "user_id"] == first["user_id"]


def test_registration_with_a_changed_body_is_refused(hs: ServerProcess) -> None:
    name, other = fresh("chg"), fresh("chg")
    status, body = hs.request("POST", f"{V3}/register", {"username": name,
                                                         "password": PASSWORD})
    status, body = hs.request("POST", f"{V3}/register", {
        "username": other, "password": PASSWORD,
        "auth": {"type": "m.login.dummy", "session": body["session"]}})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN", body
    for localpart in (name, other):
        assert hs.request("GET", f"{V3}/register/available?username={localpart}")[0] == 200


# -- 2. refresh tokens -------------------------------------------------------------

def test_tokens_do_not_expire_unless_refreshable(hs: ServerProcess) -> None:
    name = fresh()
    hs.register(name)
    status, body = login(hs, name)
    assert status == 200
    assert "refresh_token" not in body and "expires_in_ms" not in body


def test_refresh_rotates_tokens(open_hs: ServerProcess) -> None:
    hs = open_hs
    name = fresh("ref")
    hs.register(name)
    status, first = login(hs, name, refresh_token=True)
    assert status == 200, first
    assert first["refresh_token"] and first["expires_in_ms"] == 1500
    status, second = hs.request("POST", f"{V3}/refresh",
                                {"refresh_token": first["refresh_token"]})
    assert status == 200, second
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    # The old access token is gone at once.
    status, body = hs.request("GET", f"{V3}/account/whoami", token=first["access_token"])
    assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN"
    # The old refresh token still works until the new pair is used (a lost answer).
    status, retry = hs.request("POST", f"{V3}/refresh",
                               {"refresh_token": first["refresh_token"]})
    assert status == 200, retry
    status, body = hs.request("GET", f"{V3}/account/whoami", token=retry["access_token"])
    assert status == 200 and body["user_id"] == f"@{name}:{hs.server_name}"
    assert body["device_id"] == first["device_id"]
    # Using the new access token revoked the refresh token before it.
    status, body = hs.request("POST", f"{V3}/refresh",
                              {"refresh_token": first["refresh_token"]})
    assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN", body


@pytest.mark.parametrize("token", ["syr_bogus", "syt_abc_def_ghi", "nonsense"])
def test_refresh_with_a_bad_token(open_hs: ServerProcess, token: str) -> None:
    status, body = open_hs.request("POST", f"{V3}/refresh", {"refresh_token": token})
    assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN", body


def test_expired_access_token_is_a_soft_logout(open_hs: ServerProcess) -> None:
    name = fresh("exp")
    open_hs.register(name)
    _, session = login(open_hs, name, refresh_token=True)
    assert open_hs.request("GET", f"{V3}/account/whoami",
                           token=session["access_token"])[0] == 200
    time.sleep(2.0)  # past the 1.5 s lifetime
    status, body = open_hs.request("GET", f"{V3}/account/whoami",
                                   token=session["access_token"])
    assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN" and body["soft_logout"]
    status, renewed = open_hs.request("POST", f"{V3}/refresh",
                                      {"refresh_token": session["refresh_token"]})
    assert status == 200
    assert open_hs.request("GET", f"{V3}/account/whoami",
                           token=renewed["access_token"])[0] == 200


# -- 3. not offered ---------------------------------------------------------------

def test_endpoints_not_offered(hs: ServerProcess) -> None:
    token = hs.register(fresh())["access_token"]
    status, body = hs.request("POST", f"{V1}/login/get_token", {}, token=token)
    assert status == 400 and "login_token" not in body, body
    for method, path, tok in (("GET", f"{V1}/auth_metadata", None),
                              ("GET", f"{V3}/login/sso/redirect?redirectUrl=http://x", None),
                              ("GET", f"{V3}/login/sso/redirect/idp1?redirectUrl=http://x",
                               None)):
        status, body = hs.request(method, path, {} if method == "POST" else None, token=tok)
        assert status == 404 and body["errcode"] == "M_UNRECOGNIZED", (path, body)
    flows = hs.request("GET", f"{V3}/login")[1]["flows"]
    assert all(f["type"] not in ("m.login.sso", "m.login.token") for f in flows)


# -- 4. 3PIDs --------------------------------------------------------------------

def test_threepids_list_login_and_delete(hs: ServerProcess) -> None:
    name = fresh("tp")
    login_ = hs.register(name)
    token, user_id = login_["access_token"], login_["user_id"]
    db_execute(hs, "INSERT INTO user_threepids (medium, address, user_id, validated_at,"
                   " added_at) VALUES ($1, $2, $3, $4, $5)",
               "email", f"{name}@example.org", user_id, 1000, 2000)
    status, body = hs.request("GET", f"{V3}/account/3pid", token=token)
    assert body == {"threepids": [{"medium": "email", "address": f"{name}@example.org",
                                   "validated_at": 1000, "added_at": 2000}]}
    status, body = hs.request("POST", f"{V3}/login", {
        "type": "m.login.password", "password": PASSWORD,
        "identifier": {"type": "m.id.thirdparty", "medium": "email",
                       "address": f"{name.upper()}@example.org"}})
    assert status == 200 and body["user_id"] == user_id, body
    status, body = hs.request("POST", f"{V3}/login", {
        "type": "m.login.password", "password": PASSWORD, "medium": "email",
        "address": f"{name}@example.org"})
    assert status == 200 and body["user_id"] == user_id, body
    status, body = hs.request("POST", f"{V3}/login", {
        "type": "m.login.password", "password": PASSWORD,
        "identifier": {"type": "m.id.thirdparty", "medium": "email",
                       "address": "nobody@example.org"}})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = hs.request("POST", f"{V3}/account/3pid/unbind", {
        "medium": "email", "address": f"{name}@example.org"}, token=token)
    assert body == {"id_server_unbind_result": "no-support"}
    assert hs.request("GET", f"{V3}/account/3pid", token=token)[1]["threepids"]
    status, body = hs.request("POST", f"{V3}/account/3pid/delete", {
        "medium": "email", "address": f"{name}@example.org"}, token=token)
    assert (status, body) == (200, {"id_server_unbind_result": "no-support"})
    assert hs.request("GET", f"{V3}/account/3pid", token=token)[1] == {"threepids": []}


@pytest.mark.parametrize("prefix", ["/register", "/account/3pid", "/account/password"])
@pytest.mark.parametrize("medium", ["email", "msisdn"])
def test_request_token_without_a_sender(hs: ServerProcess, prefix: str, medium: str) -> None:
    body: dict[str, Any] = {"client_secret": "secret", "send_attempt": 1}
    if medium == "email":
        body["email"] = "someone@example.org"
    else:
        body.update(country="GB", phone_number="07700900000")
    status, answer = hs.request("POST", f"{V3}{prefix}/{medium}/requestToken", body)
    if prefix == "/account/password":
        assert status == 400 and answer["errcode"] == "M_THREEPID_NOT_FOUND", answer
    else:
        assert status == 400 and answer["errcode"] == "M_THREEPID_MEDIUM_NOT_SUPPORTED", answer
    status, answer = hs.request("POST", f"{V3}{prefix}/{medium}/requestToken",
                                {"send_attempt": 1})
    assert status == 400 and answer["errcode"] == "M_MISSING_PARAM"


def test_adding_a_threepid_needs_a_validated_session(hs: ServerProcess) -> None:
    name = fresh("add")
    token = hs.register(name)["access_token"]
    request = {"sid": "nope", "client_secret": "secret"}
    status, body = hs.request("POST", f"{V3}/account/3pid/add", request, token=token)
    assert status == 401
    status, body = hs.request("POST", f"{V3}/account/3pid/add", {
        **request, "auth": password_auth(name, body["session"])}, token=token)
    # Password proven, address not: still the 401 of UIA, saying what failed.
    assert status == 401 and body["errcode"] == "M_THREEPID_AUTH_FAILED", body
    assert body["completed"] == ["m.login.password"] and body["session"]
    status, body = hs.request("POST", f"{V3}/account/3pid", {"three_pid_creds": request},
                              token=token)
    assert status == 403 and body["errcode"] == "M_THREEPID_AUTH_FAILED", body
    status, body = hs.request("POST", f"{V3}/account/3pid/bind", {
        **request, "id_server": "id.example.org", "id_access_token": "x"}, token=token)
    assert status == 400 and body["errcode"] == "M_SERVER_NOT_TRUSTED"
    assert hs.request("GET", f"{V3}/account/3pid", token=token)[1] == {"threepids": []}


# -- 5. account administration ------------------------------------------------------

def test_whois(hs: ServerProcess) -> None:
    admin = hs.register(fresh("admin"), admin=True)
    name = fresh("who")
    user = hs.register(name)
    hs.request("GET", f"{V3}/account/whoami", token=user["access_token"],
               headers={"User-Agent": "whois-test/1.0"})
    for token in (admin["access_token"], user["access_token"]):
        # The last-seen write happens beside the request: wait for it to land.
        for _ in range(50):
            status, body = hs.request("GET", f"{V3}/admin/whois/{q(user['user_id'])}",
                                      token=token)
            assert status == 200, body
            if body["devices"][user["device_id"]]["sessions"][0]["connections"]:
                break
            time.sleep(0.1)
        assert body["user_id"] == user["user_id"]
        connections = body["devices"][user["device_id"]]["sessions"][0]["connections"]
        assert connections and connections[0]["ip"] == "127.0.0.1"
        assert isinstance(connections[0]["last_seen"], int)
    other = hs.register(fresh("nosy"))
    status, body = hs.request("GET", f"{V3}/admin/whois/{q(user['user_id'])}",
                              token=other["access_token"])
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


def test_lock(hs: ServerProcess) -> None:
    admin = hs.register(fresh("admin"), admin=True)["access_token"]
    user = hs.register(fresh("lock"))
    path = f"{V1}/admin/lock/{q(user['user_id'])}"
    status, body = hs.request("PUT", path, {"locked": True}, token=user["access_token"])
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    assert hs.request("GET", path, token=admin) == (200, {"locked": False})
    assert hs.request("PUT", path, {"locked": True}, token=admin) == (200, {"locked": True})
    status, body = hs.request("GET", f"{V3}/account/whoami", token=user["access_token"])
    assert status == 401 and body["errcode"] == "M_USER_LOCKED" and body["soft_logout"] is True
    assert hs.request("GET", path, token=admin) == (200, {"locked": True})
    assert hs.request("PUT", path, {"locked": False}, token=admin)[0] == 200
    assert hs.request("GET", f"{V3}/account/whoami", token=user["access_token"])[0] == 200
    hs.request("PUT", path, {"locked": True}, token=admin)
    # Logging out still works while locked.
    assert hs.request("POST", f"{V3}/logout", {}, token=user["access_token"])[0] == 200
    status, body = hs.request("GET", f"{V1}/admin/lock/{q('@nobody:' + hs.server_name)}",
                              token=admin)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = hs.request("GET", f"{V1}/admin/lock/{q('@x:elsewhere.org')}", token=admin)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"


def test_suspend(hs: ServerProcess) -> None:
    api = Api(hs)
    admin = api.user(fresh("admin"), admin=True)
    alice, bob = api.user(fresh("alice")), api.user(fresh("bob"))
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    alice.send(room, "before")
    path = f"{V1}/admin/suspend/{q(bob.user_id)}"
    assert admin.ok("PUT", path, {"suspended": True}) == {"suspended": True}
    assert admin.ok("GET", path) == {"suspended": True}
    bob.err("PUT", f"/rooms/{q(room)}/send/m.room.message/t1", {"msgtype": "m.text",
                                                                 "body": "x"},
            status=403, errcode="M_USER_SUSPENDED")
    bob.err("POST", "/createRoom", {}, status=403, errcode="M_USER_SUSPENDED")
    bob.err("PUT", f"/profile/{q(bob.user_id)}/displayname", {"displayname": "B"},
            status=403, errcode="M_USER_SUSPENDED")
    other_room = alice.create_room(preset="public_chat")
    bob.err("POST", f"/join/{q(other_room)}", {}, status=403, errcode="M_USER_SUSPENDED")
    # Reading and leaving go on.
    assert [e["content"].get("body") for e in bob.all_messages(room)
            if e["type"] == "m.room.message"] == ["before"]
    bob.leave(room)
    assert admin.ok("PUT", path, {"suspended": False}) == {"suspended": False}
    bob.join(other_room)
    bob.send(other_room, "after")
    admin.err("PUT", f"{V1}/admin/suspend/{q(admin.user_id)}", {"suspended": True},
              status=403, errcode="M_FORBIDDEN")
    bob.err("GET", path, status=403, errcode="M_FORBIDDEN")


# -- 6. registration tokens ---------------------------------------------------------

def test_registration_token_stage(open_hs: ServerProcess) -> None:
    hs = open_hs
    validity = f"{V1}/register/m.login.registration_token/validity"
    token = fresh("tok")
    db_execute(hs, "INSERT INTO registration_tokens (token, uses_allowed, pending, completed)"
                   " VALUES ($1, 1, 0, 0)", token)
    assert hs.request("GET", f"{validity}?token={token}") == (200, {"valid": True})
    assert hs.request("GET", f"{validity}?token=nope") == (200, {"valid": False})
    name = fresh("withtok")
    status, body = hs.request("POST", f"{V3}/register", {"username": name,
                                                         "password": PASSWORD})
    assert status == 401 and {"stages": ["m.login.registration_token"]} in body["flows"]
    session = body["session"]
    status, body = hs.request("POST", f"{V3}/register", {"auth": {
        "type": "m.login.dummy", "session": session}})
    assert status == 401 and body["completed"] == []
    status, body = hs.request("POST", f"{V3}/register", {"auth": {
        "type": "m.login.registration_token", "token": "wrong", "session": session}})
    assert status == 401 and body["errcode"] == "M_UNAUTHORIZED"
    assert hs.request("GET", f"{V3}/register/available?username={name}")[0] == 200
    status, body = hs.request("POST", f"{V3}/register", {"auth": {
        "type": "m.login.registration_token", "token": token, "session": session}})
    assert status == 200 and body["user_id"] == f"@{name}:{hs.server_name}", body
    # Its one use is spent.
    assert hs.request("GET", f"{validity}?token={token}") == (200, {"valid": False})
    assert db_execute(hs, "SELECT pending, completed FROM registration_tokens"
                          " WHERE token = $1", token) == [(0, 1)]


# -- 1. guests -------------------------------------------------------------------

def guest(hs: ServerProcess) -> User:
    status, body = hs.request("POST", f"{V3}/register?kind=guest", raw=b"")
    assert status == 200, body
    return User(Api(hs), body["user_id"], body["access_token"], body["device_id"])


def test_guest_reads_world_readable_room_but_cannot_send(open_hs: ServerProcess) -> None:
    api = Api(open_hs)
    alice = api.user(fresh("alice"))
    visitor = guest(open_hs)
    assert visitor.ok("GET", "/account/whoami")["is_guest"] is True
    room = alice.create_room(preset="public_chat", initial_state=[{
        "type": "m.room.history_visibility", "state_key": "",
        "content": {"history_visibility": "world_readable"}}])
    alice.send(room, "hello guests")
    bodies = [e["content"].get("body") for e in visitor.all_messages(room)
              if e["type"] == "m.room.message"]
    assert bodies == ["hello guests"]
    assert ("m.room.create", "") in visitor.state_map(room)
    visitor.ok("GET", f"/rooms/{q(room)}/initialSync")
    # No m.room.guest_access: guests may not join, so not send either.
    visitor.err("POST", f"/rooms/{q(room)}/join", {}, status=403,
                errcode="M_GUEST_ACCESS_FORBIDDEN")
    visitor.err("PUT", f"/rooms/{q(room)}/send/m.room.message/t1",
                {"msgtype": "m.text", "body": "hi"}, status=403)
    assert [e["content"].get("body") for e in alice.all_messages(room)
            if e["type"] == "m.room.message"] == ["hello guests"]
    # Outside the spec's list for guests.
    for method, path in (("GET", "/joined_rooms"), ("POST", "/createRoom"),
                         ("GET", "/pushrules/"), ("GET", "/account/3pid"),
                         ("GET", "/initialSync"), ("GET", "/capabilities")):
        visitor.err(method, path, {} if method == "POST" else None, status=403,
                    errcode="M_GUEST_ACCESS_FORBIDDEN")
    visitor.ok("GET", "/devices")
    visitor.err("GET", "/events", status=400)


def test_guest_access_can_join_then_revoked(open_hs: ServerProcess) -> None:
    api = Api(open_hs)
    alice = api.user(fresh("alice"))
    visitor = guest(open_hs)
    room = alice.create_room(preset="public_chat")
    alice.put_state(room, "m.room.guest_access", {"guest_access": "can_join"})
    visitor.join(room)
    visitor.send(room, "a guest speaks")
    visitor.ok("PUT", f"/profile/{q(visitor.user_id)}/displayname", {"displayname": "G"})
    visitor.err("PUT", f"/profile/{q(visitor.user_id)}/avatar_url",
                {"avatar_url": "mxc://x/y"}, status=403, errcode="M_GUEST_ACCESS_FORBIDDEN")
    alice.put_state(room, "m.room.guest_access", {"guest_access": "forbidden"})
    assert alice.membership(room, visitor.user_id) == "leave"
    visitor.err("PUT", f"/rooms/{q(room)}/send/m.room.message/t2",
                {"msgtype": "m.text", "body": "still here?"}, status=403)


def test_guest_upgrades_to_full_account(open_hs: ServerProcess) -> None:
    api = Api(open_hs)
    alice = api.user(fresh("alice"))
    visitor = guest(open_hs)
    room = alice.create_room(preset="public_chat")
    alice.put_state(room, "m.room.guest_access", {"guest_access": "can_join"})
    visitor.join(room)
    localpart = visitor.user_id[1:].split(":")[0]
    status, body = open_hs.request("POST", f"{V3}/register", {
        "username": "someoneelse", "password": PASSWORD,
        "guest_access_token": visitor.token})
    assert status == 403, body
    status, body = open_hs.request("POST", f"{V3}/register", {
        "username": localpart, "password": PASSWORD, "guest_access_token": visitor.token})
    assert status == 401, body
    token = fresh("t")
    db_execute(open_hs, "INSERT INTO registration_tokens (token, pending, completed)"
                        " VALUES ($1, 0, 0)", token)
    status, body = open_hs.request("POST", f"{V3}/register", {
        "auth": {"type": "m.login.registration_token", "token": token,
                 "session": body["session"]}})
    assert status == 200 and body["user_id"] == visitor.user_id, body
    member = User(api, body["user_id"], body["access_token"])
    assert member.ok("GET", "/account/whoami")["is_guest"] is False
    assert room in member.ok("GET", "/joined_rooms")["joined_rooms"]
    assert login(open_hs, localpart)[0] == 200
