"""Remote events into the room DAG, end to end: a real Myelin behind TLS and
a fake remote server made here (its own signing key and key server, see
tests/support/fake_remote.py) that joins a local public room over ``/send``
and then sends, forges, forks and withholds events.

What is asserted is what the local user notices: an accepted PDU is in their
/sync and /messages; a forged or unauthorised one is nowhere; a soft-failed
one is not shown; gaps are filled from the remote; a retried transaction is
answered the same and not applied twice; an ACL-denied server is refused;
/messages past the stored history backfills from the remote.
"""

from __future__ import annotations

import itertools
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from myelin.events.signing import generate_signing_key
from tests.support.fake_remote import FakeRemote
from tests.support.fed_client import FedUser
from tests.support.federation import MyelinPeer, launch_myelin_peer, local_ca

q = urllib.parse.quote
_txns = itertools.count()


def txn() -> str:
    return f"dag{next(_txns)}"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def peer(request: pytest.FixtureRequest) -> Iterator[MyelinPeer]:
    # Both engines: outliers and backfill take negative positions differently.
    pg = request.getfixturevalue("postgres_server") if request.param == "postgres" else None
    server = launch_myelin_peer(engine=request.param, pg=pg, ca=local_ca())
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def remote() -> Iterator[FakeRemote]:
    fake = FakeRemote(local_ca())
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@dataclass
class Room:
    """A local public room the remote's bob has joined, as the remote sees it."""

    room_id: str
    state: dict[tuple[str, str], str]
    latest: str
    depth: int
    fake: FakeRemote
    sent: list[str] = field(default_factory=list)

    def auth_for(self, sender: str) -> list[str]:
        keys = [("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", sender)]
        return [self.state[k] for k in keys if k in self.state]

    def message(self, sender: str, body: str, *, prev: list[str] | None = None,
                advance: bool = True, **kw: Any) -> tuple[str, dict[str, Any]]:
        self.depth += 1
        event_id, pdu = self.fake.event(
            self.room_id, "m.room.message", sender, {"msgtype": "m.text", "body": body},
            prev=prev or [self.latest], auth=self.auth_for(sender), depth=self.depth, **kw)
        if advance:
            self.latest = event_id
        return event_id, pdu


def joined_room(alice: FedUser, remote: FakeRemote, peer: Any) -> Room:
    room_id = alice.create_room(preset="public_chat", room_version="10")
    state = alice.ok("GET", f"/rooms/{q(room_id)}/state")
    ids = {(e["type"], e["state_key"]): e["event_id"] for e in state}
    latest = alice.ok("GET", f"/rooms/{q(room_id)}/messages?dir=b&limit=1")["chunk"][0]
    bob = remote.user("bob")
    join_id, join = remote.event(
        room_id, "m.room.member", bob, {"membership": "join"}, state_key=bob,
        prev=[latest["event_id"]], depth=50,
        auth=[ids[("m.room.create", "")], ids[("m.room.join_rules", "")],
              ids[("m.room.power_levels", "")]])
    status, body = remote.send(peer, txn(), [join])
    assert (status, body) == (200, {"pdus": {join_id: {}}})
    ids[("m.room.member", bob)] = join_id
    return Room(room_id, ids, join_id, 50, remote)


@pytest.fixture
def alice(peer: MyelinPeer) -> FedUser:
    return FedUser.make(peer, "alice")


def bodies(alice: FedUser, room_id: str) -> list[str]:
    return [e["content"].get("body") for e in alice.messages(room_id)
            if e["type"] == "m.room.message"]


def client_event(alice: FedUser, room_id: str, event_id: str) -> tuple[int, Any]:
    return alice.req("GET", f"/rooms/{q(room_id)}/event/{q(event_id)}")


def test_a_remote_message_reaches_the_local_users_sync_and_messages(
        alice: FedUser, remote: FakeRemote, peer: MyelinPeer) -> None:
    room = joined_room(alice, remote, peer)
    alice.catch_up()
    event_id, pdu = room.message(remote.user("bob"), "hello from afar")
    status, body = remote.send(peer, txn(), [pdu])
    assert (status, body) == (200, {"pdus": {event_id: {}}})
    got = alice.wait_timeline(room.room_id, lambda e: e.get("event_id") == event_id)
    assert got["sender"] == remote.user("bob")
    assert got["content"]["body"] == "hello from afar"
    assert bodies(alice, room.room_id)[-1] == "hello from afar"
    members = alice.ok("GET", f"/rooms/{q(room.room_id)}/joined_members")["joined"]
    assert remote.user("bob") in members


