"""The Event wrapper and room version table."""

from __future__ import annotations

from typing import Any

import pytest

from myelin.events.event import Event, InvalidEventError
from myelin.events.hashing import add_content_hash, compute_event_id
from myelin.events.room_versions import (
    KNOWN_ROOM_VERSIONS,
    STABLE_ROOM_VERSIONS,
    RoomVersions,
    UnsupportedRoomVersion,
    get_room_version,
)


def test_room_version_table() -> None:
    assert list(KNOWN_ROOM_VERSIONS) == [str(i) for i in range(1, 13)]
    assert set(STABLE_ROOM_VERSIONS) == set(KNOWN_ROOM_VERSIONS)
    assert get_room_version("10") is RoomVersions.V10
    with pytest.raises(UnsupportedRoomVersion):
        get_room_version("13")
    with pytest.raises(KeyError):
        get_room_version("org.example.nope")
    v = RoomVersions
    assert [r.event_format for r in (v.V1, v.V2, v.V3, v.V4, v.V12)] == [1, 1, 2, 3, 3]
    assert v.V1.state_res == 1 and v.V2.state_res == 2
    assert v.V5.enforce_key_validity and not v.V4.enforce_key_validity
    assert v.V5.special_case_aliases_auth and not v.V6.special_case_aliases_auth
    assert v.V6.strict_canonicaljson and not v.V5.strict_canonicaljson
    assert v.V7.knock_join_rule and not v.V6.knock_join_rule
    assert v.V8.restricted_join_rule and not v.V8.restricted_join_rule_fix
    assert v.V9.restricted_join_rule_fix
    assert v.V10.knock_restricted and v.V10.enforce_int_power_levels
    assert v.V11.implicit_room_creator and v.V11.updated_redaction_rules
    assert not v.V11.room_id_is_create_event_hash
    assert (
        v.V12.room_id_is_create_event_hash
        and v.V12.creators_infinite_power
        and v.V12.hydra_state_res
    )


def _pdu(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "room_id": "!r:a.test",
        "sender": "@u:a.test",
        "type": "m.room.message",
        "content": {"body": "hi"},
        "origin_server_ts": 7,
        "depth": 2,
        "prev_events": ["$p"],
        "auth_events": ["$a1", "$a2"],
        "unsigned": {"age": 5},
    }
    base.update(kw)
    return add_content_hash(base)


def test_event_fields() -> None:
    p = _pdu()
    ev = Event(p, RoomVersions.V10)
    assert ev.event_id == compute_event_id(p, RoomVersions.V10)
    assert ev.room_id == "!r:a.test" and ev.sender == "@u:a.test" and ev.type == "m.room.message"
    assert ev.state_key is None and not ev.is_state()
    assert ev.prev_event_ids == ["$p"] and ev.auth_event_ids == ["$a1", "$a2"]
    assert ev.depth == 2 and ev.origin_server_ts == 7
    assert ev.unsigned == {"age": 5} and ev.membership is None
    # unsigned is mutable and not part of the id.
    ev.unsigned["age"] = 10
    assert ev.get_pdu_json()["unsigned"] == {"age": 10}
    assert "event_id" not in ev.get_pdu_json()
    assert ev.get_dict()["event_id"] == ev.event_id
    # The caller's dict is copied.
    p["content"]["body"] = "changed"
    assert ev.content == {"body": "hi"}
    with pytest.raises(AttributeError):
        ev.foo = 1  # type: ignore[attr-defined]


def test_state_event_and_membership() -> None:
    ev = Event(
        _pdu(type="m.room.member", state_key="@u:a.test", content={"membership": "join"}),
        RoomVersions.V10,
    )
    assert ev.is_state() and ev.membership == "join"
    ev2 = Event(_pdu(type="m.room.topic", state_key="", content={}), RoomVersions.V10)
    assert ev2.is_state()


def test_redacts_location_depends_on_version() -> None:
    p = _pdu(type="m.room.redaction", redacts="$top", content={"redacts": "$inner"})
    assert Event(p, RoomVersions.V10).redacts == "$top"
    assert Event(p, RoomVersions.V11).redacts == "$inner"


def test_v1_event_id_and_pairs() -> None:
    p = _pdu(
        event_id="$x:a.test", prev_events=[["$p:a", {"sha256": "x"}]], auth_events=[["$a:a", {}]]
    )
    ev = Event(p, RoomVersions.V1)
    assert ev.event_id == "$x:a.test"
    assert ev.prev_event_ids == ["$p:a"] and ev.auth_event_ids == ["$a:a"]
    with pytest.raises(InvalidEventError):
        Event(_pdu(), RoomVersions.V1)  # no event_id


def test_v3_event_id_uses_standard_base64() -> None:
    ev3 = Event(_pdu(), RoomVersions.V3)
    ev4 = Event(_pdu(), RoomVersions.V4)
    assert ev3.event_id[1:].replace("+", "-").replace("/", "_") == ev4.event_id[1:]


def test_v12_create_room_id_is_derived() -> None:
    p = _pdu(
        type="m.room.create",
        state_key="",
        content={"room_version": "12"},
        prev_events=[],
        auth_events=[],
    )
    del p["room_id"]
    p = add_content_hash(p)
    ev = Event(p, RoomVersions.V12)
    assert ev.room_id == "!" + ev.event_id[1:]
    assert "room_id" not in ev.get_pdu_json()
    assert ev.get_dict()["room_id"] == ev.room_id
    # Pre-v12 a create event without room_id is malformed.
    with pytest.raises(InvalidEventError):
        Event(p, RoomVersions.V11)


def test_explicit_event_id_is_trusted() -> None:
    assert Event(_pdu(), RoomVersions.V10, event_id="$given").event_id == "$given"


@pytest.mark.parametrize(
    "bad",
    [
        {"type": 1},
        {"sender": None},
        {"content": []},
        {"depth": "1"},
        {"state_key": 5},
        {"prev_events": "x"},
    ],
)
def test_malformed(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidEventError):
        Event(_pdu(**bad), RoomVersions.V10)


def test_from_json_and_equality() -> None:
    import json

    p = _pdu()
    a = Event.from_json(json.dumps(p), RoomVersions.V10)
    b = Event(p, RoomVersions.V10)
    assert a == b and hash(a) == hash(b)
    assert a.event_id in repr(a)
