"""Accounts over raw HTTP: versions, login, register, devices, logout, password, deactivate.

Every test runs against a real ``myelin run`` process on each engine. One
server per engine serves the whole module (tests use distinct user names),
which keeps the suite fast without sharing any state a test relies on.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"
PASSWORD = "correct horse"

_ids = itertools.count()


def fresh(prefix: str = "user") -> str:
    return f"{prefix}{next(_ids)}"


def mxid(hs: ServerProcess, localpart: str) -> str:
    return f"@{localpart}:{hs.server_name}"


def login(hs: ServerProcess, user: str, password: str = PASSWORD, **extra: Any,
          ) -> tuple[int, Any]:
    return hs.request("POST", f"{V3}/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
        "password": password, **extra})


def login_ok(hs: ServerProcess, user: str, password: str = PASSWORD, **extra: Any,
             ) -> dict[str, Any]:
    status, body = login(hs, user, password, **extra)
    assert status == 200, body
    return dict(body)


def whoami(hs: ServerProcess, token: str) -> tuple[int, Any]:
    return hs.request("GET", f"{V3}/account/whoami", token=token)


def password_auth(hs: ServerProcess, localpart: str, session: str | None,
                  password: str = PASSWORD) -> dict[str, Any]:
    auth: dict[str, Any] = {"type": "m.login.password", "password": password,
                            "identifier": {"type": "m.id.user", "user": localpart}}
    if session:
        auth["session"] = session
    return auth


def uia_challenge(status: int, body: Any, stage: str) -> str:
    """Check a 401 user-interactive-auth answer and return its session."""
    assert status == 401, body
    assert {"stages": [stage]} in body["flows"]
    assert isinstance(body["params"], dict)
    assert isinstance(body["session"], str) and body["session"]
    return str(body["session"])


# -- /versions -----------------------------------------------------------------

def test_versions(hs: ServerProcess) -> None:
    status, body = hs.request("GET", "/_matrix/client/versions")
    assert status == 200
    assert "v1.1" in body["versions"] and "r0.6.1" in body["versions"]
    assert all(isinstance(v, str) for v in body["versions"])
    assert isinstance(body.get("unstable_features", {}), dict)


def test_versions_needs_no_token_and_ignores_bad_one(hs: ServerProcess) -> None:
    status, _ = hs.request("GET", "/_matrix/client/versions", token="syt_bogus")
    assert status == 200


# -- /login --------------------------------------------------------------------

def test_login_flows(hs: ServerProcess) -> None:
    status, body = hs.request("GET", f"{V3}/login")
    assert status == 200
    assert {"type": "m.login.password"} in body["flows"]


def test_login_with_user_identifier(hs: ServerProcess) -> None:
    name = fresh()
    hs.register(name)
    body = login_ok(hs, name)
    assert body["user_id"] == mxid(hs, name)
    assert body["access_token"].startswith("syt_")
    assert body["device_id"]
    assert body["home_server"] == hs.server_name
    assert body["well_known"]["m.homeserver"]["base_url"].startswith("http://127.0.0.1:")
    status, me = whoami(hs, body["access_token"])
    assert status == 200
    assert me == {"user_id": mxid(hs, name), "device_id": body["device_id"], "is_guest": False}


def test_login_with_full_mxid_and_legacy_user_field(hs: ServerProcess) -> None:
    name = fresh()
    hs.register(name)
    assert login_ok(hs, mxid(hs, name))["user_id"] == mxid(hs, name)
    status, body = hs.request("POST", f"{V3}/login", {
        "type": "m.login.password", "user": name, "password": PASSWORD})
    assert status == 200, body
    assert body["user_id"] == mxid(hs, name)


def test_login_is_case_insensitive_on_localpart(hs: ServerProcess) -> None:
    name = fresh("mixed")
    hs.register(name)
    assert login_ok(hs, name.upper())["user_id"] == mxid(hs, name)


def test_each_login_is_a_new_device(hs: ServerProcess) -> None:
    name = fresh()
    hs.register(name)
    first, second = login_ok(hs, name), login_ok(hs, name)
    assert first["device_id"] != second["device_id"]
    assert first["access_token"] != second["access_token"]


def test_login_reuses_device_id(hs: ServerProcess) -> None:
    name = fresh()
    hs.register(name)
    first = login_ok(hs, name, device_id="MYPHONE", initial_device_display_name="Phone")
    assert first["device_id"] == "MYPHONE"
    second = login_ok(hs, name, device_id="MYPHONE")
    assert second["device_id"] == "MYPHONE"
    assert second["access_token"] != first["access_token"]
    status, body = hs.request("GET", f"{V3}/devices", token=second["access_token"])
    assert status == 200
    phones = [d for d in body["devices"] if d["device_id"] == "MYPHONE"]
    assert len(phones) == 1
    assert phones[0]["display_name"] == "Phone"
    assert whoami(hs, second["access_token"])[1]["device_id"] == "MYPHONE"


def test_initial_device_display_name_shows_in_devices(hs: ServerProcess) -> None:
    name = fresh()
    hs.register(name)
    body = login_ok(hs, name, initial_device_display_name="Work laptop")
    status, devices = hs.request("GET", f"{V3}/devices", token=body["access_token"])
    assert status == 200
    mine = [d for d in devices["devices"] if d["device_id"] == body["device_id"]]
    assert mine and mine[0]["display_name"] == "Work laptop"


def test_devices_show_where_they_were_last_seen(hs: ServerProcess) -> None:
    name = fresh()
    hs.register(name)
    body = login_ok(hs, name)
    token = body["access_token"]
    # Any authenticated request counts as "seen". This listener does not have
    # x_forwarded, so a client-supplied X-Forwarded-For must not be believed.
    status, _ = hs.request("GET", f"{V3}/account/whoami", token=token,
                           headers={"X-Forwarded-For": "203.0.113.9"})
    assert status == 200
    deadline = time.monotonic() + 10
    while True:
        status, device = hs.request("GET", f"{V3}/devices/{body['device_id']}", token=token)
        assert status == 200
        if device.get("last_seen_ip") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert device["last_seen_ip"] == "127.0.0.1"
    assert abs(device["last_seen_ts"] - time.time() * 1000) < 60_000


@pytest.mark.parametrize("who", ["wrong-password", "no-such-user"])
def test_login_failure_is_forbidden(hs: ServerProcess, who: str) -> None:
    name = fresh()
    hs.register(name)
    user = name if who == "wrong-password" else fresh("ghost")
    status, body = login(hs, user, "not the password")
    assert status == 403
    assert body["errcode"] == "M_FORBIDDEN"


@pytest.mark.parametrize("body", [
    {"type": "m.login.password", "password": "x"},
    {"type": "m.login.password", "identifier": {"type": "m.id.user"}, "password": "x"},
    {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": 5},
     "password": "x"},
])
def test_login_without_user(hs: ServerProcess, body: dict[str, Any]) -> None:
    status, answer = hs.request("POST", f"{V3}/login", body)
    assert status == 400
    assert answer["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM", "M_MISSING_PARAM")


def test_login_unknown_type(hs: ServerProcess) -> None:
    status, body = hs.request("POST", f"{V3}/login", {"type": "m.login.carrier_pigeon"})
    assert status == 400
    assert body["errcode"] in ("M_UNKNOWN", "M_BAD_JSON", "M_INVALID_PARAM")


def test_login_unsupported_identifier(hs: ServerProcess) -> None:
    status, body = hs.request("POST", f"{V3}/login", {
        "type": "m.login.password", "password": "x",
        "identifier": {"type": "m.id.phone", "country": "GB", "phone": "123"}})
    assert status == 400
    assert body["errcode"] in ("M_UNKNOWN", "M_INVALID_PARAM")


def test_login_without_password(hs: ServerProcess) -> None:
    name = fresh()
    hs.register(name)
    status, body = hs.request("POST", f"{V3}/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}})
    assert status == 400
    assert body["errcode"] in ("M_BAD_JSON", "M_MISSING_PARAM", "M_INVALID_PARAM")


# -- /register -----------------------------------------------------------------

def register_flow(hs: ServerProcess, body: dict[str, Any]) -> tuple[int, Any]:
    """The two-step dummy flow a client goes through."""
    status, first = hs.request("POST", f"{V3}/register", body)
    if status != 401:
        return status, first
    session = uia_challenge(status, first, "m.login.dummy")
    return hs.request("POST", f"{V3}/register", {
        **body, "auth": {"type": "m.login.dummy", "session": session}})


def test_register_asks_for_auth_first(hs: ServerProcess) -> None:
    name = fresh("reg")
    status, body = hs.request("POST", f"{V3}/register",
                              {"username": name, "password": PASSWORD})
    session = uia_challenge(status, body, "m.login.dummy")
    assert body.get("completed", []) == []
    # nothing was created by the challenge
    status, avail = hs.request("GET", f"{V3}/register/available?username={name}")
    assert status == 200 and avail == {"available": True}
    status, done = hs.request("POST", f"{V3}/register", {
        "username": name, "password": PASSWORD,
        "auth": {"type": "m.login.dummy", "session": session}})
    assert status == 200, done
    assert done["user_id"] == mxid(hs, name)
    assert done["access_token"].startswith("syt_")
    assert done["device_id"]
    status, me = whoami(hs, done["access_token"])
    assert status == 200 and me["user_id"] == mxid(hs, name)
    assert me["device_id"] == done["device_id"]
    assert login_ok(hs, name)["user_id"] == mxid(hs, name)


def test_register_with_device_and_display_name(hs: ServerProcess) -> None:
    name = fresh("reg")
    status, body = register_flow(hs, {"username": name, "password": PASSWORD,
                                      "device_id": "REGDEV",
                                      "initial_device_display_name": "Signup phone"})
    assert status == 200, body
    assert body["device_id"] == "REGDEV"
    status, device = hs.request("GET", f"{V3}/devices/REGDEV", token=body["access_token"])
    assert status == 200, device
    assert device["display_name"] == "Signup phone"


def test_register_uppercase_username_is_lowercased(hs: ServerProcess) -> None:
    name = fresh("reg")
    status, body = register_flow(hs, {"username": name.upper(), "password": PASSWORD})
    assert status == 200, body
    assert body["user_id"] == mxid(hs, name)


def test_register_inhibit_login(hs: ServerProcess) -> None:
    name = fresh("reg")
    status, body = register_flow(hs, {"username": name, "password": PASSWORD,
                                      "inhibit_login": True})
    assert status == 200, body
    assert body["user_id"] == mxid(hs, name)
    assert "access_token" not in body
    assert "device_id" not in body
    # the account exists and can log in
    body = login_ok(hs, name)
    status, devices = hs.request("GET", f"{V3}/devices", token=body["access_token"])
    assert [d["device_id"] for d in devices["devices"]] == [body["device_id"]]


def test_register_without_username_generates_one(hs: ServerProcess) -> None:
    status, body = register_flow(hs, {"password": PASSWORD})
    assert status == 200, body
    assert body["user_id"].startswith("@") and body["user_id"].endswith(f":{hs.server_name}")
    assert whoami(hs, body["access_token"])[0] == 200


def test_register_user_in_use(hs: ServerProcess) -> None:
    name = fresh("taken")
    hs.register(name)
    for candidate in (name, name.upper()):
        status, body = hs.request("POST", f"{V3}/register",
                                  {"username": candidate, "password": PASSWORD})
        assert status == 400, body
        assert body["errcode"] == "M_USER_IN_USE"
    # also when the dummy stage is already done
    status, body = hs.request("POST", f"{V3}/register", {
        "username": name, "password": "other", "auth": {"type": "m.login.dummy"}})
    assert status == 400 and body["errcode"] == "M_USER_IN_USE"
    assert login_ok(hs, name)  # the original password still works


@pytest.mark.parametrize("username", ["has space", "émile", "semi;colon", "_underscore",
                                      "a" * 300, "at@sign", "colon:x"])
def test_register_invalid_username(hs: ServerProcess, username: str) -> None:
    status, body = register_flow(hs, {"username": username, "password": PASSWORD})
    assert status == 400, body
    assert body["errcode"] == "M_INVALID_USERNAME"


def test_register_available(hs: ServerProcess) -> None:
    name = fresh("avail")
    status, body = hs.request("GET", f"{V3}/register/available?username={name}")
    assert (status, body) == (200, {"available": True})
    hs.register(name)
    status, body = hs.request("GET", f"{V3}/register/available?username={name}")
    assert status == 400 and body["errcode"] == "M_USER_IN_USE"
    status, body = hs.request("GET", f"{V3}/register/available?username={name.upper()}")
    assert status == 400 and body["errcode"] == "M_USER_IN_USE"
    status, body = hs.request("GET", f"{V3}/register/available?username=bad%20name")
    assert status == 400 and body["errcode"] == "M_INVALID_USERNAME"
    status, body = hs.request("GET", f"{V3}/register/available")
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"


def test_register_unknown_auth_type(hs: ServerProcess) -> None:
    name = fresh("reg")
    status, body = hs.request("POST", f"{V3}/register", {
        "username": name, "password": PASSWORD, "auth": {"type": "m.login.recaptcha"}})
    assert status == 401
    assert {"stages": ["m.login.dummy"]} in body["flows"]
    status, _ = hs.request("GET", f"{V3}/register/available?username={name}")
    assert status == 200


def test_register_bad_kind(hs: ServerProcess) -> None:
    status, body = hs.request("POST", f"{V3}/register?kind=robot", {"password": PASSWORD})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"


def test_guest_registration_disabled_by_default(hs: ServerProcess) -> None:
    status, body = hs.request("POST", f"{V3}/register?kind=guest", {})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


def test_registration_token_validity(hs: ServerProcess) -> None:
    path = "/_matrix/client/v1/register/m.login.registration_token/validity"
    status, body = hs.request("GET", f"{path}?token=abcd")
    assert status == 200, body
    assert body == {"valid": False}
    status, body = hs.request("GET", path)
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"


# -- whoami and tokens ---------------------------------------------------------

def test_whoami_with_query_param_token(hs: ServerProcess) -> None:
    name = fresh()
    login_body = hs.register(name)
    token = login_body["access_token"]
    status, body = hs.request("GET", f"{V3}/account/whoami?access_token={token}")
    assert status == 200, body
    assert body["user_id"] == mxid(hs, name)
    assert body["device_id"] == login_body["device_id"]


def test_whoami_without_token(hs: ServerProcess) -> None:
    status, body = hs.request("GET", f"{V3}/account/whoami")
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"


def test_access_token_format(hs: ServerProcess) -> None:
    import base64

    name = fresh("fmt")
    token = hs.register(name)["access_token"]
    prefix, b64, random_part, crc = token.split("_")
    assert prefix == "syt"
    assert base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).decode() == name
    assert len(random_part) == 20 and random_part.isalnum()
    assert len(crc) == 6 and crc.isalnum()
    # a token with a broken checksum is refused
    broken = f"{prefix}_{b64}_{random_part}_{'0' * 6 if crc != '000000' else '111111'}"
    status, body = whoami(hs, broken)
    assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN"


# -- devices -------------------------------------------------------------------

def test_devices_list_get_rename(hs: ServerProcess) -> None:
    name = fresh("dev")
    hs.register(name)
    a = login_ok(hs, name, device_id="DEVA", initial_device_display_name="A")
    login_ok(hs, name, device_id="DEVB")
    token = a["access_token"]
    status, body = hs.request("GET", f"{V3}/devices", token=token)
    assert status == 200
    ids = {d["device_id"] for d in body["devices"]}
    assert {"DEVA", "DEVB"} <= ids
    for device in body["devices"]:
        assert set(device) >= {"device_id", "last_seen_ts"}
    # A device without a name has a null display_name (matrix-nio requires the key).
    unnamed = next(d for d in body["devices"] if d["device_id"] == "DEVB")
    assert unnamed["display_name"] is None
    status, device = hs.request("GET", f"{V3}/devices/DEVA", token=token)
    assert status == 200 and device["device_id"] == "DEVA" and device["display_name"] == "A"
    status, _ = hs.request("PUT", f"{V3}/devices/DEVB", {"display_name": "Renamed"}, token=token)
    assert status == 200
    status, device = hs.request("GET", f"{V3}/devices/DEVB", token=token)
    assert device["display_name"] == "Renamed"


def test_devices_of_others_are_not_visible(hs: ServerProcess) -> None:
    alice, bob = fresh("alice"), fresh("bob")
    hs.register(alice)
    hs.register(bob)
    bob_login = login_ok(hs, bob, device_id="BOBDEV")
    alice_token = login_ok(hs, alice)["access_token"]
    status, body = hs.request("GET", f"{V3}/devices/BOBDEV", token=alice_token)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = hs.request("PUT", f"{V3}/devices/BOBDEV", {"display_name": "pwned"},
                              token=alice_token)
    assert status == 404
    status, body = hs.request("DELETE", f"{V3}/devices/BOBDEV", {}, token=alice_token)
    assert status == 404
    assert whoami(hs, bob_login["access_token"])[0] == 200


def test_unknown_device(hs: ServerProcess) -> None:
    name = fresh("dev")
    token = hs.register(name)["access_token"]
    for method in ("GET", "PUT"):
        status, body = hs.request(method, f"{V3}/devices/NOPE",
                                  {} if method == "PUT" else None, token=token)
        assert status == 404 and body["errcode"] == "M_NOT_FOUND"


def test_rename_device_rejects_non_string(hs: ServerProcess) -> None:
    login_body = hs.register(fresh("dev"))
    status, body = hs.request("PUT", f"{V3}/devices/{login_body['device_id']}",
                              {"display_name": 42}, token=login_body["access_token"])
    assert status == 400 and body["errcode"] == "M_BAD_JSON"


def test_delete_device_needs_password_auth(hs: ServerProcess) -> None:
    name = fresh("dev")
    hs.register(name)
    keeper = login_ok(hs, name, device_id="KEEP")
    doomed = login_ok(hs, name, device_id="DOOMED")
    token = keeper["access_token"]
    status, body = hs.request("DELETE", f"{V3}/devices/DOOMED", {}, token=token)
    session = uia_challenge(status, body, "m.login.password")
    # still there, still working
    assert whoami(hs, doomed["access_token"])[0] == 200
    # a wrong password is refused, and changes nothing
    status, body = hs.request("DELETE", f"{V3}/devices/DOOMED", {
        "auth": password_auth(hs, name, session, "wrong")}, token=token)
    assert status == 401 and body["errcode"] == "M_FORBIDDEN"
    assert whoami(hs, doomed["access_token"])[0] == 200
    status, body = hs.request("DELETE", f"{V3}/devices/DOOMED", {
        "auth": password_auth(hs, name, session)}, token=token)
    assert status == 200, body
    status, body = whoami(hs, doomed["access_token"])
    assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN"
    status, body = hs.request("GET", f"{V3}/devices/DOOMED", token=token)
    assert status == 404
    assert whoami(hs, token)[0] == 200


def test_delete_device_without_body_asks_for_auth(hs: ServerProcess) -> None:
    name = fresh("dev")
    hs.register(name)
    token = login_ok(hs, name, device_id="X1")["access_token"]
    login_ok(hs, name, device_id="X2")
    status, body = hs.request("DELETE", f"{V3}/devices/X2", token=token)
    uia_challenge(status, body, "m.login.password")


def test_delete_own_device_logs_out(hs: ServerProcess) -> None:
    name = fresh("dev")
    hs.register(name)
    me = login_ok(hs, name, device_id="SELF")
    status, body = hs.request("DELETE", f"{V3}/devices/SELF", {
        "auth": password_auth(hs, name, None)}, token=me["access_token"])
    assert status == 200, body
    assert whoami(hs, me["access_token"])[1]["errcode"] == "M_UNKNOWN_TOKEN"


def test_delete_devices_bulk(hs: ServerProcess) -> None:
    name = fresh("dev")
    registered = hs.register(name)
    keeper = login_ok(hs, name, device_id="MAIN")
    others = [login_ok(hs, name, device_id=f"OLD{i}") for i in range(3)]
    token = keeper["access_token"]
    request = {"devices": ["OLD0", "OLD1", "NEVER_EXISTED"]}
    status, body = hs.request("POST", f"{V3}/delete_devices", request, token=token)
    session = uia_challenge(status, body, "m.login.password")
    assert whoami(hs, others[0]["access_token"])[0] == 200
    status, body = hs.request("POST", f"{V3}/delete_devices", {
        **request, "auth": password_auth(hs, name, session)}, token=token)
    assert status == 200, body
    assert whoami(hs, others[0]["access_token"])[0] == 401
    assert whoami(hs, others[1]["access_token"])[0] == 401
    assert whoami(hs, others[2]["access_token"])[0] == 200
    status, body = hs.request("GET", f"{V3}/devices", token=token)
    assert sorted(d["device_id"] for d in body["devices"]) == sorted(
        ["MAIN", "OLD2", registered["device_id"]])


def test_delete_devices_needs_list(hs: ServerProcess) -> None:
    token = hs.register(fresh("dev"))["access_token"]
    status, body = hs.request("POST", f"{V3}/delete_devices", {"devices": "OLD0"}, token=token)
    assert status == 400 and body["errcode"] == "M_BAD_JSON"


# -- logout --------------------------------------------------------------------

def test_logout(hs: ServerProcess) -> None:
    name = fresh("out")
    hs.register(name)
    a, b = login_ok(hs, name), login_ok(hs, name)
    status, body = hs.request("POST", f"{V3}/logout", {}, token=a["access_token"])
    assert status == 200 and body == {}
    status, body = whoami(hs, a["access_token"])
    assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN"
    assert whoami(hs, b["access_token"])[0] == 200
    status, devices = hs.request("GET", f"{V3}/devices", token=b["access_token"])
    assert a["device_id"] not in {d["device_id"] for d in devices["devices"]}


def test_logout_without_body(hs: ServerProcess) -> None:
    token = hs.register(fresh("out"))["access_token"]
    status, _ = hs.request("POST", f"{V3}/logout", token=token)
    assert status == 200
    assert whoami(hs, token)[0] == 401


def test_logout_all(hs: ServerProcess) -> None:
    name, other = fresh("out"), fresh("bystander")
    hs.register(name)
    bystander = hs.register(other)["access_token"]
    sessions = [login_ok(hs, name) for _ in range(3)]
    status, body = hs.request("POST", f"{V3}/logout/all", {},
                              token=sessions[0]["access_token"])
    assert status == 200 and body == {}
    for session in sessions:
        status, body = whoami(hs, session["access_token"])
        assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN"
    assert whoami(hs, bystander)[0] == 200
    fresh_login = login_ok(hs, name)  # can still log in again
    status, devices = hs.request("GET", f"{V3}/devices", token=fresh_login["access_token"])
    assert [d["device_id"] for d in devices["devices"]] == [fresh_login["device_id"]]


# -- password ------------------------------------------------------------------

def test_change_password(hs: ServerProcess) -> None:
    name = fresh("pw")
    hs.register(name)
    current = login_ok(hs, name)
    other = login_ok(hs, name)
    token = current["access_token"]
    status, body = hs.request("POST", f"{V3}/account/password",
                              {"new_password": "new secret"}, token=token)
    session = uia_challenge(status, body, "m.login.password")
    assert login(hs, name, "new secret")[0] == 403  # not changed yet
    status, body = hs.request("POST", f"{V3}/account/password", {
        "new_password": "new secret", "auth": password_auth(hs, name, session)}, token=token)
    assert status == 200, body
    status, body = login(hs, name, PASSWORD)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    assert login(hs, name, "new secret")[0] == 200
    # this device stays logged in, the others are logged out
    assert whoami(hs, token)[0] == 200
    status, body = whoami(hs, other["access_token"])
    assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN"


def test_change_password_keep_devices(hs: ServerProcess) -> None:
    name = fresh("pw")
    hs.register(name)
    current, other = login_ok(hs, name), login_ok(hs, name)
    status, body = hs.request("POST", f"{V3}/account/password", {
        "new_password": "another", "logout_devices": False,
        "auth": password_auth(hs, name, None)}, token=current["access_token"])
    assert status == 200, body
    assert whoami(hs, other["access_token"])[0] == 200
    assert login(hs, name, "another")[0] == 200


def test_change_password_wrong_old_password(hs: ServerProcess) -> None:
    name = fresh("pw")
    token = hs.register(name)["access_token"]
    status, body = hs.request("POST", f"{V3}/account/password", {
        "new_password": "hijacked", "auth": password_auth(hs, name, None, "guess")},
        token=token)
    assert status == 401 and body["errcode"] == "M_FORBIDDEN"
    assert login(hs, name, PASSWORD)[0] == 200
    assert login(hs, name, "hijacked")[0] == 403


def test_change_password_requires_new_password(hs: ServerProcess) -> None:
    name = fresh("pw")
    token = hs.register(name)["access_token"]
    status, body = hs.request("POST", f"{V3}/account/password", {
        "auth": password_auth(hs, name, None)}, token=token)
    assert status == 400
    assert body["errcode"] in ("M_BAD_JSON", "M_MISSING_PARAM")


def test_password_auth_for_another_user_is_refused(hs: ServerProcess) -> None:
    victim, attacker = fresh("victim"), fresh("attacker")
    hs.register(victim)
    token = hs.register(attacker)["access_token"]
    status, body = hs.request("POST", f"{V3}/account/password", {
        "new_password": "x", "auth": password_auth(hs, victim, None)}, token=token)
    # Proving someone else's password is not a wrong password: it is forbidden.
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    assert login(hs, attacker, PASSWORD)[0] == 200
    assert login(hs, attacker, "x")[0] == 403


# -- deactivation --------------------------------------------------------------

def test_deactivate(hs: ServerProcess) -> None:
    name = fresh("gone")
    hs.register(name)
    me, other = login_ok(hs, name), login_ok(hs, name)
    token = me["access_token"]
    status, body = hs.request("POST", f"{V3}/account/deactivate", {}, token=token)
    session = uia_challenge(status, body, "m.login.password")
    assert whoami(hs, token)[0] == 200
    status, body = hs.request("POST", f"{V3}/account/deactivate", {
        "auth": password_auth(hs, name, session)}, token=token)
    assert status == 200, body
    assert body["id_server_unbind_result"] in ("success", "no-support")
    for t in (token, other["access_token"]):
        status, body = whoami(hs, t)
        assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN"
    status, body = login(hs, name, PASSWORD)
    assert status == 403 and body["errcode"] in ("M_FORBIDDEN", "M_USER_DEACTIVATED")
    # the name stays taken
    status, body = hs.request("GET", f"{V3}/register/available?username={name}")
    assert status == 400 and body["errcode"] == "M_USER_IN_USE"


def test_deactivate_wrong_password(hs: ServerProcess) -> None:
    name = fresh("gone")
    token = hs.register(name)["access_token"]
    status, body = hs.request("POST", f"{V3}/account/deactivate", {
        "auth": password_auth(hs, name, None, "wrong")}, token=token)
    assert status == 401 and body["errcode"] == "M_FORBIDDEN"
    assert whoami(hs, token)[0] == 200
    assert login(hs, name)[0] == 200


# -- 3pids and capabilities ----------------------------------------------------

def test_3pids(hs: ServerProcess) -> None:
    token = hs.register(fresh("tp"))["access_token"]
    status, body = hs.request("GET", f"{V3}/account/3pid", token=token)
    assert (status, body) == (200, {"threepids": []})
    status, body = hs.request("GET", f"{V3}/account/3pid")
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"


def test_capabilities(hs: ServerProcess) -> None:
    token = hs.register(fresh("cap"))["access_token"]
    status, body = hs.request("GET", f"{V3}/capabilities", token=token)
    assert status == 200
    caps = body["capabilities"]
    versions = caps["m.room_versions"]
    assert versions["default"] == "12"
    assert versions["default"] in versions["available"]
    for version in ("1", "6", "9", "10", "11"):
        assert versions["available"][version] == "stable"
    assert set(versions["available"].values()) <= {"stable", "unstable"}
    assert caps["m.change_password"] == {"enabled": True}
    status, body = hs.request("GET", f"{V3}/capabilities")
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"


# -- r0 paths ------------------------------------------------------------------

def test_r0_paths_answer(hs: ServerProcess) -> None:
    name = fresh("old")
    hs.register(name)
    r0 = "/_matrix/client/r0"
    status, body = hs.request("GET", f"{r0}/login")
    assert status == 200 and {"type": "m.login.password"} in body["flows"]
    status, body = hs.request("POST", f"{r0}/login", {
        "type": "m.login.password", "user": name, "password": PASSWORD})
    assert status == 200, body
    token = body["access_token"]
    status, me = hs.request("GET", f"{r0}/account/whoami", token=token)
    assert status == 200 and me["user_id"] == mxid(hs, name)
    assert hs.request("GET", f"{r0}/devices", token=token)[0] == 200
    assert hs.request("GET", f"{r0}/capabilities", token=token)[0] == 200
    assert hs.request("GET", f"{r0}/register/available?username={fresh('r0')}")[0] == 200
    assert hs.request("POST", f"{r0}/logout", {}, token=token)[0] == 200
    assert whoami(hs, token)[0] == 401