def test_a_pdu_with_a_bad_signature_is_rejected_and_stored_nowhere(
        alice: FedUser, remote: FakeRemote, peer: MyelinPeer) -> None:
    room = joined_room(alice, remote, peer)
    impostor = generate_signing_key("fake1")  # same key id, different key
    event_id, pdu = room.message(remote.user("bob"), "forged", key=impostor, advance=False)
    status, body = remote.send(peer, txn(), [pdu])
    assert status == 200
    assert "error" in body["pdus"][event_id]
    assert client_event(alice, room.room_id, event_id)[0] == 404
    assert "forged" not in bodies(alice, room.room_id)


def test_a_pdu_whose_content_hash_does_not_match_is_kept_only_redacted(
        alice: FedUser, remote: FakeRemote, peer: MyelinPeer) -> None:
    # The spec: "If the hash check fails, the event is redacted before being
    # processed further": the signed (redacted) part stands, the content is dropped.
    room = joined_room(alice, remote, peer)
    event_id, pdu = room.message(remote.user("bob"), "original")
    tampered = {**pdu, "content": {"msgtype": "m.text", "body": "tampered"}}
    status, body = remote.send(peer, txn(), [tampered])
    assert (status, body) == (200, {"pdus": {event_id: {}}})
    status, event = client_event(alice, room.room_id, event_id)
    assert status == 200, event
    assert event["content"] == {}
    assert not {"tampered", "original"} & set(bodies(alice, room.room_id))


def test_an_event_failing_the_auth_rules_is_rejected_and_stored_nowhere(
        alice: FedUser, remote: FakeRemote, peer: MyelinPeer) -> None:
    room = joined_room(alice, remote, peer)
    # eve never joined: her message fails against its own auth events. The
    # PDU was processed (and rejected): {} as Synapse answers.
    event_id, pdu = room.message(remote.user("eve"), "gatecrash", advance=False)
    status, body = remote.send(peer, txn(), [pdu])
    assert (status, body) == (200, {"pdus": {event_id: {}}})
    assert client_event(alice, room.room_id, event_id)[0] == 404
    assert "gatecrash" not in bodies(alice, room.room_id)
    # The room carries on: the next good event is accepted.
    good_id, good = room.message(remote.user("bob"), "still here")
    assert remote.send(peer, txn(), [good])[1] == {"pdus": {good_id: {}}}
    assert bodies(alice, room.room_id)[-1] == "still here"


def test_an_event_allowed_before_it_but_not_by_current_state_is_soft_failed(
        alice: FedUser, remote: FakeRemote, peer: MyelinPeer) -> None:
    room = joined_room(alice, remote, peer)
    bob = remote.user("bob")
    alice.ok("POST", f"/rooms/{q(room.room_id)}/ban", {"user_id": bob, "reason": "spam"})
    alice.catch_up()
    # bob's message builds on his join, from before the ban: allowed by the
    # state before it, not by the room's current state.
    event_id, pdu = room.message(bob, "sneaky")
    status, body = remote.send(peer, txn(), [pdu])
    assert (status, body) == (200, {"pdus": {event_id: {}}})
    alice.send(room.room_id, "after the ban")
    alice.wait_bodies(room.room_id, ["after the ban"])
    assert "sneaky" not in alice.bodies(room.room_id)
    assert "sneaky" not in bodies(alice, room.room_id)
    assert client_event(alice, room.room_id, event_id)[0] == 404


def test_missing_prev_events_are_fetched_from_the_sender(
        alice: FedUser, remote: FakeRemote, peer: MyelinPeer) -> None:
    room = joined_room(alice, remote, peer)
    bob = remote.user("bob")
    _, withheld = room.message(bob, "first (withheld)")
    latest_id, latest = room.message(bob, "second")
    remote.missing_events = [withheld]
    status, body = remote.send(peer, txn(), [latest])
    assert (status, body) == (200, {"pdus": {latest_id: {}}})
    asked = remote.asked("/get_missing_events/")
    assert asked and asked[-1][2]["latest_events"] == [latest_id]
    assert bodies(alice, room.room_id)[-2:] == ["first (withheld)", "second"]


