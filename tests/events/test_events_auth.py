"""Authorization rules, one test per rule of the spec text (v1, v3, v6-v12)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from events_testlib import ALICE, BOB, CAROL, DAVE, Room

from myelin.events.auth import (
    AuthError,
    auth_types_for_event,
    check_auth,
    check_auth_events_list,
    get_power_levels,
    get_send_level,
    get_user_power_level,
)
from myelin.events.canonical import encode_canonical_json, unpadded_b64encode
from myelin.events.room_versions import RoomVersion, RoomVersions
from myelin.events.signing import generate_signing_key

MAIN = [RoomVersions.V6, RoomVersions.V10, RoomVersions.V11, RoomVersions.V12]
ALL = [getattr(RoomVersions, f"V{i}") for i in range(1, 13)]


def vid(rv: RoomVersion) -> str:
    return "v" + rv.identifier


def rejects(room: Room, *args: Any, **kw: Any) -> None:
    ev = room.make(*args, **kw)
    with pytest.raises(AuthError):
        room.check(ev)


def allows(room: Room, *args: Any, **kw: Any) -> None:
    room.check(room.make(*args, **kw))


# -- room creation ---------------------------------------------------------------


@pytest.mark.parametrize("rv", ALL, ids=vid)
def test_room_builder_creates_valid_room(rv: RoomVersion) -> None:
    room = Room(rv)
    room.invite(ALICE, BOB)
    room.join(BOB)
    room.send("m.room.message", BOB, {"body": "hi"})
    assert room.member(BOB).membership == "join"


@pytest.mark.parametrize("rv", ALL, ids=vid)
def test_create_with_prev_events_rejected(rv: RoomVersion) -> None:
    room = Room(rv)
    content = room.create.content
    ev = room.make("m.room.create", ALICE, dict(content), "", prev=[room.create.event_id], auth=[])
    with pytest.raises(AuthError, match="prev_events"):
        check_auth(ev, {})


@pytest.mark.parametrize("rv", [RoomVersions.V1, RoomVersions.V10, RoomVersions.V11], ids=vid)
def test_create_room_id_domain_must_match_sender(rv: RoomVersion) -> None:
    room = Room(rv)
    ev = room.make("m.room.create", BOB, {"creator": BOB}, "", prev=[], auth=[])
    with pytest.raises(AuthError, match="domain"):
        check_auth(ev, {})


def test_v12_create_with_room_id_rejected() -> None:
    room = Room(RoomVersions.V12)
    ev = room.make("m.room.create", ALICE, {}, "", prev=[], auth=[], extra={"room_id": "!x"})
    with pytest.raises(AuthError, match="room_id"):
        check_auth(ev, {})


@pytest.mark.parametrize("rv", ALL, ids=vid)
def test_create_unknown_room_version_rejected(rv: RoomVersion) -> None:
    room = Room(rv)
    content = {**room.create.content, "room_version": "99"}
    ev = room.make("m.room.create", ALICE, content, "", prev=[], auth=[])
    with pytest.raises(AuthError, match="room_version"):
        check_auth(ev, {})


@pytest.mark.parametrize("rv", ALL, ids=vid)
def test_create_without_creator(rv: RoomVersion) -> None:
    room = Room(rv)
    ev = room.make("m.room.create", ALICE, {"room_version": rv.identifier}, "", prev=[], auth=[])
    if rv.implicit_room_creator:
        check_auth(ev, {})  # v11 removed the creator requirement
    else:
        with pytest.raises(AuthError, match="creator"):
            check_auth(ev, {})


@pytest.mark.parametrize("extra", [["@ok:a.test", "nope"], "@x:a", [1]])
def test_v12_additional_creators_must_be_user_ids(extra: Any) -> None:
    room = Room(RoomVersions.V12)
    ev = room.make("m.room.create", ALICE, {"additional_creators": extra}, "", prev=[], auth=[])
    with pytest.raises(AuthError, match="additional_creators"):
        check_auth(ev, {})


def test_v12_valid_additional_creators() -> None:
    room = Room(RoomVersions.V12, create_content={"additional_creators": [BOB]})
    assert get_user_power_level(BOB, room.state) == math.inf


# -- rules about auth events -----------------------------------------------------


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_missing_create_event_rejected(rv: RoomVersion) -> None:
    room = Room(rv)
    ev = room.make("m.room.message", ALICE, {})
    amap = room.auth_map(ev)
    del amap[("m.room.create", "")]
    with pytest.raises(AuthError, match="create"):
        check_auth(ev, amap)


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_auth_event_from_other_room_rejected(rv: RoomVersion) -> None:
    room = Room(rv)
    other = Room(rv, creator=BOB)
    ev = room.make("m.room.message", ALICE, {})
    amap = room.auth_map(ev)
    amap[("m.room.power_levels", "")] = other.state[("m.room.power_levels", "")]
    with pytest.raises(AuthError, match="another room"):
        check_auth(ev, amap)


def test_v12_room_id_must_be_create_event_id() -> None:
    room = Room(RoomVersions.V12)
    ev = room.make("m.room.message", ALICE, {}, extra={"room_id": "!notthecreate"})
    amap = room.auth_map(ev)
    with pytest.raises(AuthError, match="room_id"):
        check_auth(ev, amap)


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_auth_events_list_checks(rv: RoomVersion) -> None:
    room = Room(rv)
    room.invite(ALICE, BOB)
    ev = room.make("m.room.message", ALICE, {})
    good = [room.events[a] for a in ev.auth_event_ids]
    check_auth_events_list(ev, good)
    with pytest.raises(AuthError, match="duplicate"):
        check_auth_events_list(ev, [*good, good[-1]])
    with pytest.raises(AuthError, match="unexpected"):
        check_auth_events_list(ev, [*good, room.state["m.room.join_rules", ""]])
    create = room.state[("m.room.create", "")]
    if rv.room_id_is_create_event_hash:
        # v12: the create event must not be listed.
        assert create.event_id not in ev.auth_event_ids
        with pytest.raises(AuthError, match="unexpected"):
            check_auth_events_list(ev, [*good, create])
    else:
        with pytest.raises(AuthError, match="create"):
            check_auth_events_list(ev, [e for e in good if e is not create])


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_auth_types_for_event(rv: RoomVersion) -> None:
    create = [] if rv.room_id_is_create_event_hash else [("m.room.create", "")]
    assert auth_types_for_event("m.room.create", "", ALICE, {}, rv) == []
    assert auth_types_for_event("m.room.message", None, ALICE, {}, rv) == [
        *create,
        ("m.room.power_levels", ""),
        ("m.room.member", ALICE),
    ]
    tpi = {"membership": "invite", "third_party_invite": {"signed": {"token": "tok"}}}
    assert auth_types_for_event("m.room.member", BOB, ALICE, tpi, rv) == [
        *create,
        ("m.room.power_levels", ""),
        ("m.room.member", ALICE),
        ("m.room.member", BOB),
        ("m.room.join_rules", ""),
        ("m.room.third_party_invite", "tok"),
    ]
    join = {"membership": "join", "join_authorised_via_users_server": CAROL}
    selected = auth_types_for_event("m.room.member", BOB, BOB, join, rv)
    assert (("m.room.member", CAROL) in selected) == rv.restricted_join_rule
    leave = auth_types_for_event("m.room.member", BOB, BOB, {"membership": "leave"}, rv)
    assert ("m.room.join_rules", "") not in leave


def test_join_authorised_via_not_selected_before_v8() -> None:
    join = {"membership": "join", "join_authorised_via_users_server": CAROL}
    assert ("m.room.member", CAROL) not in auth_types_for_event(
        "m.room.member", BOB, BOB, join, RoomVersions.V7
    )


# -- m.federate ------------------------------------------------------------------


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_m_federate_false_blocks_other_servers(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public", create_content={"m.federate": False})
    rejects(room, "m.room.member", BOB, {"membership": "join"}, BOB)
    local = "@eve:a.test"
    room.join(local)


# -- v1-v5: aliases and redaction rules ------------------------------------------


@pytest.mark.parametrize("rv", [RoomVersions.V1, RoomVersions.V5], ids=vid)
def test_aliases_rule_v1(rv: RoomVersion) -> None:
    room = Room(rv)
    # Allowed for anyone whose domain matches the state_key, even non-members.
    allows(room, "m.room.aliases", BOB, {"aliases": []}, "b.test")
    rejects(room, "m.room.aliases", BOB, {"aliases": []}, "a.test")
    rejects(room, "m.room.aliases", BOB, {"aliases": []})


def test_aliases_are_ordinary_state_from_v6() -> None:
    room = Room(RoomVersions.V6)
    rejects(room, "m.room.aliases", BOB, {"aliases": []}, "b.test")  # not joined
    allows(room, "m.room.aliases", ALICE, {"aliases": []}, "a.test")


@pytest.mark.parametrize("rv", [RoomVersions.V1, RoomVersions.V2], ids=vid)
def test_redaction_rule_v1(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public")
    room.join(BOB)
    msg = room.send("m.room.message", ALICE, {"body": "x"})
    # Bob (level 0 < redact 50) on another server cannot redact Alice's event...
    rejects(room, "m.room.redaction", BOB, {}, extra={"redacts": msg.event_id})
    # ...but can redact one whose event_id domain matches his redaction's.
    own = room.send("m.room.message", BOB, {"body": "y"})
    allows(room, "m.room.redaction", BOB, {}, extra={"redacts": own.event_id})
    # Alice has the redact level.
    allows(room, "m.room.redaction", ALICE, {}, extra={"redacts": "$z:b.test"})


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_redaction_not_special_from_v3(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public")
    room.join(BOB)
    msg = room.send("m.room.message", ALICE, {"body": "x"})
    allows(
        room, "m.room.redaction", BOB, {"redacts": msg.event_id}, extra={"redacts": msg.event_id}
    )
    # ...unless events/events_default make redactions require power.
    room.send(
        "m.room.power_levels",
        ALICE,
        {**room.state[("m.room.power_levels", "")].content, "events": {"m.room.redaction": 50}},
        "",
    )
    rejects(
        room, "m.room.redaction", BOB, {"redacts": msg.event_id}, extra={"redacts": msg.event_id}
    )


# -- membership: join ------------------------------------------------------------


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_member_needs_state_key_and_membership(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public")
    rejects(room, "m.room.member", BOB, {}, BOB)
    ev = room.make("m.room.member", BOB, {"membership": "join"}, None)
    with pytest.raises(AuthError, match="state_key"):
        check_auth(ev, room.auth_map(ev, room.state) | {("m.room.create", ""): room.create})


@pytest.mark.parametrize("rv", ALL, ids=vid)
def test_creator_initial_join_only_after_create(rv: RoomVersion) -> None:
    room = Room(rv)
    # A second "initial" join by someone else after the create is not special.
    create_state = {("m.room.create", ""): room.create}
    ev = room.make(
        "m.room.member",
        BOB,
        {"membership": "join"},
        BOB,
        prev=[room.create.event_id],
        state=create_state,
    )
    with pytest.raises(AuthError):
        check_auth(ev, room.auth_map(ev, create_state))
    # The creator's join directly after the create is allowed even with no join rules.
    ev = room.make(
        "m.room.member",
        ALICE,
        {"membership": "join"},
        ALICE,
        prev=[room.create.event_id],
        state=create_state,
    )
    check_auth(ev, room.auth_map(ev, create_state))


def test_v12_additional_creator_has_no_initial_join_shortcut() -> None:
    room = Room(RoomVersions.V12, create_content={"additional_creators": [BOB]})
    create_state = {("m.room.create", ""): room.create}
    ev = room.make(
        "m.room.member",
        BOB,
        {"membership": "join"},
        BOB,
        prev=[room.create.event_id],
        state=create_state,
    )
    with pytest.raises(AuthError):
        check_auth(ev, room.auth_map(ev, create_state))


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_join_sender_must_match_state_key(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public")
    rejects(room, "m.room.member", ALICE, {"membership": "join"}, BOB)


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_banned_user_cannot_join(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public")
    room.send("m.room.member", ALICE, {"membership": "ban"}, BOB)
    rejects(room, "m.room.member", BOB, {"membership": "join"}, BOB)


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_invite_join_rule(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="invite")
    rejects(room, "m.room.member", BOB, {"membership": "join"}, BOB)
    room.invite(ALICE, BOB)
    room.join(BOB)
    # Re-joining while joined (e.g. profile change) is fine.
    room.join(BOB)


@pytest.mark.parametrize("rv", ALL, ids=vid)
def test_knock_join_rule_behaves_like_invite_for_joins(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="knock")
    room.invite(ALICE, BOB)
    ev = room.make("m.room.member", BOB, {"membership": "join"}, BOB)
    if rv.knock_join_rule:
        room.check(ev)
    else:
        with pytest.raises(AuthError):
            room.check(ev)


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_public_join_rule(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public")
    room.join(BOB)


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_unknown_join_rule_rejects(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="private")
    rejects(room, "m.room.member", BOB, {"membership": "join"}, BOB)


@pytest.mark.parametrize(
    ("rv", "rule"),
    [
        (RoomVersions.V8, "restricted"),
        (RoomVersions.V9, "restricted"),
        (RoomVersions.V10, "knock_restricted"),
        (RoomVersions.V11, "restricted"),
        (RoomVersions.V12, "knock_restricted"),
    ],
    ids=lambda x: x if isinstance(x, str) else vid(x),
)
def test_restricted_join(rv: RoomVersion, rule: str) -> None:
    room = Room(rv, join_rule=rule, users={CAROL: 0})
    room.invite(ALICE, CAROL)
    room.join(CAROL)
    # No authorising user: reject.
    rejects(room, "m.room.member", BOB, {"membership": "join"}, BOB)
    # Authorised by a joined user with the invite level (0 by default): allow.
    allows(
        room,
        "m.room.member",
        BOB,
        {"membership": "join", "join_authorised_via_users_server": CAROL},
        BOB,
    )
    # Authorised by a non-member: reject.
    rejects(
        room,
        "m.room.member",
        BOB,
        {"membership": "join", "join_authorised_via_users_server": DAVE},
        BOB,
    )
    # Authoriser without the invite level: reject.
    pl = dict(room.state[("m.room.power_levels", "")].content)
    room.send("m.room.power_levels", ALICE, {**pl, "invite": 50}, "")
    rejects(
        room,
        "m.room.member",
        BOB,
        {"membership": "join", "join_authorised_via_users_server": CAROL},
        BOB,
    )
    # The creator has the invite level.
    allows(
        room,
        "m.room.member",
        BOB,
        {"membership": "join", "join_authorised_via_users_server": ALICE},
        BOB,
    )
    # Already invited: allowed without an authoriser.
    room.invite(ALICE, BOB)
    allows(room, "m.room.member", BOB, {"membership": "join"}, BOB)


@pytest.mark.parametrize("rv", [RoomVersions.V7, RoomVersions.V8, RoomVersions.V9], ids=vid)
def test_restricted_rules_unknown_in_older_versions(rv: RoomVersion) -> None:
    rule = "restricted" if rv is RoomVersions.V7 else "knock_restricted"
    room = Room(rv, join_rule=rule)
    rejects(
        room,
        "m.room.member",
        BOB,
        {"membership": "join", "join_authorised_via_users_server": ALICE},
        BOB,
    )


# -- membership: invite ----------------------------------------------------------


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_invite_rules(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public", power_levels={"invite": 50})
    room.join(BOB)
    # Sender not joined.
    rejects(room, "m.room.member", CAROL, {"membership": "invite"}, DAVE)
    # Sender below the invite level.
    rejects(room, "m.room.member", BOB, {"membership": "invite"}, DAVE)
    # Target already joined.
    rejects(room, "m.room.member", ALICE, {"membership": "invite"}, BOB)
    # Target banned.
    room.send("m.room.member", ALICE, {"membership": "ban"}, CAROL)
    rejects(room, "m.room.member", ALICE, {"membership": "invite"}, CAROL)
    allows(room, "m.room.member", ALICE, {"membership": "invite"}, DAVE)


def _tpi_room(rv: RoomVersion) -> tuple[Room, Any]:
    room = Room(rv)
    key = generate_signing_key("0")
    pub = unpadded_b64encode(key.verify_key.encode())
    room.send(
        "m.room.third_party_invite",
        ALICE,
        {"display_name": "b", "public_key": pub, "key_validity_url": "x"},
        "tok",
    )
    return room, key


def _signed(key: Any, mxid: str, token: str = "tok") -> dict[str, Any]:
    signed: dict[str, Any] = {"mxid": mxid, "token": token}
    sig = unpadded_b64encode(key.sign(encode_canonical_json(signed)))
    signed["signatures"] = {"id.test": {"ed25519:0": sig}}
    return signed


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_third_party_invite_membership(rv: RoomVersion) -> None:
    room, key = _tpi_room(rv)
    ok = {
        "membership": "invite",
        "third_party_invite": {"display_name": "b", "signed": _signed(key, BOB)},
    }
    allows(room, "m.room.member", ALICE, ok, BOB)
    # No signed block.
    rejects(room, "m.room.member", ALICE, {"membership": "invite", "third_party_invite": {}}, BOB)
    # mxid / token missing.
    bad = {"membership": "invite", "third_party_invite": {"signed": {"mxid": BOB}}}
    rejects(room, "m.room.member", ALICE, bad, BOB)
    # mxid does not match state_key.
    rejects(
        room,
        "m.room.member",
        ALICE,
        {"membership": "invite", "third_party_invite": {"signed": _signed(key, CAROL)}},
        BOB,
    )
    # No matching m.room.third_party_invite for the token.
    rejects(
        room,
        "m.room.member",
        ALICE,
        {"membership": "invite", "third_party_invite": {"signed": _signed(key, BOB, "nope")}},
        BOB,
    )
    # Bad signature.
    other = generate_signing_key("0")
    rejects(
        room,
        "m.room.member",
        ALICE,
        {"membership": "invite", "third_party_invite": {"signed": _signed(other, BOB)}},
        BOB,
    )
    # Sender differs from the third_party_invite sender.
    room.send("m.room.member", ALICE, {"membership": "invite"}, CAROL)
    room.join(CAROL)
    rejects(room, "m.room.member", CAROL, ok, BOB)
    # Target banned.
    room.send("m.room.member", ALICE, {"membership": "ban"}, BOB)
    rejects(room, "m.room.member", ALICE, ok, BOB)


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_third_party_invite_public_keys_list(rv: RoomVersion) -> None:
    room = Room(rv)
    key = generate_signing_key("0")
    pub = unpadded_b64encode(key.verify_key.encode())
    room.send("m.room.third_party_invite", ALICE, {"public_keys": [{"public_key": pub}]}, "tok")
    allows(
        room,
        "m.room.member",
        ALICE,
        {"membership": "invite", "third_party_invite": {"signed": _signed(key, BOB)}},
        BOB,
    )


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_third_party_invite_event_needs_invite_level(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public", power_levels={"invite": 50})
    room.join(BOB)
    rejects(room, "m.room.third_party_invite", BOB, {}, "t")
    allows(room, "m.room.third_party_invite", ALICE, {}, "t")


# -- membership: leave / kick / ban / knock -------------------------------------


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_leave_self(rv: RoomVersion) -> None:
    room = Room(rv)
    # Never in the room: cannot leave.
    rejects(room, "m.room.member", BOB, {"membership": "leave"}, BOB)
    room.invite(ALICE, BOB)
    allows(room, "m.room.member", BOB, {"membership": "leave"}, BOB)  # reject invite
    room.join(BOB)
    allows(room, "m.room.member", BOB, {"membership": "leave"}, BOB)


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_banned_user_cannot_leave_to_lift_the_ban(rv: RoomVersion) -> None:
    # "If the sender matches state_key, allow if and only if that user's
    # current membership state is invite, join, or knock."
    room = Room(rv, join_rule="public")
    room.join(BOB)
    room.send("m.room.member", ALICE, {"membership": "ban"}, BOB)
    rejects(room, "m.room.member", BOB, {"membership": "leave"}, BOB)


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_a_user_who_left_cannot_leave_again(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public")
    room.join(BOB)
    room.send("m.room.member", BOB, {"membership": "leave"}, BOB)
    rejects(room, "m.room.member", BOB, {"membership": "leave"}, BOB)


@pytest.mark.parametrize("rv", [RoomVersions.V6, RoomVersions.V7, RoomVersions.V12], ids=vid)
def test_leave_while_knocking(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="knock")
    if rv.knock_join_rule:
        room.send("m.room.member", BOB, {"membership": "knock"}, BOB)
        allows(room, "m.room.member", BOB, {"membership": "leave"}, BOB)
    else:
        rejects(room, "m.room.member", BOB, {"membership": "knock"}, BOB)


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_kick_rules(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public", users={BOB: 50})
    room.join(BOB)
    room.join(CAROL)
    # Kicker must be joined.
    rejects(room, "m.room.member", DAVE, {"membership": "leave"}, CAROL)
    # Bob (50 >= kick 50) can kick Carol (0).
    allows(room, "m.room.member", BOB, {"membership": "leave"}, CAROL)
    # Carol (0) cannot kick Bob.
    rejects(room, "m.room.member", CAROL, {"membership": "leave"}, BOB)
    # Bob cannot kick Alice (higher power).
    rejects(room, "m.room.member", BOB, {"membership": "leave"}, ALICE)


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_unban_needs_ban_level(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public", users={BOB: 50}, power_levels={"ban": 75, "kick": 50})
    room.join(BOB)
    room.send("m.room.member", ALICE, {"membership": "ban"}, CAROL)
    rejects(room, "m.room.member", BOB, {"membership": "leave"}, CAROL)
    allows(room, "m.room.member", ALICE, {"membership": "leave"}, CAROL)


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_ban_rules(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public", users={BOB: 50})
    room.join(BOB)
    room.join(CAROL)
    rejects(room, "m.room.member", DAVE, {"membership": "ban"}, CAROL)  # not joined
    rejects(room, "m.room.member", CAROL, {"membership": "ban"}, BOB)  # too low
    rejects(room, "m.room.member", BOB, {"membership": "ban"}, ALICE)  # target higher
    allows(room, "m.room.member", BOB, {"membership": "ban"}, CAROL)
    allows(room, "m.room.member", BOB, {"membership": "ban"}, DAVE)  # ban a non-member


@pytest.mark.parametrize(
    "rv", [RoomVersions.V7, RoomVersions.V10, RoomVersions.V11, RoomVersions.V12], ids=vid
)
def test_knock_rules(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public")
    rejects(room, "m.room.member", BOB, {"membership": "knock"}, BOB)  # join rule not knock
    room = Room(rv, join_rule="knock")
    rejects(room, "m.room.member", ALICE, {"membership": "knock"}, BOB)  # sender != state_key
    allows(room, "m.room.member", BOB, {"membership": "knock"}, BOB)
    room.invite(ALICE, BOB)
    rejects(room, "m.room.member", BOB, {"membership": "knock"}, BOB)  # already invited
    rejects(room, "m.room.member", ALICE, {"membership": "knock"}, ALICE)  # already joined
    room.send("m.room.member", ALICE, {"membership": "ban"}, CAROL)
    rejects(room, "m.room.member", CAROL, {"membership": "knock"}, CAROL)  # banned
    if rv.knock_restricted:
        room2 = Room(rv, join_rule="knock_restricted")
        allows(room2, "m.room.member", BOB, {"membership": "knock"}, BOB)


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_unknown_membership_rejected(rv: RoomVersion) -> None:
    room = Room(rv)
    rejects(room, "m.room.member", ALICE, {"membership": "dance"}, ALICE)


# -- other events ------------------------------------------------------------


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_sender_not_in_room(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public")
    rejects(room, "m.room.message", BOB, {"body": "x"})
    room.invite(ALICE, CAROL)
    rejects(room, "m.room.message", CAROL, {"body": "x"})  # invited is not joined


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_required_power_level(rv: RoomVersion) -> None:
    room = Room(
        rv,
        join_rule="public",
        power_levels={"events": {"m.room.topic": 10, "org.custom": 5}, "events_default": 1},
    )
    room.join(BOB)
    rejects(room, "m.room.topic", BOB, {"topic": "t"}, "")  # events entry
    rejects(room, "m.room.message", BOB, {"body": "x"})  # events_default
    rejects(room, "org.state", BOB, {}, "")  # state_default (50)
    allows(room, "m.room.topic", ALICE, {"topic": "t"}, "")


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_state_key_starting_with_at(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public", power_levels={"state_default": 0})
    room.join(BOB)
    rejects(room, "org.custom", BOB, {}, ALICE)
    allows(room, "org.custom", BOB, {}, BOB)
    rejects(room, "org.custom", ALICE, {}, BOB)  # even for admins


# -- power levels ---------------------------------------------------------------


def pl_content(room: Room) -> dict[str, Any]:
    return dict(room.state[("m.room.power_levels", "")].content)


@pytest.mark.parametrize("rv", [RoomVersions.V10, RoomVersions.V11, RoomVersions.V12], ids=vid)
@pytest.mark.parametrize(
    "key", ["users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"]
)
def test_v10_integer_levels_enforced(rv: RoomVersion, key: str) -> None:
    room = Room(rv)
    rejects(room, "m.room.power_levels", ALICE, {**pl_content(room), key: "50"}, "")
    allows(room, "m.room.power_levels", ALICE, {**pl_content(room), key: 50}, "")


@pytest.mark.parametrize("rv", [RoomVersions.V6, RoomVersions.V9], ids=vid)
def test_stringy_levels_accepted_before_v10(rv: RoomVersion) -> None:
    room = Room(rv)
    allows(
        room,
        "m.room.power_levels",
        ALICE,
        {**pl_content(room), "ban": " +50 ", "users": {ALICE: "100"}},
        "",
    )
    rejects(room, "m.room.power_levels", ALICE, {**pl_content(room), "users": {ALICE: "1.5"}}, "")


@pytest.mark.parametrize("rv", [RoomVersions.V10, RoomVersions.V12], ids=vid)
@pytest.mark.parametrize("key", ["events", "notifications"])
def test_v10_events_and_notifications_must_be_int_maps(rv: RoomVersion, key: str) -> None:
    room = Room(rv)
    rejects(room, "m.room.power_levels", ALICE, {**pl_content(room), key: {"x": "1"}}, "")
    rejects(room, "m.room.power_levels", ALICE, {**pl_content(room), key: []}, "")


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_users_must_be_user_ids_with_int_levels(rv: RoomVersion) -> None:
    room = Room(rv)
    rejects(
        room, "m.room.power_levels", ALICE, {**pl_content(room), "users": {"not-a-user": 1}}, ""
    )
    rejects(room, "m.room.power_levels", ALICE, {**pl_content(room), "users": {BOB: True}}, "")
    rejects(room, "m.room.power_levels", ALICE, {**pl_content(room), "users": []}, "")


def test_v12_creators_not_allowed_in_users() -> None:
    room = Room(RoomVersions.V12, create_content={"additional_creators": [BOB]})
    rejects(room, "m.room.power_levels", ALICE, {**pl_content(room), "users": {ALICE: 100}}, "")
    rejects(room, "m.room.power_levels", ALICE, {**pl_content(room), "users": {BOB: 100}}, "")
    allows(room, "m.room.power_levels", ALICE, {**pl_content(room), "users": {CAROL: 100}}, "")


def test_v12_creator_infinite_power() -> None:
    room = Room(RoomVersions.V12, join_rule="public", users={BOB: 100})
    room.join(BOB)
    assert get_user_power_level(ALICE, room.state) == math.inf
    # Bob (100) cannot kick or ban the creator, who can do anything to Bob.
    rejects(room, "m.room.member", BOB, {"membership": "ban"}, ALICE)
    allows(room, "m.room.member", ALICE, {"membership": "ban"}, BOB)
    allows(room, "m.room.power_levels", ALICE, {**pl_content(room), "users": {BOB: 1_000_000}}, "")


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_first_power_levels_allowed(rv: RoomVersion) -> None:
    room = Room(rv)
    state = {k: v for k, v in room.state.items() if k != ("m.room.power_levels", "")}
    ev = room.make(
        "m.room.power_levels", ALICE, {"users": {BOB: 100}, "ban": 1000}, "", state=state
    )
    check_auth(ev, room.auth_map(ev, state))


@pytest.mark.parametrize("rv", MAIN, ids=vid)
def test_power_levels_change_rules(rv: RoomVersion) -> None:
    room = Room(
        rv,
        join_rule="public",
        users={BOB: 50, DAVE: 60},
        power_levels={"ban": 75, "events": {"m.room.name": 60}, "notifications": {"room": 60}},
    )
    room.join(BOB)
    base = {**pl_content(room), "state_default": 50, "events": {"m.room.name": 60}}
    room.send("m.room.power_levels", ALICE, base, "")
    base = pl_content(room)

    def bob(content: dict[str, Any]) -> Any:
        return room.make("m.room.power_levels", BOB, content, "")

    def ok(content: dict[str, Any]) -> None:
        room.check(bob(content))

    def bad(content: dict[str, Any]) -> None:
        with pytest.raises(AuthError):
            room.check(bob(content))

    # Bob has 50 and the power_levels event needs state_default 50.
    ok(base)
    bad({**base, "ban": 50})  # current value (75) above Bob
    bad({**base, "kick": 51})  # new value above Bob
    ok({**base, "kick": 40})  # current 50 and new 40 both <= 50
    bad({k: v for k, v in base.items() if k != "ban"})  # removing a too-high value
    bad({**base, "events": {}})  # removing events entry above Bob
    bad({**base, "events": {"m.room.name": 60, "m.room.topic": 51}})  # adding above
    ok({**base, "events": {"m.room.name": 60, "m.room.topic": 50}})
    if rv.limit_notifications_power_levels:
        bad({**base, "notifications": {"room": 10}})  # changing above-Bob notifications
    bad({**base, "users": {**base["users"], CAROL: 51}})  # new user level above Bob
    ok({**base, "users": {**base["users"], CAROL: 50}})
    bad({**base, "users": {**base["users"], DAVE: 0}})  # Dave's 60 is not below Bob's 50
    bad({**base, "users": {k: v for k, v in base["users"].items() if k != DAVE}})
    ok({**base, "users": {**base["users"], BOB: 10}})  # demoting oneself


@pytest.mark.parametrize("rv", [RoomVersions.V10, RoomVersions.V11], ids=vid)
def test_cannot_change_peer_with_equal_level(rv: RoomVersion) -> None:
    room = Room(rv, join_rule="public", users={BOB: 50, CAROL: 50})
    room.join(BOB)
    users = dict(pl_content(room)["users"])
    room.send("m.room.power_levels", ALICE, {**pl_content(room), "state_default": 50}, "")
    users[CAROL] = 0
    rejects(room, "m.room.power_levels", BOB, {**pl_content(room), "users": users}, "")
    users.pop(CAROL)
    rejects(room, "m.room.power_levels", BOB, {**pl_content(room), "users": users}, "")


def test_notifications_not_checked_before_v6() -> None:
    room = Room(
        RoomVersions.V5,
        join_rule="public",
        users={BOB: 50},
        power_levels={"notifications": {"room": 100}},
    )
    room.join(BOB)
    allows(
        room,
        "m.room.power_levels",
        BOB,
        {**pl_content(room), "notifications": {"room": 0}, "users": {ALICE: 100, BOB: 50}},
        "",
    )


# -- helpers --------------------------------------------------------------------


@pytest.mark.parametrize("rv", ALL, ids=vid)
def test_power_helpers(rv: RoomVersion) -> None:
    room = Room(
        rv,
        users={BOB: 20},
        power_levels={"events": {"m.room.topic": 7}, "events_default": 3, "state_default": 40},
    )
    expected_alice = math.inf if rv.creators_infinite_power else 100
    assert get_user_power_level(ALICE, room.state) == expected_alice
    assert get_user_power_level(BOB, room.state, rv) == 20
    assert get_user_power_level(CAROL, room.state) == 0
    pl = get_power_levels(room.state)
    assert get_send_level("m.room.topic", "", pl, rv) == 7
    assert get_send_level("m.room.message", None, pl, rv) == 3
    assert get_send_level("org.x", "", pl, rv) == 40
    assert get_send_level("org.x", "", None, rv) == 0
    assert get_send_level("org.x", "", {}, rv) == 50


@pytest.mark.parametrize(
    "rv", [RoomVersions.V1, RoomVersions.V10, RoomVersions.V11, RoomVersions.V12], ids=vid
)
def test_creator_level_without_power_levels(rv: RoomVersion) -> None:
    room = Room(rv)
    state = {("m.room.create", ""): room.create}
    assert get_user_power_level(ALICE, state) == (math.inf if rv.creators_infinite_power else 100)
    assert get_user_power_level(BOB, state) == 0


def test_floaty_power_levels_v1() -> None:
    room = Room(RoomVersions.V1, users={BOB: 50.7})  # type: ignore[dict-item]
    assert get_user_power_level(BOB, room.state) == 50
