"""The pure rules of the membership handshakes (server-server API, "Joining
rooms", "Leaving rooms", "Inviting to a room", "Knocking"), one test per rule."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "events"))

from events_testlib import ALICE, BOB, CAROL, Room

from myelin.events.event import Event
from myelin.events.room_versions import RoomVersion, RoomVersions
from myelin.federation.membership_rules import (
    TemplateError,
    authorised_events,
    check_invite_event,
    check_membership_event,
    check_template,
    event_from_template,
    parse_events,
    servers_in_room,
    state_map,
)

ROOM = "!room:a.test"
VERSIONS = [RoomVersions.V1, RoomVersions.V10, RoomVersions.V11, RoomVersions.V12]


def template(**changes: Any) -> dict[str, Any]:
    t: dict[str, Any] = {
        "type": "m.room.member", "room_id": ROOM, "sender": BOB, "state_key": BOB,
        "content": {"membership": "join"}, "prev_events": ["$p"], "auth_events": ["$a"],
        "depth": 7, "origin": "a.test", "origin_server_ts": 1,
    }
    t.update(changes)
    return t


# -- the joining server checks the resident's template ------------------------

def test_a_template_for_this_user_room_and_membership_is_accepted() -> None:
    check_template(template(), ROOM, BOB, "join")


@pytest.mark.parametrize("bad", [
    {"type": "m.room.message"},
    {"room_id": "!other:a.test"},
    {"sender": CAROL},
    {"state_key": CAROL},
    {"content": {"membership": "leave"}},
    {"content": "join"},
    {"prev_events": None},
    {"auth_events": "$a"},
    {"depth": "7"},
    {"depth": True},
], ids=["type", "room", "sender", "state_key", "membership", "content", "prev_events",
        "auth_events", "depth-str", "depth-bool"])
def test_a_template_for_anything_else_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(TemplateError):
        check_template(template(**bad), ROOM, BOB, "join")


def test_a_template_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(TemplateError):
        check_template(["m.room.member"], ROOM, BOB, "join")


# -- building our event from it -------------------------------------------------

def test_our_content_goes_in_but_the_templates_membership_and_vouching_user_win() -> None:
    t = template(content={"membership": "join",
                          "join_authorised_via_users_server": "@mod:a.test"})
    pdu = event_from_template(t, RoomVersions.V10, "b.test",
                              {"membership": "leave", "displayname": "Bob"}, 5000)
    assert pdu["content"] == {"membership": "join", "displayname": "Bob",
                              "join_authorised_via_users_server": "@mod:a.test"}


def test_the_event_is_ours_origin_and_time_and_keeps_the_templates_graph() -> None:
    pdu = event_from_template(template(signatures={"a.test": {}}, hashes={"sha256": "x"},
                                       unsigned={"age": 1}),
                              RoomVersions.V10, "b.test", {}, 5000)
    assert pdu["origin"] == "b.test" and pdu["origin_server_ts"] == 5000
    assert pdu["prev_events"] == ["$p"] and pdu["auth_events"] == ["$a"]
    assert pdu["depth"] == 7
    assert not {"signatures", "hashes", "unsigned", "event_id"} & set(pdu)


def test_room_versions_1_and_2_get_an_event_id_of_the_joining_server() -> None:
    pdu = event_from_template(template(event_id="$theirs:a.test"), RoomVersions.V1,
                              "b.test", {}, 5000)
    assert pdu["event_id"].startswith("$") and pdu["event_id"].endswith(":b.test")
    assert "event_id" not in event_from_template(template(), RoomVersions.V3, "b.test", {}, 1)


# -- the resident checks the signed event it is sent -------------------------------

def _event(rv: RoomVersion = RoomVersions.V10, **changes: Any) -> Event:
    pdu = template(**changes)
    pdu.pop("origin", None)
    return Event(pdu, rv)


def test_a_join_of_a_user_of_the_sending_server_is_accepted() -> None:
    event = _event()
    check_membership_event(event, origin="b.test", room_id=ROOM, event_id=event.event_id,
                           membership="join")


@pytest.mark.parametrize("what, kwargs", [
    ("event id", {"event_id": "$other"}),
    ("room", {"room_id": "!other:a.test"}),
    ("membership", {"membership": "leave"}),
    ("origin", {"origin": "c.test"}),
])
def test_a_send_join_body_that_is_not_what_the_path_names_is_refused(
        what: str, kwargs: dict[str, Any]) -> None:
    event = _event()
    args: dict[str, Any] = {"origin": "b.test", "room_id": ROOM, "event_id": event.event_id,
                            "membership": "join", **kwargs}
    with pytest.raises(TemplateError):
        check_membership_event(event, **args)


def test_a_membership_of_someone_other_than_its_sender_is_refused() -> None:
    event = _event(state_key="@eve:b.test")
    with pytest.raises(TemplateError):
        check_membership_event(event, origin="b.test", room_id=ROOM,
                               event_id=event.event_id, membership="join")


def test_a_non_member_event_is_refused() -> None:
    event = _event(type="m.room.topic")
    with pytest.raises(TemplateError):
        check_membership_event(event, origin="b.test", room_id=ROOM,
                               event_id=event.event_id, membership="join")


# -- invites of our users -----------------------------------------------------------

def _invite(**changes: Any) -> Event:
    fields: dict[str, Any] = {"sender": ALICE, "state_key": BOB,
                              "content": {"membership": "invite"}, **changes}
    return _event(**fields)


def _is_b(user_id: str) -> bool:
    return user_id.endswith(":b.test")


def test_an_invite_of_our_user_from_a_user_of_the_sending_server_is_accepted() -> None:
    event = _invite()
    check_invite_event(event, origin="a.test", room_id=ROOM, event_id=event.event_id,
                       is_mine=_is_b)


def test_an_invite_of_someone_elses_user_is_refused() -> None:
    event = _invite(state_key=CAROL)
    with pytest.raises(TemplateError):
        check_invite_event(event, origin="a.test", room_id=ROOM, event_id=event.event_id,
                           is_mine=_is_b)


def test_an_invite_sent_in_another_servers_name_is_refused() -> None:
    event = _invite()
    with pytest.raises(TemplateError):
        check_invite_event(event, origin="c.test", room_id=ROOM, event_id=event.event_id,
                           is_mine=_is_b)


def test_a_membership_other_than_invite_is_not_an_invite() -> None:
    event = _invite(content={"membership": "join"})
    with pytest.raises(TemplateError):
        check_invite_event(event, origin="a.test", room_id=ROOM, event_id=event.event_id,
                           is_mine=_is_b)


# -- the state and auth chain of a send_join answer -------------------------------

@pytest.mark.parametrize("rv", VERSIONS, ids=lambda rv: "v" + rv.identifier)
def test_a_rooms_own_state_passes_whole(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public")
    room.join(BOB)
    passing = authorised_events(room.events.values())
    assert set(passing) == set(room.events)


@pytest.mark.parametrize("rv", VERSIONS, ids=lambda rv: "v" + rv.identifier)
def test_an_event_resting_on_a_missing_auth_event_is_left_out(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public")
    join = room.join(BOB)
    events = [e for e in room.events.values()
              if (e.type, e.state_key) != ("m.room.join_rules", "")]
    passing = authorised_events(events)
    assert join.event_id not in passing
    assert room.create.event_id in passing


@pytest.mark.parametrize("rv", VERSIONS, ids=lambda rv: "v" + rv.identifier)
def test_an_event_the_auth_rules_refuse_is_left_out_and_so_is_what_rests_on_it(
        rv: RoomVersion) -> None:
    room = Room(rv, join_rule="invite")
    # Bob joins an invite-only room uninvited (forged), then sets the topic.
    forged = room.apply(room.make("m.room.member", BOB, {"membership": "join"},
                                  state_key=BOB))
    topic = room.apply(room.make("m.room.topic", BOB, {"topic": "mine"}, state_key=""))
    passing = authorised_events(room.events.values())
    assert forged.event_id not in passing and topic.event_id not in passing
    assert room.member(ALICE).event_id in passing


def test_only_this_rooms_well_formed_events_are_read() -> None:
    room = Room(RoomVersions.V10, join_rule="public")
    other = Room(RoomVersions.V10, creator="@zed:z.test")
    raw = [e.get_pdu_json() for e in room.events.values()]
    raw += [other.create.get_pdu_json(), {"type": 5}, "junk"]
    parsed = parse_events(raw, RoomVersions.V10, room.room_id)
    assert {e.event_id for e in parsed} == set(room.events)
    assert parse_events({"not": "a list"}, RoomVersions.V10, room.room_id) == []


def test_servers_in_room_are_those_with_a_joined_member() -> None:
    room = Room(RoomVersions.V10, join_rule="public")
    room.join(BOB)
    room.invite(ALICE, CAROL)
    assert servers_in_room(state_map(list(room.state.values()))) == ["a.test", "b.test"]
