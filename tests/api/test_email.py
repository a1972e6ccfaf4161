"""Email, on both engines, against an SMTP sink: validating an address through
the emailed link (adding it, registering with it, resetting a password),
and notification mails for unread messages with an unsubscribe link that
stops them."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.api.rooms_support import Api, User
from tests.api.test_sync import room_with
from tests.support.postgres import PostgresServer
from tests.support.server import ServerProcess, http, launch_server
from tests.support.smtp import SmtpSink, html_of, links_in, text_of

PASSWORD = "correct horse"
_ids = itertools.count()


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def hs(request: pytest.FixtureRequest, smtp: SmtpSink) -> Iterator[ServerProcess]:
    pg: PostgresServer | None = (request.getfixturevalue("postgres_server")
                                 if request.param == "postgres" else None)
    proc = launch_server(request.param, pg, {"email": {
        "smtp_host": "127.0.0.1", "smtp_port": smtp.port, "enable_tls": False,
        "notif_from": "%(app)s <noreply@test>", "app_name": "Myelin Test",
        "enable_notifs": True, "notif_delay_before_mail": 500,
        "client_base_url": "https://client.example"}})
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def api(hs: ServerProcess) -> Api:
    return Api(hs)


def fresh(prefix: str) -> str:
    return f"{prefix}{next(_ids)}_{time.monotonic_ns() % 1_000_000}"


def request_token(api: Api, path: str, address: str, send_attempt: int = 1,
                  secret: str | None = None, token: str | None = None) -> tuple[str, str]:
    client_secret = secret or fresh("secret")
    status, body = api.request("POST", f"/_matrix/client/v3{path}/email/requestToken",
                               {"client_secret": client_secret, "email": address,
                                "send_attempt": send_attempt}, token)
    assert status == 200, body
    return body["sid"], client_secret


def follow(hs: ServerProcess, link: str, method: str = "GET") -> tuple[int, Any]:
    assert link.startswith(hs.base_url + "/"), link
    return http(method, link)


def validation_link(smtp: SmtpSink, address: str, index: int = 0) -> str:
    mail = smtp.wait(address, index + 1)[index]
    (link,) = [u for u in links_in(mail) if "submit_token" in u]
    return link


def add_email(api: Api, smtp: SmtpSink, user: User, address: str) -> None:
    sid, secret = request_token(api, "/account/3pid", address, token=user.token)
    status, _ = follow(api.server, validation_link(smtp, address))
    assert status == 200
    user.ok("POST", "/account/3pid/add", {
        "sid": sid, "client_secret": secret,
        "auth": {"type": "m.login.password", "password": PASSWORD,
                 "identifier": {"type": "m.id.user", "user": user.user_id}}})


def threepids(user: User) -> list[str]:
    return [t["address"] for t in user.ok("GET", "/account/3pid")["threepids"]]


def login(hs: ServerProcess, user_id: str, password: str) -> int:
    status, _ = hs.request("POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "password": password,
        "identifier": {"type": "m.id.user", "user": user_id}})
    return status


# -- validation ------------------------------------------------------------------------------
def test_adding_an_email_through_the_emailed_link(api: Api, smtp: SmtpSink) -> None:
    user = api.user(fresh("adder"))
    address = f"{fresh('adder')}@example.org"
    sid, secret = request_token(api, "/account/3pid", address, token=user.token)
    mail = smtp.wait(address)[0]
    assert mail["From"] == "Myelin Test <noreply@test>"
    assert "Myelin Test" in mail["Subject"]
    link = validation_link(smtp, address)
    assert urlsplit(link).path == "/_matrix/client/unstable/add_threepid/email/submit_token"
    assert parse_qs(urlsplit(link).query)["sid"] == [sid]
    assert "submit_token" in html_of(mail)
    # The same send_attempt again: the same session, no second mail.
    assert request_token(api, "/account/3pid", address, secret=secret,
                         token=user.token) == (sid, secret)
    auth = {"type": "m.login.password", "password": PASSWORD,
            "identifier": {"type": "m.id.user", "user": user.user_id}}
    # Not validated yet: refused, nothing added.
    user.err("POST", "/account/3pid/add", {"sid": sid, "client_secret": secret, "auth": auth},
             status=401, errcode="M_THREEPID_AUTH_FAILED")
    assert threepids(user) == []
    # A wrong token validates nothing.
    status, page = follow(api.server, link.replace("token=", "token=x"))
    assert status == 400 and "not found" in page
    user.err("POST", "/account/3pid/add", {"sid": sid, "client_secret": secret, "auth": auth},
             status=401, errcode="M_THREEPID_AUTH_FAILED")
    status, page = follow(api.server, link)
    assert status == 200 and "validated" in page
    user.ok("POST", "/account/3pid/add", {"sid": sid, "client_secret": secret, "auth": auth})
    assert threepids(user) == [address]
    assert len(smtp.to(address)) == 1
    # Another user cannot take the address with their own session.
    other = api.user(fresh("other"))
    status, body = api.request("POST", "/_matrix/client/v3/account/3pid/email/requestToken",
                               {"client_secret": "s3cret", "email": address,
                                "send_attempt": 1}, other.token)
    assert (status, body["errcode"]) == (400, "M_THREEPID_IN_USE")


def test_registering_with_an_email(api: Api, smtp: SmtpSink) -> None:
    address = f"{fresh('newbie')}@example.org"
    username = fresh("newbie")
    status, body = api.request("POST", "/_matrix/client/v3/register",
                               {"username": username, "password": PASSWORD})
    assert status == 401
    assert {"stages": ["m.login.email.identity"]} in body["flows"]
    session = body["session"]
    sid, secret = request_token(api, "/register", address)
    link = validation_link(smtp, address)
    assert urlsplit(link).path == "/_matrix/client/unstable/registration/email/submit_token"
    auth = {"type": "m.login.email.identity", "session": session,
            "threepid_creds": {"sid": sid, "client_secret": secret}}
    status, body = api.request("POST", "/_matrix/client/v3/register",
                               {"username": username, "password": PASSWORD, "auth": auth})
    assert (status, body.get("errcode")) == (401, "M_UNAUTHORIZED")
    assert follow(api.server, link)[0] == 200
    status, body = api.request("POST", "/_matrix/client/v3/register",
                               {"username": username, "password": PASSWORD, "auth": auth})
    assert status == 200, body
    user = User(api, body["user_id"], body["access_token"], body.get("device_id"))
    assert threepids(user) == [address]


def test_password_reset_by_email(api: Api, smtp: SmtpSink) -> None:
    user = api.user(fresh("forgetful"))
    address = f"{fresh('forgetful')}@example.org"
    add_email(api, smtp, user, address)
    sid, secret = request_token(api, "/account/password", address)
    link = validation_link(smtp, address, index=1)
    assert urlsplit(link).path == "/_synapse/client/password_reset/email/submit_token"
    reset = {"new_password": "new horse", "auth": {
        "type": "m.login.email.identity",
        "threepid_creds": {"sid": sid, "client_secret": secret}}}
    status, body = api.request("POST", "/_matrix/client/v3/account/password", reset)
    assert (status, body.get("errcode")) == (401, "M_UNAUTHORIZED")
    assert login(api.server, user.user_id, PASSWORD) == 200  # nothing changed
    assert follow(api.server, link)[0] == 200
    status, body = api.request("POST", "/_matrix/client/v3/account/password", reset)
    assert status == 200, body
    assert login(api.server, user.user_id, "new horse") == 200
    assert login(api.server, user.user_id, PASSWORD) == 403
    # The old sessions were logged out.
    user.err("GET", "/account/whoami", status=401, errcode="M_UNKNOWN_TOKEN")


def test_password_reset_for_an_unknown_address(api: Api) -> None:
    status, body = api.request("POST", "/_matrix/client/v3/account/password/email/requestToken",
                               {"client_secret": "abc", "email": "nobody@example.org",
                                "send_attempt": 1})
    assert (status, body["errcode"]) == (400, "M_THREEPID_NOT_FOUND")


# -- notification mails --------------------------------------------------------------------
def test_unread_messages_are_mailed_and_unsubscribe_stops_them(api: Api,
                                                              smtp: SmtpSink) -> None:
    alice, bob = api.user(fresh("alice")), api.user(fresh("bob"))
    first_address = f"{fresh('bob')}@example.org"
    second_address = f"{fresh('bob')}@example.org"
    add_email(api, smtp, bob, first_address)
    add_email(api, smtp, bob, second_address)
    pushers = bob.ok("GET", "/pushers")["pushers"]
    assert sorted((p["kind"], p["app_id"], p["pushkey"]) for p in pushers) == sorted(
        [("email", "m.email", first_address), ("email", "m.email", second_address)])
    room_id = room_with(alice, bob, name="Tea Room")
    alice.send(room_id, "the kettle is on")
    (mail,) = smtp.wait(first_address, 2)[1:]
    assert "Tea Room" in mail["Subject"]
    text = text_of(mail)
    assert "the kettle is on" in text and "https://client.example" in text
    assert "the kettle is on" in html_of(mail)
    (unsubscribe,) = [u for u in links_in(mail) if "unsubscribe" in u]
    assert mail["List-Unsubscribe"] == f"<{unsubscribe}>"
    # Opening the link only asks; a tampered link removes nothing.
    status, page = follow(api.server, unsubscribe)
    assert status == 200 and "<form" in page
    status, _ = follow(api.server, unsubscribe.replace("token=", "token=0"), "POST")
    assert status == 400
    assert len(bob.ok("GET", "/pushers")["pushers"]) == 2
    status, page = follow(api.server, unsubscribe, "POST")
    assert status == 200 and "no longer" in page
    assert [p["pushkey"] for p in bob.ok("GET", "/pushers")["pushers"]] == [second_address]
    smtp.wait(second_address, 2)
    alice.send(room_id, "biscuits?")
    later = smtp.wait(second_address, 3)[2]
    assert "biscuits?" in text_of(later)
    time.sleep(1.0)  # the unsubscribed pusher would have mailed by now
    assert len(smtp.to(first_address)) == 2


def test_removing_the_address_removes_its_pusher(api: Api, smtp: SmtpSink) -> None:
    user = api.user(fresh("leaver"))
    address = f"{fresh('leaver')}@example.org"
    add_email(api, smtp, user, address)
    assert [p["pushkey"] for p in user.ok("GET", "/pushers")["pushers"]] == [address]
    user.ok("POST", "/account/3pid/delete", {"medium": "email", "address": address})
    assert user.ok("GET", "/pushers")["pushers"] == []
