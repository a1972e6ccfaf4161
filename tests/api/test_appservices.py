"""Application services with a real bridge framework: mautrix-python's
``AppService`` on loopback, registered through ``app_service_config_files``.

The bridge runs its own event loop in a thread (it must answer the
homeserver's queries while a test waits on a blocking HTTP call). It
records what its transactions carried; tests assert what a bridge would
notice: its puppets register and act, the room's events arrive in order,
queries create users and rooms, typing arrives as ephemeral data, and a
backlog built while it was down arrives in order, once, even across a
homeserver restart.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import yaml
from aiohttp import web
from mautrix.appservice import AppService
from mautrix.appservice.state_store import FileASStateStore
from mautrix.errors import MForbidden
from mautrix.types import Event, RoomCreatePreset, RoomID, UserID

from tests.support.client import V3, LoggedIn
from tests.support.postgres import free_port
from tests.support.server import SERVER_NAME, ServerProcess, launch_server

AS_TOKEN = "as-token-of-the-test-bridge"
HS_TOKEN = "hs-token-of-the-test-bridge"
PUPPET_PREFIX = "_bridge_"


def puppet(name: str) -> str:
    return f"@{PUPPET_PREFIX}{name}:{SERVER_NAME}"


class Bridge:
    """A mautrix AppService in a thread of its own, recording what it receives."""

    def __init__(self, hs_url: str, port: int, workdir: str) -> None:
        self.hs_url, self.port, self.workdir = hs_url, port, workdir
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []  # room events, in arrival order
        self.ephemeral: list[dict[str, Any]] = []
        self.queried_users: list[str] = []
        self.queried_aliases: list[str] = []
        self.known_puppets: set[str] = set()  # the users query_user creates
        self.appserv: AppService | None = None

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def start(self) -> None:
        self.run(self._start())

    def stop(self) -> None:
        self.run(self._stop())

    async def _start(self) -> None:
        appserv = AppService(
            server=self.hs_url, domain=SERVER_NAME, as_token=AS_TOKEN, hs_token=HS_TOKEN,
            bot_localpart="bridgebot", id="testbridge", loop=self.loop,
            query_user=self._query_user, query_alias=self._query_alias,
            state_store=FileASStateStore(os.path.join(self.workdir, "mx-state.json"),
                                         binary=False),
            ephemeral_events=True)
        appserv.synchronous_handlers = True  # record in delivery order
        appserv.matrix_event_handler(self._on_event)
        appserv.app.router.add_get("/_matrix/app/v1/thirdparty/protocol/{protocol}",
                                   self._protocol)
        appserv.app.router.add_get("/_matrix/app/v1/thirdparty/user/{protocol}",
                                   self._thirdparty_user)
        await appserv.start("127.0.0.1", self.port)
        self.appserv = appserv

    async def _stop(self) -> None:
        if self.appserv is not None:
            await self.appserv.stop()
            self.appserv = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    # -- what the homeserver calls --------------------------------------------
    async def _on_event(self, event: Event) -> None:
        raw = event.serialize()
        with self.lock:
            if event.type.is_ephemeral:
                self.ephemeral.append(raw)
            else:
                self.events.append(raw)

    async def _query_user(self, user_id: UserID) -> dict[str, Any] | None:
        self.queried_users.append(user_id)
        if user_id not in self.known_puppets:
            return None
        assert self.appserv is not None
        await self.appserv.intent.user(user_id).ensure_registered()
        return {"created": True}  # mautrix answers 404 for an empty (falsy) answer

    async def _query_alias(self, alias: str) -> dict[str, Any] | None:
        self.queried_aliases.append(alias)
        if not alias.startswith(f"#{PUPPET_PREFIX}portal"):
            return None
        assert self.appserv is not None
        localpart = alias[1:].split(":", 1)[0]
        await self.appserv.intent.create_room(alias_localpart=localpart, is_direct=False,
                                              preset=RoomCreatePreset.PUBLIC)
        return {"created": True}

    async def _protocol(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {HS_TOKEN}":
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        return web.json_response({
            "user_fields": ["username"], "location_fields": ["channel"], "icon": "mxc://x/y",
            "field_types": {"username": {"regexp": ".*", "placeholder": "name"},
                            "channel": {"regexp": ".*", "placeholder": "#chan"}},
            "instances": [{"network_id": "libera", "desc": "Libera", "fields": {}}]})

    async def _thirdparty_user(self, request: web.Request) -> web.Response:
        name = request.query.get("username", "")
        return web.json_response([{"userid": puppet(name), "protocol": "gitter",
                                   "fields": {"username": name}}])

    # -- helpers for the tests ------------------------------------------------------
    def intent(self, user_id: str) -> Any:
        assert self.appserv is not None
        return self.appserv.intent.user(UserID(user_id))

    def room_events(self, room_id: str, etype: str = "m.room.message") -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e.get("room_id") == room_id and e["type"] == etype]

    def wait_for(self, what: Callable[[], Any], timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = what()
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError("the bridge never saw it")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def setup(request: pytest.FixtureRequest) -> Iterator[tuple[ServerProcess, Bridge]]:
    pg = request.getfixturevalue("postgres_server") if request.param == "postgres" else None
    workdir = tempfile.mkdtemp(prefix="myelin-as-")
    port = free_port()
    registration = {
        "id": "testbridge", "url": f"http://127.0.0.1:{port}",
        "as_token": AS_TOKEN, "hs_token": HS_TOKEN, "sender_localpart": "bridgebot",
        "namespaces": {
            "users": [{"exclusive": True, "regex": f"@{PUPPET_PREFIX}.*:{SERVER_NAME}"}],
            "aliases": [{"exclusive": True, "regex": f"#{PUPPET_PREFIX}.*:{SERVER_NAME}"}],
            "rooms": []},
        "rate_limited": False, "receive_ephemeral": True,
        "de.sorunome.msc2409.push_ephemeral": True, "protocols": ["gitter"],
    }
    path = os.path.join(workdir, "bridge.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(registration, f)
    # Strict message limits: the bridge (rate_limited: false) is not held to them.
    hs = launch_server(request.param, pg, {
        "app_service_config_files": [path],
        "rc_message": {"per_second": 0.01, "burst_count": 3}})
    bridge = Bridge(hs.base_url, port, workdir)
    bridge.start()
    try:
        yield hs, bridge
    finally:
        bridge.close()
        code = hs.stop()
        if code not in (0, None):
            print(hs.log())
        shutil.rmtree(hs.workdir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def test_puppets_register_send_and_the_room_arrives_in_order(
        setup: tuple[ServerProcess, Bridge]) -> None:
    hs, bridge = setup
    alice = LoggedIn.new(hs, name="alice")
    ghost = puppet("alice")
    bridge.run(bridge.intent(ghost).ensure_registered())
    room = alice.room(preset="private_chat", invite=[ghost])
    bridge.run(bridge.intent(ghost).ensure_joined(RoomID(room)))
    # Ordinary users are rate limited to 3 messages; the bridge is not.
    for n in range(3):
        alice.ok("PUT", f"/rooms/{q(room)}/send/m.room.message/a{n}",
                 {"msgtype": "m.text", "body": f"alice {n}"})
    sent = [bridge.run(bridge.intent(ghost).send_text(RoomID(room), f"ghost {n}"))
            for n in range(6)]
    # What the bridge sent is in the room, from the puppet (masquerading).
    messages = alice.ok("GET", f"/rooms/{q(room)}/messages?dir=b&limit=20")["chunk"]
    by_id = {e["event_id"]: e for e in messages}
    assert all(by_id[e]["sender"] == ghost for e in sent)
    # The bridge received every message of the room, in order (its own too).
    expected = [f"alice {n}" for n in range(3)] + [f"ghost {n}" for n in range(6)]
    got = bridge.wait_for(lambda: len(bridge.room_events(room)) >= 9 and
                          bridge.room_events(room))
    assert [e["content"]["body"] for e in got] == expected
    members = [(e["state_key"], e["content"]["membership"])
               for e in bridge.room_events(room, "m.room.member")]
    assert members == [(ghost, "invite"), (ghost, "join")]
    # A puppet's typing arrives as ephemeral data.
    alice.ok("PUT", f"/rooms/{q(room)}/typing/{q(alice.user_id)}",
             {"typing": True, "timeout": 30000})
    typing = bridge.wait_for(lambda: [e for e in bridge.ephemeral
                                      if e["type"] == "m.typing" and e.get("room_id") == room
                                      and alice.user_id in e["content"]["user_ids"]])
    assert typing


def test_an_ordinary_user_cannot_enter_the_exclusive_namespace(
        setup: tuple[ServerProcess, Bridge]) -> None:
    hs, bridge = setup
    body = {"username": f"{PUPPET_PREFIX}mallory", "password": "correct horse battery",
            "auth": {"type": "m.login.dummy"}}
    status, out = hs.request("POST", V3 + "/register", body)
    assert status == 400 and out["errcode"] == "M_EXCLUSIVE", out
    status, out = hs.request("GET", V3 + f"/register/available?username={PUPPET_PREFIX}m")
    assert status == 400 and out["errcode"] == "M_EXCLUSIVE", out
    # Nothing was created: the bridge may still register the name.
    bridge.run(bridge.intent(puppet("mallory")).ensure_registered())
    status, out = hs.request("GET", V3 + "/account/whoami?user_id=" + q(puppet("mallory")),
                             token=AS_TOKEN)
    assert status == 200 and out["user_id"] == puppet("mallory"), out
    # Nor an alias in the service's alias namespace.
    bob = LoggedIn.new(hs, name="bob")
    room = bob.room()
    bob.err("PUT", f"/directory/room/{q('#' + PUPPET_PREFIX + 'x:' + SERVER_NAME)}",
            {"room_id": room}, status=400, errcode="M_EXCLUSIVE")
    assert bob.ok("GET", f"/rooms/{q(room)}/aliases")["aliases"] == []


def test_as_token_masquerades_only_within_the_namespace(
        setup: tuple[ServerProcess, Bridge]) -> None:
    hs, _ = setup
    carol = LoggedIn.new(hs, name="carol")
    status, out = hs.request("GET", V3 + "/account/whoami?user_id=" + q(carol.user_id),
                             token=AS_TOKEN)
    assert status == 403 and out["errcode"] == "M_FORBIDDEN", out
    # A namespaced user the service never registered.
    status, out = hs.request("GET", V3 + "/account/whoami?user_id=" + q(puppet("nobody")),
                             token=AS_TOKEN)
    assert status == 403, out
    status, out = hs.request("GET", V3 + "/account/whoami", token=AS_TOKEN)
    assert status == 200 and out["user_id"] == f"@bridgebot:{SERVER_NAME}"
    # A registration without the appservice login type is refused.
    status, out = hs.request("POST", V3 + "/register", {"username": PUPPET_PREFIX + "z"},
                             token=AS_TOKEN)
    assert status == 400, out
    # The service registers only inside its namespace.
    status, out = hs.request("POST", V3 + "/register", {
        "username": "outsider", "type": "m.login.application_service"}, token=AS_TOKEN)
    assert status == 400 and out["errcode"] == "M_EXCLUSIVE", out
    # ... and logs in its users without a password.
    status, out = hs.request("POST", V3 + "/login", {
        "type": "m.login.application_service",
        "identifier": {"type": "m.id.user", "user": puppet("mallory")}}, token=AS_TOKEN)
    assert status == 200 and out["user_id"] == puppet("mallory"), out
    status, out = hs.request("GET", V3 + "/account/whoami", token=out["access_token"])
    assert status == 200 and out["user_id"] == puppet("mallory")


def test_unknown_users_and_aliases_are_queried(setup: tuple[ServerProcess, Bridge]) -> None:
    hs, bridge = setup
    dave = LoggedIn.new(hs, name="dave")
    known = puppet("dave_friend")
    bridge.known_puppets.add(known)
    # A profile lookup makes the bridge create the user.
    profile = dave.ok("GET", f"/profile/{q(known)}")
    assert known in bridge.queried_users and "displayname" in profile
    # An invite to a puppet the bridge does not know fails; to one it knows, works.
    room = dave.room()
    dave.err("POST", f"/rooms/{q(room)}/invite", {"user_id": puppet("stranger")},
             status=404)
    assert puppet("stranger") in bridge.queried_users
    second = puppet("dave_other")
    bridge.known_puppets.add(second)
    dave.ok("POST", f"/rooms/{q(room)}/invite", {"user_id": second})
    # createRoom's invitees too.
    third = puppet("dave_third")
    bridge.known_puppets.add(third)
    dave.room(invite=[third])
    assert third in bridge.queried_users
    # Joining an unknown alias of the namespace: the bridge makes the portal room.
    alias = f"#{PUPPET_PREFIX}portal_1:{SERVER_NAME}"
    joined = dave.ok("POST", f"/join/{q(alias)}", {})
    assert alias in bridge.queried_aliases
    assert dave.ok("GET", f"/directory/room/{q(alias)}")["room_id"] == joined["room_id"]
    dave.err("GET", f"/directory/room/{q('#' + PUPPET_PREFIX + 'nothing:' + SERVER_NAME)}",
             status=404, errcode="M_NOT_FOUND")


def test_ping_thirdparty_and_network_directory(setup: tuple[ServerProcess, Bridge]) -> None:
    hs, bridge = setup
    assert bridge.appserv is not None
    duration = bridge.run(bridge.appserv.ping_self("ping-1"))
    assert isinstance(duration, int) and duration >= 0
    erin = LoggedIn.new(hs, name="erin")
    status, out = hs.request("POST", "/_matrix/client/v1/appservice/testbridge/ping", {},
                             token=erin.token)
    assert status == 403 and out["errcode"] == "M_FORBIDDEN"
    with pytest.raises(MForbidden):
        bridge.run(bridge.appserv.intent.appservice_ping("otherbridge"))
    # Third-party protocols come from the bridge.
    protocols = erin.ok("GET", "/thirdparty/protocols")
    assert list(protocols) == ["gitter"]
    instance = protocols["gitter"]["instances"][0]
    assert instance["network_id"] == "libera" and instance["instance_id"]
    users = erin.ok("GET", "/thirdparty/user/gitter?username=zed")
    assert users == [{"userid": puppet("zed"), "protocol": "gitter",
                      "fields": {"username": "zed"}}]
    erin.err("GET", "/thirdparty/protocol/irc", status=404)
    # The bridge publishes a room in its network's directory.
    room = erin.room()
    status, out = hs.request("PUT", V3 + f"/directory/list/appservice/libera/{q(room)}",
                             {"visibility": "public"}, token=AS_TOKEN)
    assert status == 200, out
    erin.err("PUT", f"/directory/list/appservice/libera/{q(room)}", {"visibility": "public"},
             status=403, errcode="M_FORBIDDEN")
    network = erin.ok("POST", "/publicRooms",
                      {"third_party_instance_id": instance["instance_id"]})
    assert [r["room_id"] for r in network["chunk"]] == [room]
    everything = erin.ok("POST", "/publicRooms", {"include_all_networks": True})
    assert room in [r["room_id"] for r in everything["chunk"]]
    assert room not in [r["room_id"] for r in erin.ok("POST", "/publicRooms", {})["chunk"]]


def test_backlog_while_down_arrives_in_order_once(setup: tuple[ServerProcess, Bridge]) -> None:
    hs, bridge = setup
    frank = LoggedIn.new(hs, name="frank")
    ghost = puppet("frank")
    bridge.run(bridge.intent(ghost).ensure_registered())
    room = frank.room(invite=[ghost])
    bridge.run(bridge.intent(ghost).ensure_joined(RoomID(room)))
    bridge.wait_for(lambda: [e for e in bridge.room_events(room, "m.room.member")
                             if e["state_key"] == ghost
                             and e["content"]["membership"] == "join"])
    bridge.stop()
    sent = []
    for n in range(3):
        sent.append(frank.ok("PUT", f"/rooms/{q(room)}/send/m.room.message/down{n}",
                             {"msgtype": "m.text", "body": f"while down {n}"})["event_id"])
    # The homeserver restarts while the bridge is still down: nothing is lost.
    hs.restart()
    bridge.start()
    got = bridge.wait_for(lambda: len(bridge.room_events(room)) >= 3 and
                          bridge.room_events(room))
    assert [e["event_id"] for e in got] == sent
    # Nothing comes twice: another message arrives after them, alone.
    later = frank.ok("PUT", f"/rooms/{q(room)}/send/m.room.message/up",
                     {"msgtype": "m.text", "body": "back up"})["event_id"]
    got = bridge.wait_for(lambda: len(bridge.room_events(room)) >= 4 and
                          bridge.room_events(room))
    time.sleep(1.0)
    assert [e["event_id"] for e in bridge.room_events(room)] == [*sent, later]
