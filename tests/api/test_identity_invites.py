"""Inviting by email through an identity server (a fake one on loopback, over
TLS), on both engines: a bound address invites its user; an unbound one
leaves an m.room.third_party_invite; createRoom's invite_3pid does both; a
token the identity server refuses (or none) changes nothing."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.rooms_support import Api, User, q
from tests.api.test_sync import new_user
from tests.support.federation import federation_settings, local_ca
from tests.support.identity_server import PEPPER, FakeIdentityServer
from tests.support.postgres import PostgresServer
from tests.support.server import ServerProcess, http, launch_server

_ids = itertools.count()


@pytest.fixture(scope="module")
def ids() -> Iterator[FakeIdentityServer]:
    server = FakeIdentityServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def hs(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    pg: PostgresServer | None = (request.getfixturevalue("postgres_server")
                                 if request.param == "postgres" else None)
    proc = launch_server(request.param, pg, federation_settings(local_ca()))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def api(hs: ServerProcess) -> Api:
    return Api(hs)


def address() -> str:
    return f"someone{next(_ids)}@example.org"


def invite_body(ids: FakeIdentityServer, email: str, token: str | None = None,
                ) -> dict[str, Any]:
    body = {"id_server": ids.id_server, "medium": "email", "address": email,
            "id_access_token": token or ids.access_token}
    return body


def third_party_invites(user: User, room_id: str) -> dict[str, dict[str, Any]]:
    return {e["state_key"]: e["content"] for e in user.ok("GET", f"/rooms/{q(room_id)}/state")
            if e["type"] == "m.room.third_party_invite"}


def test_bound_address_invites_its_user(api: Api, ids: FakeIdentityServer) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    email = address()
    ids.bindings[("email", email)] = bob.user_id
    room_id = alice.create_room()
    alice.ok("POST", f"/rooms/{q(room_id)}/invite", invite_body(ids, email))
    assert alice.membership(room_id, bob.user_id) == "invite"
    # The lookup was hashed with the identity server's pepper.
    last = ids.lookups[-1]
    assert last["algorithm"] == "sha256" and last["pepper"] == PEPPER
    assert email not in str(last["addresses"])
    assert third_party_invites(alice, room_id) == {}
    bob.join(room_id)
    assert alice.membership(room_id, bob.user_id) == "join"


def test_unbound_address_leaves_a_third_party_invite(api: Api,
                                                     ids: FakeIdentityServer) -> None:
    alice = new_user(api, "alice")
    alice.ok("PUT", f"/profile/{q(alice.user_id)}/displayname", {"displayname": "Alice"})
    room_id = alice.create_room(name="Book Club")
    email = address()
    alice.ok("POST", f"/rooms/{q(room_id)}/invite", invite_body(ids, email))
    stored = ids.stored[-1]
    assert stored["address"] == email and stored["medium"] == "email"
    assert stored["room_id"] == room_id and stored["sender"] == alice.user_id
    assert stored["room_name"] == "Book Club" and stored["sender_display_name"] == "Alice"
    invites = third_party_invites(alice, room_id)
    assert len(invites) == 1
    (content,) = invites.values()
    assert content["display_name"] == email[:3] + "..."
    assert content["public_key"] == ids.public_key
    assert content["key_validity_url"].endswith("/_matrix/identity/v2/pubkey/isvalid")
    assert content["public_keys"] == [{"public_key": content["public_key"],
                                       "key_validity_url": content["key_validity_url"]}]


def test_create_room_with_invite_3pid(api: Api, ids: FakeIdentityServer) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    bound, unbound = address(), address()
    ids.bindings[("email", bound)] = bob.user_id
    room_id = alice.create_room(invite_3pid=[invite_body(ids, bound),
                                             invite_body(ids, unbound)])
    assert alice.membership(room_id, bob.user_id) == "invite"
    assert ids.stored[-1]["address"] == unbound
    assert len(third_party_invites(alice, room_id)) == 1


def test_refused_or_missing_token_changes_nothing(api: Api, ids: FakeIdentityServer) -> None:
    alice = new_user(api, "alice")
    room_id = alice.create_room()
    email = address()
    stored_before = len(ids.stored)
    alice.err("POST", f"/rooms/{q(room_id)}/invite", invite_body(ids, email, "wrong"),
              status=400, errcode="M_SERVER_NOT_TRUSTED")
    no_token = {k: v for k, v in invite_body(ids, email).items() if k != "id_access_token"}
    alice.err("POST", f"/rooms/{q(room_id)}/invite", no_token, status=400,
              errcode="M_SERVER_NOT_TRUSTED")
    assert third_party_invites(alice, room_id) == {}
    rooms_before = api.count_rooms()
    alice.err("POST", "/createRoom", {"invite_3pid": [invite_body(ids, email, "wrong")]},
              status=400, errcode="M_SERVER_NOT_TRUSTED")
    assert api.count_rooms() == rooms_before
    assert len(ids.stored) == stored_before
    # An id_server that is not a host name is refused as a bad parameter.
    bad = {**invite_body(ids, email), "id_server": "localhost/evil?x="}
    alice.err("POST", f"/rooms/{q(room_id)}/invite", bad, status=400,
              errcode="M_INVALID_PARAM")


def test_bind_then_unbind_through_the_homeserver(api: Api, ids: FakeIdentityServer) -> None:
    alice = new_user(api, "alice")
    email = address()
    sid = f"sid{next(_ids)}"
    bind = {"sid": sid, "client_secret": "secret", "id_server": ids.id_server,
            "id_access_token": ids.access_token}
    # A session the identity server has not validated binds nothing.
    alice.err("POST", "/account/3pid/bind", bind, status=400, errcode="M_SERVER_NOT_TRUSTED")
    assert ("email", email) not in ids.bindings
    ids.validated[sid] = ("email", email)
    alice.ok("POST", "/account/3pid/bind", bind)
    assert ids.bindings[("email", email)] == alice.user_id
    # Unbinding without naming the server asks the one it was bound on, signed.
    out = alice.ok("POST", "/account/3pid/unbind", {"medium": "email", "address": email})
    assert out == {"id_server_unbind_result": "success"}
    assert ("email", email) not in ids.bindings
    body, authorization = ids.unbinds[-1]
    assert body["mxid"] == alice.user_id and body["threepid"] == {"medium": "email",
                                                                  "address": email}
    assert authorization.startswith("X-Matrix origin=")
    # Nothing left to unbind.
    out = alice.ok("POST", "/account/3pid/unbind", {"medium": "email", "address": email})
    assert out == {"id_server_unbind_result": "no-support"}


def test_deactivation_unbinds(api: Api, ids: FakeIdentityServer) -> None:
    alice = new_user(api, "alice")
    email, sid = address(), f"sid{next(_ids)}"
    ids.validated[sid] = ("email", email)
    alice.ok("POST", "/account/3pid/bind", {"sid": sid, "client_secret": "secret",
                                            "id_server": ids.id_server,
                                            "id_access_token": ids.access_token})
    out = alice.ok("POST", "/account/deactivate", {"auth": {
        "type": "m.login.password", "password": "correct horse",
        "identifier": {"type": "m.id.user", "user": alice.user_id}}})
    assert out == {"id_server_unbind_result": "success"}
    assert ("email", email) not in ids.bindings


def _bind_and_notify(hs: ServerProcess, ids: FakeIdentityServer, email: str, room_id: str,
                     inviter: User, invitee: User) -> tuple[int, Any]:
    """What an identity server does once ``email`` is bound to ``invitee``."""
    (token,) = third_party_invites(inviter, room_id)
    invite = {"medium": "email", "address": email, "mxid": invitee.user_id,
              "room_id": room_id, "sender": inviter.user_id,
              "signed": ids.signed_invite(token, invitee.user_id)}
    return http("POST", hs.url("/_matrix/federation/v1/3pid/onbind"),
                {"medium": "email", "address": email, "mxid": invitee.user_id,
                 "invites": [invite]})


def test_binding_the_address_turns_the_invite_into_an_invite_of_its_user(
        hs: ServerProcess, api: Api, ids: FakeIdentityServer) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = alice.create_room(preset="private_chat")
    email = address()
    alice.ok("POST", f"/rooms/{q(room_id)}/invite", invite_body(ids, email))
    status, _ = _bind_and_notify(hs, ids, email, room_id, alice, bob)
    assert status == 200
    member = alice.ok("GET", f"/rooms/{q(room_id)}/state/m.room.member/{q(bob.user_id)}")
    assert member["membership"] == "invite"
    assert member["third_party_invite"]["signed"]["mxid"] == bob.user_id
    bob.ok("POST", f"/rooms/{q(room_id)}/join", {})
    assert room_id in bob.ok("GET", "/joined_rooms")["joined_rooms"]


def test_a_revoked_identity_server_key_invites_nobody(
        hs: ServerProcess, api: Api, ids: FakeIdentityServer) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = alice.create_room(preset="private_chat")
    email = address()
    alice.ok("POST", f"/rooms/{q(room_id)}/invite", invite_body(ids, email))
    ids.revoked.add(ids.public_key)
    try:
        status, _ = _bind_and_notify(hs, ids, email, room_id, alice, bob)
    finally:
        ids.revoked.clear()
    assert status == 200  # the identity server cannot act on a refusal
    status, _ = http("GET", hs.url(f"/_matrix/client/v3/rooms/{q(room_id)}/state/"
                                   f"m.room.member/{q(bob.user_id)}"),
                     token=alice.token)
    assert status == 404
    status, body = http("POST", hs.url(f"/_matrix/client/v3/rooms/{q(room_id)}/join"), {},
                        token=bob.token)
    assert status == 403, body


def test_join_with_third_party_signed(hs: ServerProcess, api: Api,
                                      ids: FakeIdentityServer) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room_id = alice.create_room(preset="private_chat")
    alice.ok("POST", f"/rooms/{q(room_id)}/invite", invite_body(ids, address()))
    (token,) = third_party_invites(alice, room_id)
    forged = ids.signed_invite(token, bob.user_id, sender=alice.user_id)
    forged["display_name"] = "Mallory"  # the signature no longer covers the block
    status, body = http("POST", hs.url(f"/_matrix/client/v3/rooms/{q(room_id)}/join"),
                        {"third_party_signed": forged}, token=bob.token)
    assert status == 403, body
    assert room_id not in bob.ok("GET", "/joined_rooms")["joined_rooms"]
    signed = ids.signed_invite(token, bob.user_id, sender=alice.user_id)
    bob.ok("POST", f"/rooms/{q(room_id)}/join", {"third_party_signed": signed})
    assert room_id in bob.ok("GET", "/joined_rooms")["joined_rooms"]
