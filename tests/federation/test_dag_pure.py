"""The pure parts of receiving remote events: server ACLs (the spec's
"Server Access Control Lists") and the first check on receipt of a PDU
("Is a valid event").
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from myelin.events.room_versions import get_room_version
from myelin.federation.acl import server_allowed
from myelin.federation.pdu_checks import MAX_PDU_SIZE, PduFormatError, check_pdu_format

V10 = get_room_version("10")
V1 = get_room_version("1")


# -- m.room.server_acl ------------------------------------------------------------------

def test_acl_allow_glob_admits_matching_servers() -> None:
    acl = {"allow": ["*.example.org"]}
    assert server_allowed("chat.example.org", acl)
    assert not server_allowed("example.com", acl)


def test_acl_deny_wins_over_allow() -> None:
    acl = {"allow": ["*"], "deny": ["evil.example"]}
    assert server_allowed("good.example", acl)
    assert not server_allowed("evil.example", acl)


def test_acl_no_allow_list_denies_everyone() -> None:
    # "If there are no allow entries, no servers are allowed."
    assert not server_allowed("anyone.example", {"deny": []})


def test_acl_ignores_the_port() -> None:
    acl = {"allow": ["localhost"]}
    assert server_allowed("localhost:8448", acl)
    assert not server_allowed("localhost:8448", {"allow": ["*"], "deny": ["localhost"]})


def test_acl_ip_literals_refused_unless_allowed() -> None:
    acl: dict[str, Any] = {"allow": ["*"], "allow_ip_literals": False}
    assert not server_allowed("1.2.3.4", acl)
    assert not server_allowed("[::1]:8448", acl)
    assert server_allowed("name.example", acl)
    # allow_ip_literals defaults to true.
    assert server_allowed("1.2.3.4:8448", {"allow": ["*"]})


def test_acl_question_mark_matches_one_character_and_globs_span_dots() -> None:
    assert server_allowed("a1.example", {"allow": ["a?.example"]})
    assert not server_allowed("a12.example", {"allow": ["a?.example"]})
    assert server_allowed("x.y.z.example", {"allow": ["*.example"]})


def test_acl_matching_is_not_a_substring_search() -> None:
    assert not server_allowed("notexample.org.evil", {"allow": ["example.org"]})


# -- "Is a valid event" -----------------------------------------------------------------

def _pdu(**changes: Any) -> dict[str, Any]:
    pdu: dict[str, Any] = {
        "room_id": "!room:remote.example", "sender": "@bob:remote.example",
        "type": "m.room.message", "content": {"body": "hi"}, "depth": 5,
        "origin_server_ts": 1_700_000_000_000, "prev_events": ["$prev"],
        "auth_events": ["$create", "$pl", "$member"], "hashes": {"sha256": "x"},
        "signatures": {"remote.example": {"ed25519:a": "sig"}},
    }
    pdu.update(changes)
    return pdu


def test_a_well_formed_pdu_passes() -> None:
    check_pdu_format(_pdu(), V10)


@pytest.mark.parametrize("field", ["type", "sender", "room_id", "content", "depth",
                                   "origin_server_ts", "prev_events", "auth_events",
                                   "hashes", "signatures"])
def test_a_pdu_missing_a_required_field_is_invalid(field: str) -> None:
    pdu = _pdu()
    del pdu[field]
    with pytest.raises(PduFormatError):
        check_pdu_format(pdu, V10)


def test_a_pdu_over_the_size_limit_is_too_large() -> None:
    pdu = _pdu(content={"body": "x" * MAX_PDU_SIZE})
    with pytest.raises(PduFormatError) as e:
        check_pdu_format(pdu, V10)
    assert e.value.too_large


def test_a_sender_that_is_not_a_user_id_is_invalid() -> None:
    with pytest.raises(PduFormatError):
        check_pdu_format(_pdu(sender="bob"), V10)


def test_floats_are_not_canonical_json_in_strict_room_versions() -> None:
    with pytest.raises(PduFormatError):
        check_pdu_format(_pdu(content={"n": 1.5}), V10)


def test_too_many_prev_or_auth_events_is_invalid() -> None:
    with pytest.raises(PduFormatError):
        check_pdu_format(_pdu(prev_events=[f"$p{i}" for i in range(21)]), V10)
    with pytest.raises(PduFormatError):
        check_pdu_format(_pdu(auth_events=[f"$a{i}" for i in range(11)]), V10)


def test_v1_events_carry_an_event_id_and_reference_pairs() -> None:
    pdu = _pdu(event_id="$abc:remote.example", prev_events=[["$p:remote.example", {}]],
               auth_events=[["$c:remote.example", {}]])
    check_pdu_format(pdu, V1)
    no_id = copy.deepcopy(pdu)
    del no_id["event_id"]
    with pytest.raises(PduFormatError):
        check_pdu_format(no_id, V1)
    with pytest.raises(PduFormatError):
        check_pdu_format(_pdu(event_id="$abc:remote.example"), V1)  # bare ids in v1


def test_v12_create_event_has_no_room_id() -> None:
    v12 = get_room_version("12")
    create = _pdu(type="m.room.create", state_key="", prev_events=[], auth_events=[],
                  content={"room_version": "12"})
    del create["room_id"]
    check_pdu_format(create, v12)
    message = _pdu()
    del message["room_id"]
    with pytest.raises(PduFormatError):
        check_pdu_format(message, v12)


# -- room versions 1 and 2: conflicts go to the deepest event -----------------------------

def test_v1_stand_in_resolution_prefers_the_deepest_event_and_keeps_the_rest() -> None:
    from myelin.events.event import Event
    from myelin.events.state_res import resolve_state_by_depth

    def event(event_id: str, depth: int) -> Event:
        return Event(_pdu(event_id=event_id, type="m.room.power_levels", state_key="",
                          depth=depth, prev_events=[], auth_events=[]), V1)

    real, bogus = event("$real:hs", 5), event("$bogus:evil", 0)
    pl = ("m.room.power_levels", "")
    sets = [{pl: bogus.event_id, ("m.room.topic", ""): "$t:hs"},
            {pl: real.event_id, ("m.room.name", ""): "$n:hs"}]
    resolved = resolve_state_by_depth(sets, {e.event_id: e for e in (real, bogus)})
    assert resolved == {pl: real.event_id, ("m.room.topic", ""): "$t:hs",
                        ("m.room.name", ""): "$n:hs"}
    # Order of the sets does not matter.
    assert resolve_state_by_depth(sets[::-1], {e.event_id: e for e in (real, bogus)}) == \
        resolved
