"""State resolution v2 (and the v12 variant), from the spec's prose."""

from __future__ import annotations

from typing import Any

import pytest
from events_testlib import ALICE, BOB, CAROL, Room

from myelin.events.auth import StateKey, check_auth
from myelin.events.event import Event
from myelin.events.room_versions import RoomVersion, RoomVersions
from myelin.events.state_res import (
    StateResolutionError,
    _conflicted_subgraph,
    compute_auth_chain,
    resolve_state_v2,
)

VERSIONS = [RoomVersions.V2, RoomVersions.V6, RoomVersions.V10, RoomVersions.V11, RoomVersions.V12]
PL: StateKey = ("m.room.power_levels", "")
TOPIC: StateKey = ("m.room.topic", "")


def vid(rv: RoomVersion) -> str:
    return "v" + rv.identifier


class Fork:
    """A branch of the room DAG with its own state."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.state = dict(room.state)
        self.last = list(room.last)

    def send(
        self,
        type: str,
        sender: str,
        content: dict[str, Any],
        state_key: str | None = None,
        **kw: Any,
    ) -> Event:
        ev = self.room.make(
            type, sender, content, state_key, state=self.state, prev=self.last, **kw
        )
        check_auth(ev, self.room.auth_map(ev, self.state))
        if ev.state_key is not None:
            self.state[(ev.type, ev.state_key)] = ev
        self.last = [ev.event_id]
        return ev

    def ids(self) -> dict[StateKey, str]:
        return {k: v.event_id for k, v in self.state.items()}


def resolve(room: Room, *forks: Fork, **kw: Any) -> dict[StateKey, str]:
    return resolve_state_v2(room.rv, [f.ids() for f in forks], room.events, **kw)


def pl(room: Room, fork: Fork, **changes: Any) -> dict[str, Any]:
    content = dict(fork.state[PL].content)
    content.update(changes)
    return content


@pytest.mark.parametrize("rv", VERSIONS, ids=vid)
def test_unconflicted_state_passes_through(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public")
    room.join(BOB)
    a, b = Fork(room), Fork(room)
    assert resolve(room, a, b) == a.ids()
    # A key present in only one set is conflicted, but survives if it passes auth.
    t = b.send("m.room.topic", ALICE, {"topic": "x"}, "")
    assert resolve(room, a, b) == {**a.ids(), TOPIC: t.event_id}


@pytest.mark.parametrize("rv", VERSIONS, ids=vid)
def test_conflicted_power_levels_higher_power_sender_wins(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public", users={BOB: 50}, power_levels={"state_default": 50})
    room.join(BOB)
    a, b = Fork(room), Fork(room)
    # Bob (50) tweaks an events level; Alice (100/creator) demotes Bob later in time.
    bob_pl = a.send("m.room.power_levels", BOB, pl(room, a, events={"m.room.name": 50}), "", ts=10)
    users = {k: v for k, v in b.state[PL].content["users"].items() if k != BOB}
    alice_pl = b.send("m.room.power_levels", ALICE, pl(room, b, users=users), "", ts=20)
    resolved = resolve(room, a, b)
    # Alice's event sorts first (more power); Bob's then fails auth because he
    # has been demoted, so Alice's is the result despite Bob's earlier ts.
    assert resolved[PL] == alice_pl.event_id
    assert bob_pl.event_id not in resolved.values()


@pytest.mark.parametrize("rv", VERSIONS, ids=vid)
def test_conflicted_power_levels_equal_power_ordered_by_ts(rv: RoomVersion) -> None:
    room = Room(
        rv,
        join_rule="public",
        users={BOB: 100} if not rv.creators_infinite_power else {BOB: 100, CAROL: 100},
    )
    sender1, sender2 = (BOB, CAROL) if rv.creators_infinite_power else (ALICE, BOB)
    room.join(BOB)
    room.join(CAROL)
    a, b = Fork(room), Fork(room)
    first = a.send("m.room.power_levels", sender1, pl(room, a, kick=60), "", ts=10)
    second = b.send("m.room.power_levels", sender2, pl(room, b, kick=70), "", ts=20)
    resolved = resolve(room, a, b)
    # Same power: ordered by origin_server_ts; both pass auth, so the later
    # one is applied last.
    assert resolved[PL] == second.event_id
    assert first.event_id != second.event_id


@pytest.mark.parametrize("rv", VERSIONS, ids=vid)
def test_ban_beats_join_when_banner_power_upheld(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public")
    room.join(BOB)
    a, b = Fork(room), Fork(room)
    ban = a.send("m.room.member", ALICE, {"membership": "ban"}, CAROL, ts=50)
    join = b.send("m.room.member", CAROL, {"membership": "join"}, CAROL, ts=10)
    b.send("m.room.message", CAROL, {"body": "hi"})
    resolved = resolve(room, a, b)
    assert resolved[("m.room.member", CAROL)] == ban.event_id
    assert join.event_id not in resolved.values()


@pytest.mark.parametrize("rv", VERSIONS, ids=vid)
def test_ban_by_concurrently_demoted_moderator_is_dropped(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public", users={BOB: 50})
    room.join(BOB)
    room.join(CAROL)
    a, b = Fork(room), Fork(room)
    ban = a.send("m.room.member", BOB, {"membership": "ban"}, CAROL, ts=5)
    users = {k: v for k, v in b.state[PL].content["users"].items() if k != BOB}
    demote = b.send("m.room.power_levels", ALICE, pl(room, b, users=users), "", ts=100)
    resolved = resolve(room, a, b)
    assert resolved[PL] == demote.event_id
    # The ban fails the iterative auth checks (Bob is now 0) and is dropped.
    assert resolved[("m.room.member", CAROL)] == room.member(CAROL).event_id
    assert ban.event_id not in resolved.values()


@pytest.mark.parametrize("rv", VERSIONS, ids=vid)
def test_topic_conflict_by_timestamp_on_same_mainline(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public", users={BOB: 50})
    room.join(BOB)
    a, b = Fork(room), Fork(room)
    late = a.send("m.room.topic", ALICE, {"topic": "A"}, "", ts=100)
    b.send("m.room.topic", BOB, {"topic": "B"}, "", ts=50)
    assert resolve(room, a, b)[TOPIC] == late.event_id


@pytest.mark.parametrize("rv", VERSIONS, ids=vid)
def test_topic_conflict_resolved_by_mainline(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public")
    room.join(BOB)
    a, b = Fork(room), Fork(room)
    # Fork A: a topic with a *later* ts, citing the old power levels.
    old_topic = a.send("m.room.topic", ALICE, {"topic": "old-mainline"}, "", ts=1000)
    # Fork B: new power levels, then a topic citing them, with earlier ts.
    new_pl = b.send("m.room.power_levels", ALICE, pl(room, b, kick=51), "", ts=10)
    new_topic = b.send("m.room.topic", ALICE, {"topic": "new-mainline"}, "", ts=20)
    assert new_pl.event_id in new_topic.auth_event_ids
    resolved = resolve(room, a, b)
    assert resolved[PL] == new_pl.event_id
    # The topic based on a later mainline event sorts last and wins, even
    # though its origin_server_ts is earlier.
    assert resolved[TOPIC] == new_topic.event_id
    assert old_topic.event_id not in resolved.values()


@pytest.mark.parametrize("rv", VERSIONS, ids=vid)
def test_event_failing_auth_is_dropped(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public", users={BOB: 50}, power_levels={"state_default": 50})
    room.join(BOB)
    a, b = Fork(room), Fork(room)
    users = {k: v for k, v in b.state[PL].content["users"].items() if k != BOB}
    b.send("m.room.power_levels", ALICE, pl(room, b, users=users), "", ts=1)
    topic = a.send("m.room.topic", BOB, {"topic": "by bob"}, "", ts=99)
    resolved = resolve(room, a, b)
    # Bob's topic was fine in fork A but fails against the resolved power levels.
    assert TOPIC not in resolved
    assert topic.event_id not in resolved.values()


@pytest.mark.parametrize("rv", VERSIONS, ids=vid)
def test_three_way_and_auth_chain_callback(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public")
    room.join(BOB)
    a, b, c = Fork(room), Fork(room), Fork(room)
    a.send("m.room.topic", ALICE, {"topic": "a"}, "", ts=1)
    b.send("m.room.topic", ALICE, {"topic": "b"}, "", ts=2)
    t3 = c.send("m.room.topic", ALICE, {"topic": "c"}, "", ts=3)
    calls: list[str] = []

    def chain(eid: str) -> set[str]:
        calls.append(eid)
        return compute_auth_chain(eid, room.events)

    r1 = resolve(room, a, b, c)
    r2 = resolve(room, a, b, c, auth_chain_of=chain)
    assert r1 == r2 and r1[TOPIC] == t3.event_id
    assert calls
    # Order of the state sets does not matter.
    assert resolve(room, c, a, b) == r1


def test_compute_auth_chain() -> None:
    room = Room(RoomVersions.V10, join_rule="public")
    join = room.join(BOB)
    chain = compute_auth_chain(join.event_id, room.events)
    types = {room.events[e].type for e in chain}
    assert types == {"m.room.create", "m.room.member", "m.room.power_levels", "m.room.join_rules"}
    assert join.event_id not in chain
    with pytest.raises(StateResolutionError):
        compute_auth_chain("$missing", room.events)


def test_v1_not_supported() -> None:
    room = Room(RoomVersions.V1)
    with pytest.raises(NotImplementedError):
        resolve_state_v2(RoomVersions.V1, [], room.events)


def test_empty_input() -> None:
    assert resolve_state_v2(RoomVersions.V10, [], {}) == {}


# -- v12 ------------------------------------------------------------------------


def test_v12_conflicted_state_subgraph() -> None:
    room = Room(RoomVersions.V12, join_rule="public")
    room.join(BOB)
    pl1 = room.send("m.room.power_levels", ALICE, {**room.state[PL].content, "kick": 40}, "")
    pl2 = room.send("m.room.power_levels", ALICE, {**room.state[PL].content, "kick": 41}, "")
    pl3 = room.send("m.room.power_levels", ALICE, {**room.state[PL].content, "kick": 42}, "")
    # pl3 -> pl2 -> pl1 through auth events; the path between pl3 and pl1
    # includes pl2 but not the older power levels or member events.
    sub = _conflicted_subgraph({pl3.event_id, pl1.event_id}, room.events)
    assert sub == {pl1.event_id, pl2.event_id, pl3.event_id}
    assert _conflicted_subgraph({pl3.event_id}, room.events) == {pl3.event_id}


def test_v12_full_conflicted_set_includes_subgraph() -> None:
    # Fork A is "behind" fork B: B's PL chain passes through an event that is
    # not itself in either state set's conflicted entries.
    room = Room(RoomVersions.V12, join_rule="public", users={BOB: 50})
    room.join(BOB)
    a = Fork(room)
    b = Fork(room)
    mid = b.send("m.room.power_levels", ALICE, pl(room, b, kick=40), "", ts=5)
    top = b.send("m.room.power_levels", ALICE, pl(room, b, kick=41), "", ts=6)
    assert mid.event_id in top.auth_event_ids
    resolved = resolve(room, a, b)
    assert resolved[PL] == top.event_id


def test_v12_creator_infinite_power_orders_first() -> None:
    room = Room(RoomVersions.V12, join_rule="public", users={BOB: 100})
    room.join(BOB)
    a, b = Fork(room), Fork(room)
    # Bob (100) changes kick while Alice (creator, infinite power) demotes Bob.
    bob_pl = a.send("m.room.power_levels", BOB, pl(room, a, kick=99), "", ts=1)
    alice_pl = b.send("m.room.power_levels", ALICE, pl(room, b, users={}), "", ts=2)
    resolved = resolve(room, a, b)
    assert resolved[PL] == alice_pl.event_id
    assert bob_pl.event_id not in resolved.values()


def test_v12_create_event_never_needed_in_state_sets() -> None:
    # The create event is found through the room id even if a state set
    # (incorrectly) lacks it.
    room = Room(RoomVersions.V12, join_rule="public")
    room.join(BOB)
    a, b = Fork(room), Fork(room)
    t = b.send("m.room.topic", ALICE, {"topic": "x"}, "")
    sa = {k: v for k, v in a.ids().items() if k != ("m.room.create", "")}
    sb = {k: v for k, v in b.ids().items() if k != ("m.room.create", "")}
    resolved = resolve_state_v2(room.rv, [sa, sb], room.events)
    assert resolved[TOPIC] == t.event_id
