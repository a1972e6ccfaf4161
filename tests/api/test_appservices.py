"""Application services with a real bridge framework: mautrix-python's
``AppService`` on loopback (tests/support/appservice_bridge.py), registered
through ``app_service_config_files``. Tests assert what a bridge would
notice: its puppets register and act, the room's events arrive in order,
queries create users and rooms, typing arrives as ephemeral data, and a
backlog built while it was down arrives in order, once, even across a
homeserver restart.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterator

import pytest
from mautrix.errors import MForbidden
from mautrix.types import RoomID

from tests.support.appservice_bridge import (
    AS_TOKEN,
    PUPPET_PREFIX,
    Bridge,
    puppet,
    write_registration,
)
from tests.support.client import V3, LoggedIn
from tests.support.postgres import free_port
from tests.support.server import SERVER_NAME, ServerProcess, launch_server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def setup(request: pytest.FixtureRequest) -> Iterator[tuple[ServerProcess, Bridge]]:
    pg = request.getfixturevalue("postgres_server") if request.param == "postgres" else None
    workdir = tempfile.mkdtemp(prefix="myelin-as-")
    port = free_port()
    path = write_registration(workdir, port)
    # Strict message limits: the bridge (rate_limited: false) is not held to them.
    hs = launch_server(request.param, pg, {
        "app_service_config_files": [path],
        "rc_message": {"per_second": 0.01, "burst_count": 3},
        "rc_joins": {"local": {"per_second": 0.01, "burst_count": 2}}})
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
    # Nor to rc_joins (2 here): the puppet joins more rooms than that.
    for _ in range(3):
        other = alice.room(preset="private_chat", invite=[ghost])
        bridge.run(bridge.intent(ghost).ensure_joined(RoomID(other)))
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
    # Read receipts and presence too.
    alice.ok("POST", f"/rooms/{q(room)}/receipt/m.read/{q(sent[-1])}", {})
    assert bridge.wait_for(lambda: [e for e in bridge.ephemeral
                                    if e["type"] == "m.receipt" and e.get("room_id") == room
                                    and alice.user_id in e["content"].get(sent[-1], {})
                                    .get("m.read", {})])
    alice.ok("PUT", f"/presence/{q(alice.user_id)}/status",
             {"presence": "online", "status_msg": "bridging"})
    assert bridge.wait_for(lambda: [e for e in bridge.ephemeral
                                    if e["type"] == "m.presence"
                                    and e.get("sender") == alice.user_id
                                    and e["content"].get("status_msg") == "bridging"])


def test_to_device_messages_for_puppets_reach_the_bridge(
        setup: tuple[ServerProcess, Bridge]) -> None:
    hs, bridge = setup
    gina = LoggedIn.new(hs, name="gina")
    ghost = puppet("gina")
    bridge.run(bridge.intent(ghost).ensure_registered())
    status, login = hs.request("POST", V3 + "/login", {
        "type": "m.login.application_service", "device_id": "PUPPETDEV",
        "identifier": {"type": "m.id.user", "user": ghost}}, token=AS_TOKEN)
    assert status == 200, login
    # The service may act as that device of its puppet, and no other.
    status, out = hs.request("GET", V3 + f"/account/whoami?user_id={q(ghost)}"
                             "&device_id=PUPPETDEV", token=AS_TOKEN)
    assert status == 200 and out["device_id"] == "PUPPETDEV", out
    status, out = hs.request("GET", V3 + f"/account/whoami?user_id={q(ghost)}"
                             "&device_id=NOSUCHDEV", token=AS_TOKEN)
    assert status == 400, out
    gina.ok("PUT", "/sendToDevice/org.example.ping/td1",
            {"messages": {ghost: {"PUPPETDEV": {"n": 1}}}})
    got = bridge.wait_for(lambda: [e for e in bridge.to_device
                                   if e.get("to_user_id") == ghost])
    assert got[0]["to_device_id"] == "PUPPETDEV" and got[0]["sender"] == gina.user_id
    assert got[0]["type"] == "org.example.ping" and got[0]["content"] == {"n": 1}


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
