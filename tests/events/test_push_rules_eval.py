"""Push rule evaluation against the spec's text: one test per condition kind,
per path/escaping rule, and per server-default rule."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from myelin.events.push_rules_eval import (
    PushRuleEvaluator,
    RoomContext,
    glob_matches,
    highlights,
    notifies,
    parse_key_path,
)
from myelin.handlers.push_rules import default_rules_for

ALICE = "@alice:example.org"
BOB = "@bob:example.org"
ROOM = "!room:example.org"


def message(body: str = "hello", **content: Any) -> dict[str, Any]:
    return {"type": "m.room.message", "room_id": ROOM, "sender": BOB,
            "event_id": "$e", "content": {"msgtype": "m.text", "body": body, **content}}


def ev(event: dict[str, Any], members: int = 3, power: float = 0,
       levels: dict[str, int] | None = None) -> PushRuleEvaluator:
    return PushRuleEvaluator(event, RoomContext(members, power, levels or {}))


def holds(condition: dict[str, Any], event: dict[str, Any], **kw: Any) -> bool:
    display_name = kw.pop("display_name", None)
    return ev(event, **kw).condition_holds(condition, ALICE, display_name)


def default_actions(event: dict[str, Any], *, members: int = 3, power: int = 0,
                    display_name: str | None = "Alice", user_id: str = ALICE,
                    ruleset: dict[str, Any] | None = None) -> list[Any]:
    rules = ruleset if ruleset is not None else default_rules_for(user_id)
    return ev(event, members, power).actions_for(rules, user_id, display_name)


def matched_rule(event: dict[str, Any], **kw: Any) -> str | None:
    """Which default rule decides (by disabling the winners one by one)."""
    rules = default_rules_for(kw.pop("user_id", ALICE))
    evaluator = ev(event, kw.pop("members", 3), kw.pop("power", 0))
    for kind in ("override", "content", "room", "sender", "underride"):
        for rule in rules[kind]:
            if evaluator.rule_matches(kind, rule, ALICE, kw.get("display_name", "Alice")):
                return str(rule["rule_id"])
    return None


# -- dot-separated paths ------------------------------------------------------

def test_path_splits_on_dots() -> None:
    assert parse_key_path("content.body") == ("content", "body")


def test_path_escaped_dot_is_literal() -> None:
    assert parse_key_path("content.m\\.relates_to") == ("content", "m.relates_to")


def test_path_escaped_backslash_is_literal() -> None:
    assert parse_key_path("content.m\\\\foo") == ("content", "m\\foo")


def test_path_other_escapes_are_kept() -> None:
    assert parse_key_path("content.m\\xfoo") == ("content", "m\\xfoo")


def test_event_match_through_escaped_key() -> None:
    event = message(**{"m.relates_to": {"rel_type": "m.thread"}})
    assert holds({"kind": "event_match", "key": "content.m\\.relates_to.rel_type",
                  "pattern": "m.thread"}, event)
    # Without the escape the path names content.m.relates_to: absent.
    assert not holds({"kind": "event_match", "key": "content.m.relates_to.rel_type",
                      "pattern": "m.thread"}, event)


# -- event_match ---------------------------------------------------------------

def topic(value: Any) -> dict[str, Any]:
    return {"type": "m.room.topic", "state_key": "", "sender": BOB, "room_id": ROOM,
            "content": {"topic": value}}


LUNCH = {"kind": "event_match", "key": "content.topic", "pattern": "lunc?*"}


def test_event_match_glob_whole_value_case_insensitive() -> None:
    assert holds(LUNCH, topic("Lunch plans"))
    assert holds(LUNCH, topic("LUNCH"))


def test_event_match_must_match_the_entire_value() -> None:
    assert not holds(LUNCH, topic(" lunch"))
    assert not holds(LUNCH, topic("lunc"))


def test_event_match_absent_or_not_string_never_matches_even_star() -> None:
    star = {"kind": "event_match", "key": "content.topic", "pattern": "*"}
    assert not holds(star, topic(None))
    assert not holds(star, topic(5))
    assert not holds({"kind": "event_match", "key": "content.nothing", "pattern": "*"},
                     topic("x"))


def test_event_match_body_word_boundaries() -> None:
    pattern = {"kind": "event_match", "key": "content.body", "pattern": "ex*ple"}
    assert holds(pattern, message("An example event."))
    assert holds(pattern, message("exple"))
    assert holds(pattern, message("An exciting triple-whammy"))
    assert not holds(pattern, message("Anexample event"))
    assert not holds(pattern, message("examples"))


def test_glob_question_mark_needs_one_character() -> None:
    assert glob_matches("a?c", "abc")
    assert not glob_matches("a?c", "ac")


# -- event_property_is / event_property_contains ------------------------------

def create_event(federate: Any) -> dict[str, Any]:
    return {"type": "m.room.create", "state_key": "", "sender": BOB, "room_id": ROOM,
            "content": {"m.federate": federate, "room_version": "1"}}


FEDERATE = {"kind": "event_property_is", "key": "content.m\\.federate", "value": True}


def test_event_property_is_exact_value() -> None:
    assert holds(FEDERATE, create_event(True))


def test_event_property_is_does_not_cast() -> None:
    assert not holds(FEDERATE, create_event("true"))
    assert not holds(FEDERATE, create_event(1))


def test_event_property_is_null_and_absent() -> None:
    null = {"kind": "event_property_is", "key": "content.m\\.federate", "value": None}
    assert holds(null, create_event(None))
    assert not holds(null, message())


def test_event_property_is_compound_values_do_not_match() -> None:
    condition = {"kind": "event_property_is", "key": "content.x", "value": [1]}
    assert not holds(condition, message(x=[1]))


def aliases(values: Any) -> dict[str, Any]:
    return {"type": "m.room.canonical_alias", "state_key": "", "sender": BOB,
            "room_id": ROOM, "content": {"alias": "#a:x", "alt_aliases": values}}


ALT = {"kind": "event_property_contains", "key": "content.alt_aliases",
       "value": "#myroom:example.com"}


def test_event_property_contains_exact_member() -> None:
    assert holds(ALT, aliases(["#somewhere:example.org", "#myroom:example.com"]))


def test_event_property_contains_partial_values_do_not_match() -> None:
    assert not holds(ALT, aliases([":example.com"]))


def test_event_property_contains_needs_an_array() -> None:
    assert not holds(ALT, aliases("#myroom:example.com"))
    assert not holds(ALT, message())


def test_event_property_contains_ignores_compound_items() -> None:
    condition = {"kind": "event_property_contains", "key": "content.x", "value": 1}
    assert holds(condition, message(x=[{"a": 1}, 1]))
    assert not holds(condition, message(x=[{"a": 1}, True]))


# -- contains_display_name, room_member_count, sender_notification_permission --

def test_contains_display_name_word_boundary() -> None:
    condition = {"kind": "contains_display_name"}
    assert holds(condition, message("hi Alice!"), display_name="Alice")
    assert not holds(condition, message("hi Alicent"), display_name="Alice")
    assert not holds(condition, message("hi Alice"), display_name=None)


def test_contains_display_name_is_literal_not_a_glob() -> None:
    assert not holds({"kind": "contains_display_name"}, message("hi Bob"), display_name="*")
    assert holds({"kind": "contains_display_name"}, message("hi a*b"), display_name="a*b")


@pytest.mark.parametrize(("spec", "count", "expected"), [
    ("2", 2, True), ("2", 3, False), ("==2", 2, True), ("<3", 2, True), ("<2", 2, False),
    (">2", 3, True), (">3", 3, False), ("<=2", 2, True), ("<=2", 3, False),
    (">=3", 3, True), (">=3", 2, False), ("x2", 2, False), ("", 2, False),
])
def test_room_member_count(spec: str, count: int, expected: bool) -> None:
    assert holds({"kind": "room_member_count", "is": spec}, message(), members=count) \
        is expected


def test_sender_notification_permission_default_50() -> None:
    condition = {"kind": "sender_notification_permission", "key": "room"}
    assert holds(condition, message(), power=50)
    assert not holds(condition, message(), power=49)


def test_sender_notification_permission_from_power_levels() -> None:
    condition = {"kind": "sender_notification_permission", "key": "room"}
    assert holds(condition, message(), power=10, levels={"room": 10})
    assert not holds(condition, message(), power=10, levels={"room": 20})


def test_unknown_condition_never_matches() -> None:
    assert not holds({"kind": "org.example.unknown"}, message())
    ruleset = {"override": [{"rule_id": "x", "enabled": True, "actions": ["notify"],
                             "conditions": [{"kind": "nope"}]}]}
    assert default_actions(message(), ruleset=ruleset) == []


# -- rule kinds, order, enabled, actions ----------------------------------------

def test_kinds_are_checked_in_spec_order() -> None:
    ruleset = {
        "underride": [{"rule_id": "u", "enabled": True, "conditions": [], "actions": ["u"]}],
        "sender": [{"rule_id": BOB, "enabled": True, "actions": ["s"]}],
        "room": [{"rule_id": ROOM, "enabled": True, "actions": ["r"]}],
        "content": [{"rule_id": "c", "enabled": True, "pattern": "hello", "actions": ["c"]}],
        "override": [{"rule_id": "o", "enabled": True, "conditions": [], "actions": ["o"]}],
    }
    order = []
    for kind in ("override", "content", "room", "sender", "underride"):
        order.append(default_actions(message(), ruleset=ruleset))
        ruleset[kind][0]["enabled"] = False
    assert order == [["o"], ["c"], ["r"], ["s"], ["u"]]


def test_first_rule_within_a_kind_wins() -> None:
    ruleset = {"override": [
        {"rule_id": "a", "enabled": True, "conditions": [], "actions": ["notify"]},
        {"rule_id": "b", "enabled": True, "conditions": [], "actions": []}]}
    assert default_actions(message(), ruleset=ruleset) == ["notify"]


def test_disabled_rule_never_matches() -> None:
    ruleset = {"override": [
        {"rule_id": "a", "enabled": False, "conditions": [], "actions": ["notify"]}]}
    assert default_actions(message(), ruleset=ruleset) == []


def test_dont_notify_is_the_same_as_no_actions() -> None:
    ruleset = {"override": [
        {"rule_id": "a", "enabled": True, "conditions": [], "actions": ["dont_notify"]}],
        "underride": [{"rule_id": "b", "enabled": True, "conditions": [],
                       "actions": ["notify"]}]}
    actions = default_actions(message(), ruleset=ruleset)
    assert actions == [] and not notifies(actions)


def test_room_and_sender_rules_use_their_rule_id() -> None:
    other = {"room": [{"rule_id": "!other:x", "enabled": True, "actions": ["notify"]}],
             "sender": [{"rule_id": "@other:x", "enabled": True, "actions": ["notify"]}]}
    assert default_actions(message(), ruleset=other) == []


def test_highlight_tweak_value() -> None:
    assert highlights(["notify", {"set_tweak": "highlight"}])
    assert highlights([{"set_tweak": "highlight", "value": True}])
    assert not highlights([{"set_tweak": "highlight", "value": False}])
    assert not highlights(["notify", {"set_tweak": "sound", "value": "default"}])


# -- the server-default rules ---------------------------------------------------

def test_master_is_disabled_by_default_and_silences_everything_when_enabled() -> None:
    rules = default_rules_for(ALICE)
    rules["override"][0]["enabled"] = True
    assert rules["override"][0]["rule_id"] == ".m.rule.master"
    assert default_actions(message(), ruleset=rules) == []
    assert notifies(default_actions(message()))


def test_suppress_notices() -> None:
    notice = message(msgtype="m.notice")
    assert matched_rule(notice) == ".m.rule.suppress_notices"
    assert default_actions(notice) == []


def test_invite_for_me() -> None:
    invite = {"type": "m.room.member", "state_key": ALICE, "sender": BOB, "room_id": ROOM,
              "content": {"membership": "invite"}}
    assert matched_rule(invite) == ".m.rule.invite_for_me"
    assert default_actions(invite) == ["notify", {"set_tweak": "sound", "value": "default"}]


def test_member_event() -> None:
    join = {"type": "m.room.member", "state_key": BOB, "sender": BOB, "room_id": ROOM,
            "content": {"membership": "join"}}
    assert matched_rule(join) == ".m.rule.member_event"
    assert default_actions(join) == []


def test_is_user_mention() -> None:
    event = message("hey", **{"m.mentions": {"user_ids": [ALICE]}})
    assert matched_rule(event) == ".m.rule.is_user_mention"
    assert highlights(default_actions(event)) and notifies(default_actions(event))


def test_is_room_mention_needs_permission() -> None:
    event = message("hey", **{"m.mentions": {"room": True}})
    assert matched_rule(event, power=50) == ".m.rule.is_room_mention"
    assert highlights(default_actions(event, power=50))
    assert not highlights(default_actions(event, power=0))


def test_legacy_contains_display_name() -> None:
    event = message("Alice: lunch?")
    assert matched_rule(event) == ".m.rule.contains_display_name"
    assert highlights(default_actions(event))


def test_legacy_contains_user_name() -> None:
    event = message("is alice around?")
    assert matched_rule(event, display_name=None) == ".m.rule.contains_user_name"
    assert highlights(default_actions(event, display_name=None))


def test_legacy_roomnotif() -> None:
    event = message("@room lunch!")
    assert matched_rule(event, power=100) == ".m.rule.roomnotif"
    assert highlights(default_actions(event, power=100))
    assert not highlights(default_actions(event, power=0))


def test_legacy_rules_are_suppressed_by_m_mentions() -> None:
    for body in ("Alice: lunch?", "is alice around?", "@room lunch!"):
        event = message(body, **{"m.mentions": {}})
        actions = default_actions(event, power=100)
        assert notifies(actions) and not highlights(actions), body


def test_tombstone() -> None:
    tombstone = {"type": "m.room.tombstone", "state_key": "", "sender": BOB, "room_id": ROOM,
                 "content": {"body": "moved", "replacement_room": "!new:x"}}
    assert matched_rule(tombstone) == ".m.rule.tombstone"
    assert highlights(default_actions(tombstone))
    not_state = {k: v for k, v in tombstone.items() if k != "state_key"}
    assert matched_rule(not_state) != ".m.rule.tombstone"


def test_reaction() -> None:
    reaction = {"type": "m.reaction", "sender": BOB, "room_id": ROOM,
                "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x",
                                             "key": "👍"}}}
    assert matched_rule(reaction) == ".m.rule.reaction"
    assert default_actions(reaction) == []


def test_server_acl() -> None:
    acl = {"type": "m.room.server_acl", "state_key": "", "sender": BOB, "room_id": ROOM,
           "content": {"allow": ["*"]}}
    assert matched_rule(acl) == ".m.rule.room.server_acl"
    assert default_actions(acl) == []


def test_suppress_edits() -> None:
    edit = message("* fixed", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$x"},
                                 "m.new_content": {"body": "fixed"}})
    assert matched_rule(edit) == ".m.rule.suppress_edits"
    assert default_actions(edit) == []


def test_call() -> None:
    call = {"type": "m.call.invite", "sender": BOB, "room_id": ROOM, "content": {}}
    assert matched_rule(call) == ".m.rule.call"
    assert default_actions(call) == ["notify", {"set_tweak": "sound", "value": "ring"}]


def test_encrypted_room_one_to_one() -> None:
    encrypted = {"type": "m.room.encrypted", "sender": BOB, "room_id": ROOM,
                 "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
    assert matched_rule(encrypted, members=2) == ".m.rule.encrypted_room_one_to_one"
    assert default_actions(encrypted, members=2) == [
        "notify", {"set_tweak": "sound", "value": "default"}]


def test_room_one_to_one() -> None:
    assert matched_rule(message(), members=2) == ".m.rule.room_one_to_one"
    assert default_actions(message(), members=2) == [
        "notify", {"set_tweak": "sound", "value": "default"}]


def test_message() -> None:
    assert matched_rule(message(), members=3) == ".m.rule.message"
    assert default_actions(message(), members=3) == ["notify"]


def test_encrypted() -> None:
    encrypted = {"type": "m.room.encrypted", "sender": BOB, "room_id": ROOM, "content": {}}
    assert matched_rule(encrypted, members=3) == ".m.rule.encrypted"
    assert default_actions(encrypted, members=3) == ["notify"]


def test_other_events_do_not_notify() -> None:
    name = {"type": "m.room.name", "state_key": "", "sender": BOB, "room_id": ROOM,
            "content": {"name": "x"}}
    assert default_actions(name) == []


def test_user_override_of_default_actions_is_used() -> None:
    rules = copy.deepcopy(default_rules_for(ALICE))
    for rule in rules["underride"]:
        if rule["rule_id"] == ".m.rule.message":
            rule["actions"] = []
    assert default_actions(message(), ruleset=rules) == []