def test_a_gap_is_bridged_with_the_remote_state_and_backfilled_on_messages(
        alice: FedUser, remote: FakeRemote, peer: MyelinPeer) -> None:
    room = joined_room(alice, remote, peer)
    bob = remote.user("bob")
    x1_id, x1 = room.message(bob, "x1")
    x2_id, x2 = room.message(bob, "x2")
    _, x3 = room.message(bob, "x3")
    x4_id, x4 = room.message(bob, "x4")
    # Only x3 comes back from /get_missing_events: x2 stays a gap, bridged
    # with the state at x2 (the room's state; x1 is a message).
    remote.missing_events = [x3]
    remote.state_ids[x2_id] = (list(room.state.values()), [])
    status, body = remote.send(peer, txn(), [x4])
    assert (status, body) == (200, {"pdus": {x4_id: {}}})
    assert remote.asked(f"/state_ids/{q(room.room_id, safe='')}")
    # Paginating back past what is stored asks the remote for x2 and before.
    remote.backfill_pdus = [x2, x1]
    # Small pages: the one that backfills must not skip an event either.
    history = [e["content"].get("body") for e in alice.messages(room.room_id, limit=2)
               if e["type"] == "m.room.message"]
    backfills = remote.asked("/backfill/")
    assert backfills and f"v={q(x2_id, safe='')}" in backfills[-1][1]
    assert [b for b in history if b and b.startswith("x")] == ["x1", "x2", "x3", "x4"]
    assert bodies(alice, room.room_id) == history
    assert client_event(alice, room.room_id, x1_id)[0] == 200


def test_a_retried_transaction_is_answered_the_same_and_not_applied_twice(
        alice: FedUser, remote: FakeRemote, peer: MyelinPeer) -> None:
    room = joined_room(alice, remote, peer)
    bob = remote.user("bob")
    first_id, first = room.message(bob, "once")
    txn_id = txn()
    answer = remote.send(peer, txn_id, [first])
    assert answer == (200, {"pdus": {first_id: {}}})
    _, other = room.message(bob, "not applied")
    assert remote.send(peer, txn_id, [other]) == answer
    assert bodies(alice, room.room_id).count("once") == 1
    assert "not applied" not in bodies(alice, room.room_id)


def test_a_server_denied_by_the_room_acl_is_refused(
        alice: FedUser, remote: FakeRemote, peer: MyelinPeer) -> None:
    room = joined_room(alice, remote, peer)
    bob = remote.user("bob")

    def invite_nobody() -> tuple[int, Any]:
        invite_id, invite = remote.event(
            room.room_id, "m.room.member", bob, {"membership": "invite"},
            state_key=f"@nobody:{peer.server_name}", prev=[room.latest],
            auth=room.auth_for(bob), depth=room.depth + 1)
        return remote.request(
            peer, "PUT", f"/_matrix/federation/v2/invite/{q(room.room_id, safe='')}/"
            f"{q(invite_id, safe='')}", {"event": invite, "room_version": "10",
                                         "invite_room_state": []})

    # Before the ban: even an invite of a user we do not have is counter-signed
    # (a 404 would tell any server which user names exist here).
    status, body = invite_nobody()
    assert status == 200 and peer.server_name in body["event"]["signatures"], body
    alice.ok("PUT", f"/rooms/{q(room.room_id)}/state/m.room.server_acl/",
             {"allow": ["*"], "deny": ["localhost"]})
    event_id, pdu = room.message(remote.user("bob"), "from a banned server")
    status, body = remote.send(peer, txn(), [pdu])
    assert status == 200
    assert "error" in body["pdus"][event_id]
    assert "from a banned server" not in bodies(alice, room.room_id)
    status, _ = remote.request(
        peer, "GET", f"/_matrix/federation/v1/state_ids/{q(room.room_id, safe='')}"
        f"?event_id={q(room.latest, safe='')}")
    assert status == 403
    # After it: refused.
    status, body = invite_nobody()
    assert (status, body.get("errcode")) == (403, "M_FORBIDDEN"), body


