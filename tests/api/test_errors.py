"""Matrix errors over raw HTTP, CORS, limits, and that failed requests change nothing."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from signedjson.key import decode_verify_key_bytes, read_signing_keys
from signedjson.sign import SignatureVerifyException, verify_signed_json
from unpaddedbase64 import decode_base64

from tests.support.postgres import PostgresServer
from tests.support.server import ServerProcess, launch_server

V3 = "/_matrix/client/v3"
PASSWORD = "correct horse"
_ids = itertools.count()


def stop(proc: ServerProcess) -> None:
    code = proc.stop()
    if code not in (0, None):
        print(proc.log())
    shutil.rmtree(proc.workdir, ignore_errors=True)


def fresh(prefix: str = "err") -> str:
    return f"{prefix}{next(_ids)}"


def raw_request(hs: ServerProcess, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None,
                ) -> tuple[int, dict[str, str], bytes]:
    """A request that shows the response headers too."""
    request = urllib.request.Request(hs.url(path), data=body, method=method,
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def assert_error(result: tuple[int, Any], status: int, errcode: str) -> dict[str, Any]:
    got_status, body = result
    assert got_status == status, body
    assert isinstance(body, dict), body
    assert body["errcode"] == errcode, body
    assert isinstance(body.get("error"), str)
    return body


def user_count_probe(hs: ServerProcess, localpart: str) -> bool:
    """True if ``localpart`` is free (the server has no such user)."""
    status, body = hs.request("GET", f"{V3}/register/available?username={localpart}")
    if status == 200:
        return True
    assert body["errcode"] == "M_USER_IN_USE", body
    return False


# -- routing ----------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    f"{V3}/no/such/endpoint",
    f"{V3}/account/whoami/extra",
    "/_matrix/client/v99/login",
    "/_matrix/client/unstable/org.example.nothing",
    "/no-such-thing",
    "/",
])
def test_unknown_endpoint(hs: ServerProcess, path: str) -> None:
    assert_error(hs.request("GET", path), 404, "M_UNRECOGNIZED")
    assert_error(hs.request("POST", path, {}), 404, "M_UNRECOGNIZED")


@pytest.mark.parametrize(("method", "path"), [
    ("DELETE", f"{V3}/login"),
    ("PUT", f"{V3}/register"),
    ("POST", f"{V3}/account/whoami"),
    ("GET", f"{V3}/logout"),
    ("PATCH", f"{V3}/devices"),
    ("POST", "/_matrix/client/versions"),
    ("POST", "/_matrix/client/r0/account/whoami"),
])
def test_wrong_method(hs: ServerProcess, method: str, path: str) -> None:
    assert_error(hs.request(method, path, {} if method != "GET" else None), 405,
                 "M_UNRECOGNIZED")


def test_head_on_get_route(hs: ServerProcess) -> None:
    status, _, _ = raw_request(hs, "HEAD", "/_matrix/client/versions")
    assert status == 200


# -- request bodies -----------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    b"not json", b"{", b'{"a": 1', b'{"a": NaN}', b"\xff\xfe\x00", b'{"a":1}{"b":2}', b"",
    b"   ",
])
def test_not_json(hs: ServerProcess, raw: bytes) -> None:
    assert_error(hs.request("POST", f"{V3}/login", raw=raw), 400, "M_NOT_JSON")


@pytest.mark.parametrize("raw", [b"[]", b'[{"type": "m.login.password"}]', b'"text"', b"42",
                                 b"null", b"true"])
def test_bad_json_not_an_object(hs: ServerProcess, raw: bytes) -> None:
    assert_error(hs.request("POST", f"{V3}/login", raw=raw), 400, "M_BAD_JSON")
    assert_error(hs.request("POST", f"{V3}/register", raw=raw), 400, "M_BAD_JSON")


def test_too_large(hs: ServerProcess) -> None:
    big = json.dumps({"type": "m.login.password", "pad": "a" * (1024 * 1024 + 10)}).encode()
    assert_error(hs.request("POST", f"{V3}/login", raw=big), 413, "M_TOO_LARGE")


def test_too_large_chunked(hs: ServerProcess) -> None:
    host, port = hs.base_url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        chunks = (b"a" * 65536 for _ in range(40))  # 2.5 MiB, no Content-Length
        conn.request("POST", f"{V3}/login", body=chunks, encode_chunked=True,
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 413
    assert body["errcode"] == "M_TOO_LARGE"


def test_body_just_under_the_limit_is_read_whole(hs: ServerProcess) -> None:
    # A body that arrives in many TCP segments must still be read to the end.
    name = fresh("big")
    hs.register(name, PASSWORD)
    body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name},
            "password": PASSWORD, "padding": "x" * (1024 * 1024 - 500)}
    status, answer = hs.request("POST", f"{V3}/login", body)
    assert status == 200, answer
    assert answer["user_id"].startswith(f"@{name}:")


def test_small_chunked_body_is_accepted(hs: ServerProcess) -> None:
    name = fresh("chunk")
    hs.register(name, PASSWORD)
    payload = json.dumps({"type": "m.login.password", "user": name,
                          "password": PASSWORD}).encode()
    host, port = hs.base_url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        pieces = (payload[i:i + 7] for i in range(0, len(payload), 7))
        conn.request("POST", f"{V3}/login", body=pieces, encode_chunked=True,
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        answer = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 200, answer


# -- access tokens ------------------------------------------------------------------

def test_missing_token(hs: ServerProcess) -> None:
    for path in ("/account/whoami", "/devices", "/capabilities", "/account/3pid"):
        assert_error(hs.request("GET", V3 + path), 401, "M_MISSING_TOKEN")
    assert_error(hs.request("POST", f"{V3}/logout", {}), 401, "M_MISSING_TOKEN")


def test_malformed_authorization_header(hs: ServerProcess) -> None:
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer   "):
        result = hs.request("GET", f"{V3}/account/whoami", headers={"Authorization": header})
        assert_error(result, 401, "M_MISSING_TOKEN")


@pytest.mark.parametrize("token", ["syt_bm9ib2R5_aaaaaaaaaaaaaaaaaaaa_000000", "garbage",
                                   "syt_", "syt_a_b_c_d"])
def test_unknown_token(hs: ServerProcess, token: str) -> None:
    body = assert_error(hs.request("GET", f"{V3}/account/whoami", token=token), 401,
                        "M_UNKNOWN_TOKEN")
    assert body["soft_logout"] is False
    body = assert_error(hs.request("GET", f"{V3}/account/whoami?access_token={token}"), 401,
                        "M_UNKNOWN_TOKEN")
    assert body["soft_logout"] is False


def test_logged_out_token_is_unknown(hs: ServerProcess) -> None:
    token = hs.register(fresh("out"))["access_token"]
    assert hs.request("POST", f"{V3}/logout", {}, token=token)[0] == 200
    body = assert_error(hs.request("GET", f"{V3}/account/whoami", token=token), 401,
                        "M_UNKNOWN_TOKEN")
    assert body["soft_logout"] is False


@pytest.fixture
def short_sessions(engine: str, pg: PostgresServer | None) -> Iterator[ServerProcess]:
    """Tokens live three seconds; registration is closed."""
    proc = launch_server(engine, pg, extra={"session_lifetime": "3s",
                                            "enable_registration": False})
    try:
        yield proc
    finally:
        stop(proc)


def test_expired_token_is_soft_logout(short_sessions: ServerProcess) -> None:
    hs = short_sessions
    token = hs.register(fresh("short"))["access_token"]
    assert hs.request("GET", f"{V3}/account/whoami", token=token)[0] == 200
    time.sleep(3.5)
    body = assert_error(hs.request("GET", f"{V3}/account/whoami", token=token), 401,
                        "M_UNKNOWN_TOKEN")
    assert body["soft_logout"] is True


def test_registration_closed(short_sessions: ServerProcess) -> None:
    hs = short_sessions
    name = fresh("closed")
    assert_error(hs.request("POST", f"{V3}/register", {"username": name, "password": "pw"}),
                 403, "M_FORBIDDEN")
    assert_error(hs.request("POST", f"{V3}/register", {
        "username": name, "password": "pw", "auth": {"type": "m.login.dummy"}}),
        403, "M_FORBIDDEN")
    assert user_count_probe(hs, name)
    assert_error(hs.request(
        "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=abc"),
        403, "M_FORBIDDEN")
    # the admin can still create accounts
    assert hs.register(name)["user_id"] == f"@{name}:{hs.server_name}"


# -- rate limits ----------------------------------------------------------------------

def test_login_rate_limited_by_address(engine: str, pg: PostgresServer | None) -> None:
    hs = launch_server(engine, pg, extra={"rc_login": {
        "address": {"per_second": 0.01, "burst_count": 3},
        "account": {"per_second": 1000, "burst_count": 1000},
        "failed_attempts": {"per_second": 1000, "burst_count": 1000}}})
    try:
        name = fresh("rl")
        hs.register(name)
        request = {"type": "m.login.password", "user": name, "password": PASSWORD}
        for _ in range(3):
            assert hs.request("POST", f"{V3}/login", request)[0] == 200
        body = assert_error(hs.request("POST", f"{V3}/login", request), 429,
                            "M_LIMIT_EXCEEDED")
        assert isinstance(body["retry_after_ms"], int)
        assert 0 < body["retry_after_ms"] <= 100_000
        # other endpoints are not affected
        assert hs.request("GET", "/_matrix/client/versions")[0] == 200
    finally:
        stop(hs)


def test_failed_logins_rate_limited_per_account(engine: str, pg: PostgresServer | None,
                                                ) -> None:
    hs = launch_server(engine, pg, extra={"rc_login": {
        "address": {"per_second": 1000, "burst_count": 1000},
        "account": {"per_second": 1000, "burst_count": 1000},
        "failed_attempts": {"per_second": 0.01, "burst_count": 2}}})
    try:
        victim, bystander = fresh("victim"), fresh("bystander")
        hs.register(victim)
        hs.register(bystander)

        def attempt(user: str, password: str) -> tuple[int, Any]:
            return hs.request("POST", f"{V3}/login", {
                "type": "m.login.password", "user": user, "password": password})

        assert_error(attempt(victim, "guess1"), 403, "M_FORBIDDEN")
        assert_error(attempt(victim, "guess2"), 403, "M_FORBIDDEN")
        body = assert_error(attempt(victim, PASSWORD), 429, "M_LIMIT_EXCEEDED")
        assert body["retry_after_ms"] > 0
        assert attempt(bystander, PASSWORD)[0] == 200
    finally:
        stop(hs)


# -- CORS -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [f"{V3}/login", f"{V3}/account/whoami", "/nowhere",
                                  "/_matrix/client/versions"])
def test_options_preflight(hs: ServerProcess, path: str) -> None:
    status, headers, _ = raw_request(hs, "OPTIONS", path, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type"})
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "*"
    methods = {m.strip() for m in headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "PUT", "DELETE", "OPTIONS"} <= methods
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-requested-with"} <= allowed


def test_cors_headers_on_answers_and_errors(hs: ServerProcess) -> None:
    for method, path in (("GET", "/_matrix/client/versions"), ("GET", f"{V3}/account/whoami"),
                         ("GET", "/nowhere"), ("POST", f"{V3}/login")):
        status, headers, body = raw_request(hs, method, path,
                                            b"nope" if method == "POST" else None)
        assert headers.get("Access-Control-Allow-Origin") == "*", (method, path, status)
        assert headers.get("Content-Type", "").startswith("application/json")
        json.loads(body)


# -- failed requests change nothing -------------------------------------------------------

def test_failed_registration_creates_no_user(hs: ServerProcess) -> None:
    name = fresh("fail")
    # the auth challenge creates nothing
    assert hs.request("POST", f"{V3}/register", {"username": name, "password": "pw"})[0] == 401
    assert user_count_probe(hs, name)
    # bad bodies create nothing
    assert hs.request("POST", f"{V3}/register", raw=b'{"username": "' + name.encode())[0] == 400
    assert hs.request("POST", f"{V3}/register", {
        "username": name, "password": 12345, "auth": {"type": "m.login.dummy"}})[0] == 400
    assert hs.request("POST", f"{V3}/register", {
        "username": name, "password": "pw", "device_id": ["x"],
        "auth": {"type": "m.login.dummy"}})[0] == 400
    assert user_count_probe(hs, name)
    # an invalid username creates nothing either
    bad = name + " with spaces"
    assert_error(hs.request("POST", f"{V3}/register", {
        "username": bad, "password": "pw", "auth": {"type": "m.login.dummy"}}),
        400, "M_INVALID_USERNAME")
    assert_error(hs.request("POST", f"{V3}/login", {
        "type": "m.login.password", "user": name, "password": "pw"}), 403, "M_FORBIDDEN")


def test_failed_login_creates_no_device(hs: ServerProcess) -> None:
    name = fresh("nodev")
    session = hs.register(name)
    token = session["access_token"]
    for body in ({"type": "m.login.password", "user": name, "password": "wrong",
                  "device_id": "SNEAKY"},
                 {"type": "m.login.password", "user": name, "device_id": "SNEAKY"},
                 {"type": "m.login.password", "user": name, "password": PASSWORD,
                  "device_id": 7}):
        assert hs.request("POST", f"{V3}/login", body)[0] in (400, 403)
    status, devices = hs.request("GET", f"{V3}/devices", token=token)
    assert status == 200
    assert [d["device_id"] for d in devices["devices"]] == [session["device_id"]]


def test_failed_uia_deletes_nothing(hs: ServerProcess) -> None:
    name = fresh("keep")
    session = hs.register(name)
    token = session["access_token"]
    device = session["device_id"]
    for body in ({}, {"auth": {"type": "m.login.password", "user": name, "password": "no"}},
                 {"auth": {"type": "m.login.email.identity"}}):
        assert hs.request("DELETE", f"{V3}/devices/{device}", body, token=token)[0] == 401
        assert hs.request("POST", f"{V3}/account/deactivate", body, token=token)[0] == 401
    assert hs.request("GET", f"{V3}/account/whoami", token=token)[0] == 200
    assert hs.request("GET", f"{V3}/devices/{device}", token=token)[0] == 200


# -- server keys and health ---------------------------------------------------------------

def test_server_keys_are_signed(hs: ServerProcess) -> None:
    with open(os.path.join(hs.workdir, "signing.key")) as f:
        (signing_key,) = read_signing_keys(f)
    key_id = f"{signing_key.alg}:{signing_key.version}"
    for path in ("/_matrix/key/v2/server", f"/_matrix/key/v2/server/{key_id}"):
        status, body = hs.request("GET", path)
        assert status == 200, body
        assert body["server_name"] == hs.server_name
        assert body["valid_until_ts"] > time.time() * 1000
        assert set(body["verify_keys"]) == {key_id}
        published = decode_verify_key_bytes(
            key_id, decode_base64(body["verify_keys"][key_id]["key"]))
        assert published.encode() == signing_key.verify_key.encode()
        verify_signed_json(body, hs.server_name, published)
        # a tampered document does not verify
        tampered = {**body, "valid_until_ts": body["valid_until_ts"] + 1}
        with pytest.raises(SignatureVerifyException):
            verify_signed_json(tampered, hs.server_name, published)


def test_health(hs: ServerProcess) -> None:
    status, headers, body = raw_request(hs, "GET", "/health")
    assert status == 200
    assert body == b"OK"
    assert headers["Content-Type"].startswith("text/plain")
