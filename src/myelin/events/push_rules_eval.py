"""Push rule evaluation: which actions a user's ruleset gives one event (pure, no I/O).

The ruleset is the client-format ``global`` ruleset (``GET /pushrules/global``:
``{override, content, room, sender, underride}``), checked kind by kind in
that order and rule by rule within a kind; the first enabled rule whose
conditions all hold decides, and no matching rule means no notification.
Everything the conditions need about the room (member count, the recipient's
display name there, the sender's power level and the notification levels) is
handed in by the caller as a :class:`RoomContext`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

KINDS = ("override", "content", "room", "sender", "underride")

# The pre-v1.7 body-matching rules: ignored for events that carry
# ``m.mentions`` (the intentional-mentions rules decide those).
LEGACY_MENTION_RULES = frozenset({
    ".m.rule.contains_display_name", ".m.rule.contains_user_name", ".m.rule.roomnotif"})

# Historical actions that mean nothing (spec: strip them).
_IGNORED_ACTIONS = ("dont_notify", "coalesce")

_WORD = "A-Za-z0-9_"
_MAX_SAFE_INT = 2**53 - 1
_MEMBER_COUNT = re.compile(r"^(==|<=|>=|<|>)?([0-9]+)$")


@dataclass(frozen=True)
class RoomContext:
    """What the conditions need to know about the room at the event."""

    member_count: int
    sender_power_level: float = 0  # math.inf for v12 creators
    # ``notifications`` of m.room.power_levels (key -> level); "room" defaults to 50.
    notification_levels: Mapping[str, int] = field(default_factory=dict)


def parse_key_path(key: str) -> tuple[str, ...]:
    """A dot-separated property path → its property names.

    ``\\.`` is a literal dot and ``\\\\`` a literal backslash; any other
    backslash is kept as it is (appendix: dot-separated property paths)."""
    return _parse_key_path(key)


@lru_cache(maxsize=4096)
def _parse_key_path(key: str) -> tuple[str, ...]:
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(key):
        char = key[i]
        if char == "\\" and i + 1 < len(key) and key[i + 1] in ".\\":
            current.append(key[i + 1])
            i += 2
            continue
        if char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return tuple(parts)


_ABSENT: Any = object()


def lookup(event: Mapping[str, Any], key: str) -> Any:
    """The value at a dot-separated path of the event, or ``_ABSENT``."""
    value: Any = event
    for name in parse_key_path(key):
        if not isinstance(value, Mapping) or name not in value:
            return _ABSENT
        value = value[name]
    return value


def _glob_regex(glob: str) -> str:
    out = []
    for char in glob:
        if char == "*":
            out.append(".*?")
        elif char == "?":
            out.append(".")
        else:
            out.append(re.escape(char))
    return "".join(out)


@lru_cache(maxsize=4096)
def _matcher(pattern: str, word_boundary: bool, literal: bool) -> re.Pattern[str]:
    body = re.escape(pattern) if literal else _glob_regex(pattern)
    if word_boundary:
        # The substring starts after a boundary (start, or a non-word
        # character) or itself starts with one; likewise at its end.
        start = f"(?:^|(?<=[^{_WORD}])|(?=[^{_WORD}]))"
        end = f"(?:$|(?=[^{_WORD}])|(?<=[^{_WORD}]))"
        return re.compile(start + body + end, re.IGNORECASE | re.DOTALL)
    return re.compile(body + r"\Z", re.IGNORECASE | re.DOTALL)


def glob_matches(pattern: str, value: str, *, word_boundary: bool = False) -> bool:
    """Case-insensitive glob (``*``, ``?``): the whole value, or with
    ``word_boundary`` any substring starting and ending at word boundaries."""
    regex = _matcher(pattern, word_boundary, literal=False)
    return (regex.search(value) if word_boundary else regex.match(value)) is not None


def _is_simple_value(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool)):
        return True
    return isinstance(value, int) and -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT


def _same_value(a: Any, b: Any) -> bool:
    # Exact: true is not 1, "1" is not 1.
    return type(a) is type(b) and a == b


def member_count_matches(spec: Any, count: int) -> bool:
    if not isinstance(spec, str):
        return False
    m = _MEMBER_COUNT.match(spec)
    if m is None:
        return False
    op, number = m.group(1) or "==", int(m.group(2))
    return {"==": count == number, "<": count < number, ">": count > number,
            "<=": count <= number, ">=": count >= number}[op]


class PushRuleEvaluator:
    """Evaluates rulesets against one event (reused for every recipient)."""

    def __init__(self, event: Mapping[str, Any], room: RoomContext) -> None:
        self.event = event
        self.room = room
        content = event.get("content")
        self.content: Mapping[str, Any] = content if isinstance(content, Mapping) else {}
        self.has_mentions = "m.mentions" in self.content
        body = self.content.get("body")
        self.body = body if isinstance(body, str) else None

    # -- conditions ----------------------------------------------------------
    def condition_holds(self, condition: Mapping[str, Any], user_id: str,
                        display_name: str | None) -> bool:
        kind = condition.get("kind")
        if kind == "event_match":
            return self._event_match(condition.get("key"), condition.get("pattern"))
        if kind == "event_property_is":
            return self._property_is(condition.get("key"), condition.get("value"))
        if kind == "event_property_contains":
            return self._property_contains(condition.get("key"), condition.get("value"))
        if kind == "contains_display_name":
            return self._contains_display_name(display_name)
        if kind == "room_member_count":
            return member_count_matches(condition.get("is"), self.room.member_count)
        if kind == "sender_notification_permission":
            return self._sender_may_notify(condition.get("key"))
        return False  # unrecognised conditions never match

    def _event_match(self, key: Any, pattern: Any) -> bool:
        if not isinstance(key, str) or not isinstance(pattern, str):
            return False
        value = lookup(self.event, key)
        if not isinstance(value, str):
            return False
        return glob_matches(pattern, value, word_boundary=key == "content.body")

    def _property_is(self, key: Any, expected: Any) -> bool:
        if not isinstance(key, str) or not _is_simple_value(expected):
            return False
        value = lookup(self.event, key)
        return value is not _ABSENT and _is_simple_value(value) and _same_value(value, expected)

    def _property_contains(self, key: Any, expected: Any) -> bool:
        if not isinstance(key, str) or not _is_simple_value(expected):
            return False
        value = lookup(self.event, key)
        if not isinstance(value, list):
            return False
        return any(_is_simple_value(v) and _same_value(v, expected) for v in value)

    def _contains_display_name(self, display_name: str | None) -> bool:
        if not display_name or self.body is None:
            return False
        regex = _matcher(display_name, word_boundary=True, literal=True)
        return regex.search(self.body) is not None

    def _sender_may_notify(self, key: Any) -> bool:
        if not isinstance(key, str):
            return False
        required = self.room.notification_levels.get(key, 50)  # m.room.power_levels default
        return self.room.sender_power_level >= required

    # -- rules ---------------------------------------------------------------
    def rule_matches(self, kind: str, rule: Mapping[str, Any], user_id: str,
                     display_name: str | None) -> bool:
        if not rule.get("enabled", True):
            return False
        rule_id = rule.get("rule_id")
        if self.has_mentions and rule_id in LEGACY_MENTION_RULES:
            return False
        if kind == "room":
            return self.event.get("room_id") == rule_id
        if kind == "sender":
            return self.event.get("sender") == rule_id
        if kind == "content":
            pattern = rule.get("pattern")
            return (isinstance(pattern, str) and self.body is not None
                    and glob_matches(pattern, self.body, word_boundary=True))
        conditions = rule.get("conditions") or []
        if not isinstance(conditions, list):
            return False
        return all(isinstance(c, Mapping) and self.condition_holds(c, user_id, display_name)
                   for c in conditions)

    def actions_for(self, ruleset: Mapping[str, Sequence[Mapping[str, Any]]], user_id: str,
                    display_name: str | None) -> list[Any]:
        """The actions of the first matching rule (historical actions
        stripped); empty when no rule matches or the rule says nothing."""
        for kind in KINDS:
            for rule in ruleset.get(kind) or ():
                if self.rule_matches(kind, rule, user_id, display_name):
                    actions = rule.get("actions") or []
                    return [a for a in actions if a not in _IGNORED_ACTIONS]
        return []


def notifies(actions: Sequence[Any]) -> bool:
    return "notify" in actions


def highlights(actions: Sequence[Any]) -> bool:
    """The highlight tweak: absent means false, present without a value true."""
    for action in actions:
        if isinstance(action, Mapping) and action.get("set_tweak") == "highlight":
            return action.get("value", True) is not False
    return False