def test_the_dag_is_served_to_servers_in_the_room_only(
        alice: FedUser, remote: FakeRemote, peer: MyelinPeer) -> None:
    room = joined_room(alice, remote, peer)
    alice.send(room.room_id, "one")
    second = alice.send(room.room_id, "two")
    rid = q(room.room_id, safe="")
    status, got = remote.request(peer, "GET", f"/_matrix/federation/v1/event/{q(second)}")
    assert status == 200 and got["pdus"][0]["content"]["body"] == "two"
    assert got["origin"] == peer.server_name
    status, ids = remote.request(
        peer, "GET", f"/_matrix/federation/v1/state_ids/{rid}?event_id={q(second)}")
    assert status == 200
    assert room.state[("m.room.create", "")] in ids["pdu_ids"]
    assert room.state[("m.room.member", remote.user("bob"))] in ids["pdu_ids"]
    assert room.state[("m.room.create", "")] in ids["auth_chain_ids"]
    status, state = remote.request(
        peer, "GET", f"/_matrix/federation/v1/state/{rid}?event_id={q(second)}")
    assert status == 200 and len(state["pdus"]) == len(ids["pdu_ids"])
    status, auth = remote.request(
        peer, "GET", f"/_matrix/federation/v1/event_auth/{rid}/{q(second)}")
    assert status == 200 and any(e["type"] == "m.room.create" for e in auth["auth_chain"])
    status, back = remote.request(
        peer, "GET", f"/_matrix/federation/v1/backfill/{rid}?v={q(second)}&limit=2")
    assert status == 200
    assert [p["content"].get("body") for p in back["pdus"]] == ["two", "one"]
    status, missing = remote.request(
        peer, "POST", f"/_matrix/federation/v1/get_missing_events/{rid}",
        {"earliest_events": [room.latest], "latest_events": [second], "limit": 10})
    assert status == 200
    assert [p["content"].get("body") for p in missing["events"]] == ["one"]
    status, at = remote.request(
        peer, "GET", f"/_matrix/federation/v1/timestamp_to_event/{rid}?ts=0&dir=f")
    assert status == 200 and at["event_id"] == room.state[("m.room.create", "")]
    # A room bob never joined is not served to his server.
    other = alice.create_room(preset="public_chat")
    status, _ = remote.request(
        peer, "GET", f"/_matrix/federation/v1/state_ids/{q(other, safe='')}"
        f"?event_id={q(second)}")
    assert status == 403
    # Nor without a valid signature.
    status, _ = peer.https("GET", f"/_matrix/federation/v1/event/{q(second)}")
    assert status == 401


def test_a_fork_in_the_dag_is_merged_by_the_next_local_event(
        alice: FedUser, remote: FakeRemote, peer: MyelinPeer) -> None:
    room = joined_room(alice, remote, peer)
    bob = remote.user("bob")
    join = room.latest
    left_id, left = room.message(bob, "left branch")
    right_id, right = room.message(bob, "right branch", prev=[join])
    assert remote.send(peer, txn(), [left])[1] == {"pdus": {left_id: {}}}
    assert remote.send(peer, txn(), [right])[1] == {"pdus": {right_id: {}}}
    merge = alice.send(room.room_id, "merge")
    status, got = remote.request(peer, "GET", f"/_matrix/federation/v1/event/{q(merge)}")
    assert status == 200
    assert set(got["pdus"][0]["prev_events"]) == {left_id, right_id}
    assert bodies(alice, room.room_id)[-3:-1] in (["left branch", "right branch"],
                                                  ["right branch", "left branch"])
    # bob is still a member on the merged state: his next message is accepted.
    after_id, after = room.message(bob, "after the merge", prev=[merge])
    assert remote.send(peer, txn(), [after])[1] == {"pdus": {after_id: {}}}
    assert bodies(alice, room.room_id)[-1] == "after the merge"


