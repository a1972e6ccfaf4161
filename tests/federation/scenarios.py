"""The judged end-to-end federation scenarios, written once for every pair.

Each function takes the server hosting the room (``host``: its users create
rooms and hold the power) and the other one (``far``), any of a Myelin
monolith, a Myelin fleet or Synapse; the test modules call each one in both
directions. Users are fresh per scenario (:func:`unique` names), so
scenarios sharing a module's servers do not see each other's rooms.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

import yaml
from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    KeysClaimResponse,
    KeysQueryResponse,
    KeysUploadResponse,
    LoginResponse,
    MegolmEvent,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)
from signedjson.key import generate_signing_key

from tests.support.fed_client import (
    DEADLINE_S,
    FedUser,
    event_id_of,
    rows_mentioning,
    sign_request,
    signed_pdu,
    signing_key,
)

q = urllib.parse.quote


def tag() -> str:
    return uuid.uuid4().hex[:8]


@dataclass
class Shared:
    """A room on ``host`` that ``alice`` (of host) and ``bob`` (of far) are in."""

    host: Any
    far: Any
    alice: FedUser
    bob: FedUser
    room_id: str


def until(check: Any, what: str, deadline_s: float = DEADLINE_S) -> Any:
    """Poll ``check()`` until it returns something truthy; that value."""
    end = time.monotonic() + deadline_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not true after {deadline_s}s")
        time.sleep(0.3)


def state_content(user: FedUser, room_id: str, kind: str, state_key: str = "") -> Any:
    status, content = user.get_state(room_id, kind, state_key)
    return content if status == 200 else None


def join_public(host: Any, far: Any, name: str = "alice") -> Shared:
    """A public room on ``host``; a far user joins it by id through ``host``."""
    alice = FedUser.make(host, name)
    bob = FedUser.make(far, "bob")
    room = alice.create_room(preset="public_chat", name=f"public {tag()}")
    bob.catch_up()
    alice.catch_up()
    assert bob.join_remote(room, [host.server_name]) == room
    bob.wait_timeline(room, lambda e: e["type"] == "m.room.member"
                      and e.get("state_key") == bob.user_id, "my join")
    alice.wait_membership(room, bob.user_id, "join")
    return Shared(host, far, alice, bob, room)


# -- invite, join ------------------------------------------------------------------------

def invite_then_join(host: Any, far: Any) -> Shared:
    """A user on host makes a private room and invites one on far, who sees the
    invite (with the room's name) and joins it by id, without naming a server,
    as clients do after an invite."""
    alice = FedUser.make(host, "alice")
    bob = FedUser.make(far, "bob")
    bob.catch_up()
    name = f"private {tag()}"
    room = alice.create_room(preset="private_chat", name=name)
    alice.invite(room, bob.user_id)
    invite = bob.wait_invite(room)
    stripped = {(e["type"], e.get("state_key")): e for e in invite["invite_state"]["events"]}
    me = stripped[("m.room.member", bob.user_id)]
    assert me["content"]["membership"] == "invite" and me["sender"] == alice.user_id
    assert stripped[("m.room.name", "")]["content"]["name"] == name
    bob.ok("POST", f"/join/{q(room)}", {}, timeout=120)
    joined = bob.wait_timeline(room, lambda e: e["type"] == "m.room.member"
                               and e.get("state_key") == bob.user_id
                               and e["content"].get("membership") == "join", "my join")
    assert joined["sender"] == bob.user_id
    alice.wait_membership(room, bob.user_id, "join")
    assert state_content(bob, room, "m.room.name")["name"] == name
    expected = {alice.user_id: "join", bob.user_id: "join"}
    assert alice.members(room) == expected
    assert bob.members(room) == expected
    return Shared(host, far, alice, bob, room)


def shared_room(host: Any, far: Any) -> Shared:
    """The room the lighter scenarios share (made through the invite flow)."""
    return invite_then_join(host, far)


# -- messages ----------------------------------------------------------------------------

def messages_both_ways(s: Shared) -> None:
    """Bursts from each side, then interleaved sends: every message arrives on
    the other side exactly once, each sender's in the order sent, and both
    servers agree on the order of the bursts."""
    t = tag()
    from_host = [f"{t} host {i}" for i in range(12)]
    from_far = [f"{t} far {i}" for i in range(12)]
    for body in from_host:
        s.alice.send(s.room_id, body)
    s.bob.wait_bodies(s.room_id, from_host)
    for body in from_far:
        s.bob.send(s.room_id, body)
    s.alice.wait_bodies(s.room_id, from_far)
    mixed_host = [f"{t} mixed host {i}" for i in range(5)]
    mixed_far = [f"{t} mixed far {i}" for i in range(5)]
    for a, b in zip(mixed_host, mixed_far, strict=True):
        s.alice.send(s.room_id, a)
        s.bob.send(s.room_id, b)
    # A last message each way: whatever was going to arrive twice has by then.
    s.alice.send(s.room_id, f"{t} host last")
    s.bob.wait_bodies(s.room_id, [*mixed_host, f"{t} host last"])
    s.bob.send(s.room_id, f"{t} far last")
    s.alice.wait_bodies(s.room_id, [*mixed_far, f"{t} far last"])
    s.bob.wait_bodies(s.room_id, [f"{t} far last"])
    for user in (s.alice, s.bob):
        mine = [b for b in user.bodies(s.room_id) if b.startswith(t)]
        assert mine[:24] == from_host + from_far, (user.user_id, mine)
        assert len(mine) == len(set(mine)) == 36, (user.user_id, mine)
        assert [b for b in mine if " mixed host " in b] == mixed_host
        assert [b for b in mine if " mixed far " in b] == mixed_far
        history = [e["content"].get("body", "") for e in user.messages(s.room_id)
                   if e["type"] == "m.room.message"]
        history = [b for b in history if b.startswith(t)]
        assert history[:24] == from_host + from_far, (user.user_id, history)
        assert sorted(history) == sorted(mine)


# -- EDUs --------------------------------------------------------------------------------

def typing_crosses(s: Shared) -> None:
    for typer, watcher in ((s.bob, s.alice), (s.alice, s.bob)):
        watcher.catch_up()
        typer.typing(s.room_id, True)
        watcher.wait_ephemeral(s.room_id, "m.typing",
                               lambda e, u=typer.user_id: u in e["content"]["user_ids"],
                               f"{typer.user_id} typing")
        typer.typing(s.room_id, False)
        watcher.wait_ephemeral(s.room_id, "m.typing",
                               lambda e, u=typer.user_id: u not in e["content"]["user_ids"],
                               f"{typer.user_id} stopped typing")


def receipts_cross(s: Shared) -> None:
    for reader, writer in ((s.bob, s.alice), (s.alice, s.bob)):
        event_id = writer.send(s.room_id, f"read me {tag()}")
        reader.wait_timeline(s.room_id, lambda e, i=event_id: e["event_id"] == i)
        reader.receipt(s.room_id, event_id)
        writer.wait_ephemeral(
            s.room_id, "m.receipt",
            lambda e, i=event_id, u=reader.user_id: u in e["content"].get(i, {})
            .get("m.read", {}), f"{reader.user_id}'s receipt")


def presence_crosses(s: Shared) -> None:
    for user, watcher in ((s.bob, s.alice), (s.alice, s.bob)):
        status = f"busy {tag()}"
        watcher.catch_up()
        user.set_presence("online", status)
        watcher.wait(lambda rs, u=user.user_id, m=status: any(
            e.get("sender") == u and e["content"].get("status_msg") == m
            and e["content"].get("presence") == "online"
            for r in rs for e in r.get("presence", {}).get("events", [])),
            f"{user.user_id}'s presence")
        out = watcher.ok("GET", f"/presence/{q(user.user_id)}/status")
        assert out["presence"] == "online" and out.get("status_msg") == status


# -- state, profiles, aliases --------------------------------------------------------------

def state_crosses(s: Shared) -> None:
    topic = f"topic {tag()}"
    s.alice.put_state(s.room_id, "m.room.topic", {"topic": topic})
    until(lambda: (state_content(s.bob, s.room_id, "m.room.topic") or {}).get("topic") == topic,
          "the host's topic on far")
    # Give the far user power; then their state change shows on the host.
    levels = state_content(s.alice, s.room_id, "m.room.power_levels")
    levels.setdefault("users", {})[s.bob.user_id] = 50
    s.alice.put_state(s.room_id, "m.room.power_levels", levels)
    until(lambda: (state_content(s.bob, s.room_id, "m.room.power_levels") or {})
          .get("users", {}).get(s.bob.user_id) == 50, "far's power level on far")
    topic = f"far topic {tag()}"
    s.bob.put_state(s.room_id, "m.room.topic", {"topic": topic})
    until(lambda: (state_content(s.alice, s.room_id, "m.room.topic") or {}).get("topic")
          == topic, "far's topic on the host")
    # Without the power, a state change is refused where it is made, and the
    # room's state stays as it was on both servers.
    levels["users"][s.bob.user_id] = 0
    s.alice.put_state(s.room_id, "m.room.power_levels", levels)
    until(lambda: (state_content(s.bob, s.room_id, "m.room.power_levels") or {})
          .get("users", {}).get(s.bob.user_id, 0) == 0, "far's power taken away on far")
    status, out = s.bob.req("PUT", f"/rooms/{q(s.room_id)}/state/m.room.topic/",
                            {"topic": "not allowed"})
    assert status == 403 and out["errcode"] == "M_FORBIDDEN", (status, out)
    for user in (s.alice, s.bob):
        assert state_content(user, s.room_id, "m.room.topic")["topic"] == topic


def profiles_cross(s: Shared) -> None:
    for user, other in ((s.bob, s.alice), (s.alice, s.bob)):
        name = f"{user.user_id.split(':')[0][1:]} {tag()}"
        user.set_displayname(name)
        until(lambda u=user, o=other, n=name: o.req("GET", f"/profile/{q(u.user_id)}")[1]
              .get("displayname") == n, f"{user.user_id}'s profile from {other.user_id}")
        status, out = other.req("GET", f"/profile/{q(user.user_id)}/displayname")
        assert status == 200 and out["displayname"] == name
        # The member event carries it to the other server's room state too.
        until(lambda u=user, o=other, n=name: (state_content(o, s.room_id, "m.room.member",
                                                             u.user_id) or {})
              .get("displayname") == n,
              f"{user.user_id}'s member event on the other server")
    missing = f"@nobody{tag()}:{s.host.server_name}"
    status, out = s.bob.req("GET", f"/profile/{q(missing)}")
    assert status == 404 and out["errcode"] == "M_NOT_FOUND", (status, out)


def aliases_resolve(host: Any, far: Any) -> None:
    alice = FedUser.make(host, "alice")
    carol = FedUser.make(far, "carol")
    local = f"fed{tag()}"
    room = alice.create_room(preset="public_chat", room_alias_name=local)
    alias = f"#{local}:{host.server_name}"
    out = carol.ok("GET", f"/directory/room/{q(alias)}")
    assert out["room_id"] == room and host.server_name in out["servers"], out
    # An alias added later resolves too; an unknown one is M_NOT_FOUND.
    second = f"#fed{tag()}:{host.server_name}"
    alice.ok("PUT", f"/directory/room/{q(second)}", {"room_id": room})
    assert carol.ok("GET", f"/directory/room/{q(second)}")["room_id"] == room
    unknown = f"#nope{tag()}:{host.server_name}"
    status, body = carol.req("GET", f"/directory/room/{q(unknown)}")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND", (status, body)
    # Joining by the remote alias.
    carol.catch_up()
    assert carol.join_remote(alias, []) == room
    alice.wait_membership(room, carol.user_id, "join")
    # Nobody on far may make an alias in host's namespace.
    status, body = carol.req("PUT", f"/directory/room/{q('#x' + tag() + ':' + host.server_name)}",
                             {"room_id": room})
    assert status in (400, 403), (status, body)


# -- history -----------------------------------------------------------------------------

def new_member_paginates_history(host: Any, far: Any) -> None:
    alice = FedUser.make(host, "alice")
    room = alice.create_room(preset="public_chat")
    t = tag()
    sent = [f"{t} history {i}" for i in range(30)]
    for body in sent:
        alice.send(room, body)
    dave = FedUser.make(far, "dave")
    assert dave.join_remote(room, [host.server_name]) == room
    history = [e["content"].get("body") for e in dave.messages(room, limit=7)
               if e["type"] == "m.room.message"]
    assert [b for b in history if b and b.startswith(t)] == sent, history
    # From then on the order is stable: a second walk reads the same.
    again = [e["content"].get("body") for e in dave.messages(room, limit=50)
             if e["type"] == "m.room.message"]
    assert again == history
    # The room's creation is reachable too (the far server stored the whole chain).
    events = dave.messages(room, limit=50)
    assert events[0]["type"] == "m.room.create", events[0]


# -- end-to-end encryption with matrix-nio ------------------------------------------------

ENCRYPTION = {"type": "m.room.encryption", "state_key": "",
              "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
PASSWORD = "correct horse"


def ok(response: Any, kind: type) -> Any:
    assert isinstance(response, kind), response
    return response


async def _nio_user(peer: Any, prefix: str) -> AsyncClient:
    login = peer.register(f"{prefix}{tag()}", PASSWORD)
    store = tempfile.mkdtemp(prefix=f"nio-{prefix}-")
    client = AsyncClient(peer.base_url, login["user_id"], store_path=store,
                         config=AsyncClientConfig(encryption_enabled=True))
    ok(await client.login(PASSWORD, device_name=f"{prefix}'s nio"), LoginResponse)
    return client


async def _receive(client: AsyncClient, room: str, event_id: str) -> RoomMessageText:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        sync = ok(await client.sync(timeout=1000), SyncResponse)
        joined = sync.rooms.join.get(room)
        for event in joined.timeline.events if joined else []:
            if event.event_id != event_id:
                continue
            assert not isinstance(event, MegolmEvent), f"undecryptable: {event}"
            assert isinstance(event, RoomMessageText), event
            return event
    raise AssertionError(f"{client.user_id} never got {event_id}")


async def _e2ee(host: Any, far: Any) -> None:
    alice = await _nio_user(host, "alice")
    bob = await _nio_user(far, "bob")
    try:
        otks: dict[str, int] = {}
        for client in (alice, bob):
            ok(await client.sync(timeout=0), SyncResponse)
            assert client.should_upload_keys
            otks[client.user_id] = ok(await client.keys_upload(),
                                      KeysUploadResponse).signed_curve25519_count
        # Device keys of a user on the other server, through /keys/query.
        status, queried = host.request("POST", "/_matrix/client/v3/keys/query",
                                       {"device_keys": {bob.user_id: []}},
                                       token=alice.access_token)
        assert status == 200, (status, queried)
        device = queried["device_keys"].get(bob.user_id, {}).get(bob.device_id)
        assert device is not None, queried
        assert device["keys"][f"ed25519:{bob.device_id}"] == bob.olm.account.identity_keys[
            "ed25519"]
        assert not queried.get("failures"), queried
        room = ok(await alice.room_create(invite=[bob.user_id], initial_state=[ENCRYPTION]),
                  RoomCreateResponse).room_id
        deadline = time.monotonic() + DEADLINE_S
        while room not in bob.invited_rooms:
            assert time.monotonic() < deadline, "the invite never reached bob"
            ok(await bob.sync(timeout=1000), SyncResponse)
        ok(await bob.join(room), JoinResponse)
        deadline = time.monotonic() + DEADLINE_S
        while bob.user_id not in (alice.rooms[room].users if room in alice.rooms else {}):
            assert time.monotonic() < deadline, "alice never saw bob join"
            ok(await alice.sync(timeout=1000), SyncResponse)
        assert alice.rooms[room].encrypted
        if alice.should_query_keys:
            ok(await alice.keys_query(), KeysQueryResponse)
        assert bob.device_id in alice.device_store[bob.user_id]
        # Alice's first message claims one of Bob's one-time keys across.
        sent = ok(await alice.room_send(room, "m.room.message",
                                        {"msgtype": "m.text", "body": "secret from host"},
                                        ignore_unverified_devices=True), RoomSendResponse)
        got = await _receive(bob, room, sent.event_id)
        assert got.body == "secret from host" and got.decrypted
        assert got.sender == alice.user_id
        # And back.
        ok(await bob.sync(timeout=0), SyncResponse)
        if bob.should_query_keys:
            ok(await bob.keys_query(), KeysQueryResponse)
        reply = ok(await bob.room_send(room, "m.room.message",
                                       {"msgtype": "m.text", "body": "secret from far"},
                                       ignore_unverified_devices=True), RoomSendResponse)
        back = await _receive(alice, room, reply.event_id)
        assert back.body == "secret from far" and back.decrypted
        # A one-time key claimed explicitly across: bob's count on his server drops.
        before = ok(await bob.sync(timeout=0), SyncResponse).device_key_count.signed_curve25519
        claimed = ok(await alice.keys_claim({bob.user_id: [bob.device_id]}), KeysClaimResponse)
        keys = claimed.one_time_keys.get(bob.user_id, {}).get(bob.device_id, {})
        assert keys and all(k.startswith("signed_curve25519:") for k in keys), claimed
        assert not claimed.failures, claimed.failures
        after = ok(await bob.sync(timeout=0), SyncResponse).device_key_count.signed_curve25519
        assert before and after == before - 1, (before, after)
        # Alice's first message used one as well: bob uploaded otks, two are gone.
        assert after == otks[bob.user_id] - 2, (after, otks)
    finally:
        await alice.close()
        await bob.close()


def e2ee_conversation(host: Any, far: Any) -> None:
    asyncio.run(_e2ee(host, far))


# -- membership ------------------------------------------------------------------------

def leave_ban_rejoin(host: Any, far: Any) -> None:
    s = join_public(host, far)
    room = s.room_id
    s.bob.leave(room)
    s.alice.wait_membership(room, s.bob.user_id, "leave")
    s.bob.wait(lambda rs: any(room in r.get("rooms", {}).get("leave", {}) for r in rs),
               "the room under rooms.leave")
    # Rejoin, and hear what is said after.
    assert s.bob.join_remote(room, [host.server_name]) == room
    s.alice.wait_membership(room, s.bob.user_id, "join")
    after = f"after rejoin {tag()}"
    s.alice.send(room, after)
    s.bob.wait_bodies(room, [after])
    # A ban reaches the banned user's server; joining again is refused there.
    s.alice.ban(room, s.bob.user_id, "go away")
    s.bob.wait(lambda rs: any(
        e.get("type") == "m.room.member" and e.get("state_key") == s.bob.user_id
        and e["content"].get("membership") == "ban"
        for r in rs for e in r.get("rooms", {}).get("leave", {}).get(room, {})
        .get("timeline", {}).get("events", [])), "my ban")
    status, out = s.bob.req("POST", f"/join/{q(room)}?server_name={q(host.server_name)}", {},
                            timeout=120)
    assert status == 403 and out["errcode"] == "M_FORBIDDEN", (status, out)
    status, out = s.bob.req("PUT", f"/rooms/{q(room)}/send/m.room.message/{tag()}",
                            {"msgtype": "m.text", "body": "banned"})
    assert status == 403, (status, out)
    assert s.alice.members(room)[s.bob.user_id] == "ban"
    s.alice.unban(room, s.bob.user_id)
    s.alice.wait_membership(room, s.bob.user_id, "leave")
    assert s.bob.join_remote(room, [host.server_name]) == room
    s.alice.wait_membership(room, s.bob.user_id, "join")
    final = f"after unban {tag()}"
    s.alice.send(room, final)
    s.bob.wait_bodies(room, [final])
    assert "banned" not in s.alice.bodies(room)


# -- one side down -------------------------------------------------------------------------

def down_then_catch_up(host: Any, far: Any, down_side: str) -> None:
    """One server stops; the other's users talk on; when it is back (and says
    something), it receives everything it missed, in order, exactly once."""
    s = join_public(host, far)
    down_peer, down_user, up_user = ((s.far, s.bob, s.alice) if down_side == "far"
                                     else (s.host, s.alice, s.bob))
    down_user.catch_up()
    down_peer.stop()
    try:
        t = tag()
        missed = [f"{t} missed {i}" for i in range(8)]
        for body in missed:
            up_user.send(s.room_id, body)
        time.sleep(2)  # let the sender try, fail and back off
    finally:
        down_peer.start()
    back = f"{t} back"
    down_user.send(s.room_id, back)
    up_user.wait_bodies(s.room_id, [back])
    down_user.wait_bodies(s.room_id, missed)
    down_user.send(s.room_id, f"{t} last")
    up_user.wait_bodies(s.room_id, [f"{t} last"])
    seen = [b for b in down_user.bodies(s.room_id) if b.startswith(t) and "missed" in b]
    assert seen == missed, seen
    history = [e["content"].get("body", "") for e in down_user.messages(s.room_id)
               if e["type"] == "m.room.message"]
    assert [b for b in history if b.startswith(t) and "missed" in b] == missed


# -- forged requests -----------------------------------------------------------------------

def _config(peer: Any) -> dict[str, Any]:
    path = getattr(peer, "shared_path", None) or peer.config_path
    with open(path) as f:
        return dict(yaml.safe_load(f))


def _signed_get(host: Any, origin: str, key: Any, path: str) -> tuple[int, Any]:
    auth = sign_request(key, origin, host.server_name, "GET", path)
    return host.https("GET", path, headers={"Authorization": auth})  # type: ignore[no-any-return]


def forged_requests_refused(host: Any, far: Any) -> None:
    """Requests and PDUs claiming to come from far but not signed by far's key,
    and PDUs whose sender belongs to another server, are refused and appear
    nowhere; a correctly signed PDU sent the same way is accepted, so the
    refusals are about the signatures."""
    s = join_public(host, far)
    room = s.room_id
    origin = far.server_name
    far_key = signing_key(_config(far)["signing_key_path"])
    wrong = generate_signing_key(far_key.version)  # same key id, other key
    state = s.alice.ok("GET", f"/rooms/{q(room)}/state")
    ids = {(e["type"], e.get("state_key")): e["event_id"] for e in state}
    create = next(e for e in state if e["type"] == "m.room.create")
    room_version = create["content"].get("room_version", "1")
    assert room_version not in ("1", "2", "3"), room_version
    implied_create = room_version == "12" or "hydra" in room_version
    latest = s.alice.ok("GET", f"/rooms/{q(room)}/messages?dir=b&limit=1")["chunk"][0]
    status, pdu = _signed_get(host, origin, far_key,
                              f"/_matrix/federation/v1/event/{q(latest['event_id'])}")
    assert status == 200, (status, pdu)
    depth = int(pdu["pdus"][0]["depth"]) + 1
    t = tag()

    def message(sender: str, body: str, signer: Any, server: str = origin) -> dict[str, Any]:
        # From room version 12 the create event is implied, never listed.
        auth = [] if implied_create else [ids[("m.room.create", "")]]
        auth.append(ids[("m.room.power_levels", "")])
        if ("m.room.member", sender) in ids:
            auth.append(ids[("m.room.member", sender)])
        event = {"type": "m.room.message", "room_id": room, "sender": sender,
                 "content": {"msgtype": "m.text", "body": body}, "depth": depth,
                 "prev_events": [latest["event_id"]], "auth_events": auth,
                 "origin_server_ts": int(time.time() * 1000)}
        return signed_pdu(event, server, signer)

    def send(pdus: list[dict[str, Any]], signer: Any) -> tuple[int, Any]:
        txn = f"forged{tag()}"
        path = f"/_matrix/federation/v1/send/{txn}"
        body = {"origin": origin, "origin_server_ts": int(time.time() * 1000), "pdus": pdus}
        auth = sign_request(signer, origin, host.server_name, "PUT", path, body)
        return host.https("PUT", path, body, headers={"Authorization": auth})  # type: ignore

    in_bad_request = message(s.bob.user_id, f"{t} in a badly signed request", far_key)
    # No Authorization at all, then one signed with the wrong key: 401.
    path = f"/_matrix/federation/v1/send/forged{tag()}"
    status, out = host.https("PUT", path, {"origin": origin, "origin_server_ts": 1,
                                           "pdus": [in_bad_request]})
    assert status == 401, (status, out)
    status, out = send([in_bad_request], wrong)
    assert status == 401, (status, out)
    # A well-signed transaction: a forged signature, a sender of the host's
    # (signed only by far), and one honest PDU.
    bad_sig = message(s.bob.user_id, f"{t} bad signature", wrong)
    spoofed = message(s.alice.user_id, f"{t} spoofed sender", far_key)
    honest = message(s.bob.user_id, f"{t} honest", far_key)
    status, out = send([bad_sig, spoofed, honest], far_key)
    assert status == 200, (status, out)
    results = out.get("pdus", {})
    for pdu in (bad_sig, spoofed):
        result = results.get(event_id_of(pdu))
        assert result is None or "error" in result, (result, out)
    assert "error" not in results.get(event_id_of(honest), {}), out
    s.alice.wait_bodies(room, [f"{t} honest"])
    # A message through ordinary federation after them: the host processed all.
    s.bob.send(room, f"{t} after")
    s.alice.wait_bodies(room, [f"{t} after"])
    history = [e["content"].get("body", "") for e in s.alice.messages(room)
               if e["type"] == "m.room.message"]
    assert [b for b in history if b.startswith(t)] == [f"{t} honest", f"{t} after"], history
    assert [b for b in s.alice.bodies(room) if b.startswith(t)] == [f"{t} honest",
                                                                      f"{t} after"]
    assert s.alice.event(room, event_id_of(honest))[0] == 200
    # The database check can tell: the honest event is in it.
    assert rows_mentioning(host, event_id_of(honest)), "the honest PDU is not in the database"
    for pdu in (in_bad_request, bad_sig, spoofed):
        status, body = s.alice.event(room, event_id_of(pdu))
        assert status == 404, (status, body)
        status, body = _signed_get(host, origin, far_key,
                                   f"/_matrix/federation/v1/event/{q(event_id_of(pdu))}")
        assert status == 404, (status, body)
        assert rows_mentioning(host, event_id_of(pdu)) == {}, pdu["content"]["body"]