def test_a_member_seen_only_in_the_remote_state_at_a_gap_can_send(
        alice: FedUser, remote: FakeRemote, peer: MyelinPeer) -> None:
    room = joined_room(alice, remote, peer)
    carol = remote.user("carol")
    room.depth += 1
    join_id, _ = remote.event(
        room.room_id, "m.room.member", carol, {"membership": "join"}, state_key=carol,
        prev=[room.latest], depth=room.depth,
        auth=[room.state[("m.room.create", "")], room.state[("m.room.join_rules", "")],
              room.state[("m.room.power_levels", "")]])
    room.state[("m.room.member", carol)] = join_id
    room.latest = join_id
    _, first = room.message(carol, "hi, I am new here")
    second_id, second = room.message(carol, "anyone?")
    # Myelin never gets carol's join itself: /get_missing_events brings only
    # her first message, whose gap is bridged with /state_ids and /event.
    remote.missing_events = [first]
    remote.state_ids[join_id] = (list(room.state.values())[:-1], [])
    status, body = remote.send(peer, txn(), [second])
    assert (status, body) == (200, {"pdus": {second_id: {}}})
    assert remote.asked(f"/event/{q(join_id, safe='')}")
    assert bodies(alice, room.room_id)[-2:] == ["hi, I am new here", "anyone?"]
    members = alice.ok("GET", f"/rooms/{q(room.room_id)}/joined_members")["joined"]
    assert carol in members


def test_a_live_event_whose_history_is_withheld_is_dropped(
        alice: FedUser, remote: FakeRemote, peer: MyelinPeer) -> None:
    room = joined_room(alice, remote, peer)
    bob = remote.user("bob")
    withheld_id, _ = room.message(bob, "withheld")
    sent_id, sent = room.message(bob, "orphan")
    remote.missing_events = []
    before = len(remote.asked("/state_ids/"))
    status, body = remote.send(peer, txn(), [sent])
    assert status == 200 and "error" in body["pdus"][sent_id]
    # Its state was not asked for (it would have been trusted blindly).
    assert len(remote.asked("/state_ids/")) == before
    assert client_event(alice, room.room_id, sent_id)[0] == 404
    assert "orphan" not in bodies(alice, room.room_id)
    assert withheld_id not in remote.state_ids


def test_soft_failed_events_do_not_leave_their_ancestors_as_extremities(
        alice: FedUser, remote: FakeRemote, peer: MyelinPeer) -> None:
    # sytest's "correctly handles soft failed events as extremities":
    # J1 -> PL1 (local: test.sf needs 50) and J1 -> M1 -> SF1 -> SF2 (soft-failed);
    # M2 on PL1 + SF2 supersedes both branches, so the next local event builds on M2 only.
    room = joined_room(alice, remote, peer)
    bob = remote.user("bob")
    join = room.latest
    levels = alice.ok("GET", f"/rooms/{q(room.room_id)}/state/m.room.power_levels/")
    levels.setdefault("events", {})["test.sf"] = 50
    pl1 = alice.ok("PUT", f"/rooms/{q(room.room_id)}/state/m.room.power_levels/",
                   levels)["event_id"]
    m1_id, m1 = room.message(bob, "M1", prev=[join])
    room.depth += 1
    sf1_id, sf1 = remote.event(room.room_id, "test.sf", bob, {"body": "SF1"}, prev=[m1_id],
                               auth=room.auth_for(bob), depth=room.depth)
    room.depth += 1
    sf2_id, sf2 = remote.event(room.room_id, "test.sf", bob, {"body": "SF2"}, prev=[sf1_id],
                               auth=room.auth_for(bob), depth=room.depth)
    for event_id, pdu in ((m1_id, m1), (sf1_id, sf1), (sf2_id, sf2)):
        assert remote.send(peer, txn(), [pdu])[1] == {"pdus": {event_id: {}}}
    room.state[("m.room.power_levels", "")] = pl1
    m2_id, m2 = room.message(bob, "M2", prev=[pl1, sf2_id])
    assert remote.send(peer, txn(), [m2])[1] == {"pdus": {m2_id: {}}}
    m3 = alice.send(room.room_id, "M3")
    status, got = remote.request(peer, "GET", f"/_matrix/federation/v1/event/{q(m3)}")
    assert status == 200
    assert got["pdus"][0]["prev_events"] == [m2_id]
    assert "SF1" not in [e["content"].get("body") for e in alice.messages(room.room_id)]
