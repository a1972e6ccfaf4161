"""Push rules: the server-default rules, merged with each user's own rules and overrides.

The ruleset is what ``GET /pushrules/`` answers, what ``/sync`` delivers
as the ``m.push_rules`` global account data, and what the push actions
indexer evaluates (``events/push_rules_eval.py``). Server-default rules (ids
starting with ".") are the spec's predefined rules, in the spec's order,
plus the three legacy body-mention rules the spec dropped in v1.17 (clients
that send no ``m.mentions`` still rely on them; events with ``m.mentions``
skip them);
users may only enable/disable them or change their actions. Within a kind,
user rules come before the server defaults, except ``.m.rule.master``, which
always comes first.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError, bad_json, not_found
from myelin.replication.http import ReplicationEndpoint
from myelin.storage.stores.push_rules import DefaultOverride, RuleNotFound, StoredRule

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

KINDS = ("override", "content", "room", "sender", "underride")

# Placeholders in the default rules, filled in per user.
_USER_ID = "[the user's Matrix ID]"
_LOCALPART = "[the user's localpart]"

_SOUND_DEFAULT = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT = {"set_tweak": "highlight"}


def _rule(rule_id: str, conditions: list[dict[str, Any]], actions: list[Any],
          enabled: bool = True) -> dict[str, Any]:
    return {"rule_id": rule_id, "default": True, "enabled": enabled,
            "conditions": conditions, "actions": actions}


def _match(key: str, pattern: str) -> dict[str, Any]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


# The predefined rules of the push module, in the order the spec lists them.
BASE_OVERRIDE_MASTER = _rule(".m.rule.master", [], [], enabled=False)
BASE_OVERRIDE = [
    _rule(".m.rule.suppress_notices", [_match("content.msgtype", "m.notice")], []),
    _rule(".m.rule.invite_for_me", [
        _match("type", "m.room.member"),
        _match("content.membership", "invite"),
        _match("state_key", _USER_ID),
    ], ["notify", _SOUND_DEFAULT]),
    _rule(".m.rule.member_event", [_match("type", "m.room.member")], []),
    _rule(".m.rule.is_user_mention", [
        {"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids",
         "value": _USER_ID},
    ], ["notify", _SOUND_DEFAULT, _HIGHLIGHT]),
    # Legacy (removed from the spec in v1.17, kept for clients that send no
    # m.mentions): the evaluator ignores it for events that have m.mentions.
    _rule(".m.rule.contains_display_name", [{"kind": "contains_display_name"}],
          ["notify", _SOUND_DEFAULT, _HIGHLIGHT]),
    _rule(".m.rule.is_room_mention", [
        {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
        {"kind": "sender_notification_permission", "key": "room"},
    ], ["notify", _HIGHLIGHT]),
    _rule(".m.rule.roomnotif", [  # legacy, like .m.rule.contains_display_name
        _match("content.body", "@room"),
        {"kind": "sender_notification_permission", "key": "room"},
    ], ["notify", _HIGHLIGHT]),
    _rule(".m.rule.tombstone", [
        _match("type", "m.room.tombstone"),
        _match("state_key", ""),
    ], ["notify", _HIGHLIGHT]),
    _rule(".m.rule.reaction", [_match("type", "m.reaction")], []),
    _rule(".m.rule.room.server_acl", [
        _match("type", "m.room.server_acl"),
        _match("state_key", ""),
    ], []),
    _rule(".m.rule.suppress_edits", [
        {"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type",
         "value": "m.replace"},
    ], []),
]
# Legacy (spec v1.17 removed it): ignored for events that have m.mentions.
BASE_CONTENT: list[dict[str, Any]] = [
    {"rule_id": ".m.rule.contains_user_name", "default": True, "enabled": True,
     "pattern": _LOCALPART, "actions": ["notify", _SOUND_DEFAULT, _HIGHLIGHT]},
]
BASE_UNDERRIDE = [
    _rule(".m.rule.call", [_match("type", "m.call.invite")],
          ["notify", {"set_tweak": "sound", "value": "ring"}]),
    _rule(".m.rule.encrypted_room_one_to_one", [
        {"kind": "room_member_count", "is": "2"},
        _match("type", "m.room.encrypted"),
    ], ["notify", _SOUND_DEFAULT]),
    _rule(".m.rule.room_one_to_one", [
        {"kind": "room_member_count", "is": "2"},
        _match("type", "m.room.message"),
    ], ["notify", _SOUND_DEFAULT]),
    _rule(".m.rule.message", [_match("type", "m.room.message")], ["notify"]),
    _rule(".m.rule.encrypted", [_match("type", "m.room.encrypted")], ["notify"]),
]

DEFAULT_RULES: dict[str, list[dict[str, Any]]] = {
    "override": [BASE_OVERRIDE_MASTER, *BASE_OVERRIDE],
    "content": BASE_CONTENT,
    "room": [],
    "sender": [],
    "underride": BASE_UNDERRIDE,
}

_SIMPLE_ACTIONS = ("notify", "dont_notify", "coalesce")


def _fill(value: Any, user_id: str, localpart: str) -> Any:
    if isinstance(value, str):
        return value.replace(_USER_ID, user_id).replace(_LOCALPART, localpart)
    if isinstance(value, list):
        return [_fill(v, user_id, localpart) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, user_id, localpart) for k, v in value.items()}
    return value


def default_rules_for(user_id: str) -> dict[str, list[dict[str, Any]]]:
    localpart = user_id[1:].split(":", 1)[0]
    return {kind: [_fill(copy.deepcopy(r), user_id, localpart) for r in rules]
            for kind, rules in DEFAULT_RULES.items()}


def _is_default_id(rule_id: str) -> bool:
    return rule_id.startswith(".")


def format_user_rule(rule: StoredRule) -> dict[str, Any]:
    out: dict[str, Any] = {"rule_id": rule.rule_id, "default": False,
                           "enabled": rule.enabled, "actions": rule.actions}
    if rule.kind in ("override", "underride"):
        out["conditions"] = rule.conditions
    elif rule.kind == "content":
        out["pattern"] = rule.pattern or ""
    return out


def validate_actions(actions: Any) -> list[Any]:
    if not isinstance(actions, list):
        raise bad_json("actions must be a list")
    for action in actions:
        if isinstance(action, str):
            if action not in _SIMPLE_ACTIONS:
                raise MatrixError(400, "M_UNKNOWN", f"Unrecognised action {action!r}")
        elif isinstance(action, dict):
            if not isinstance(action.get("set_tweak"), str):
                raise MatrixError(400, "M_UNKNOWN", "Action objects need a set_tweak")
        else:
            raise MatrixError(400, "M_UNKNOWN", "Actions must be strings or objects")
    return actions


def _validate_conditions(conditions: Any) -> list[Any]:
    if not isinstance(conditions, list):
        raise bad_json("conditions must be a list")
    for condition in conditions:
        if not isinstance(condition, dict) or not isinstance(condition.get("kind"), str):
            raise bad_json("each condition must be an object with a kind")
    return conditions


def check_scope_kind(scope: str, kind: str) -> None:
    if scope != "global":
        raise MatrixError(400, "M_UNRECOGNIZED", f"Unknown push rule scope {scope!r}")
    if kind not in KINDS:
        raise MatrixError(400, "M_UNRECOGNIZED", f"Unknown push rule kind {kind!r}")


def build_ruleset(user_id: str, overrides: dict[tuple[str, str], DefaultOverride],
                  stored_rules: list[StoredRule]) -> dict[str, list[dict[str, Any]]]:
    """The defaults with the user's overrides, and the user's own rules, in order."""
    defaults = default_rules_for(user_id)
    for kind, rules in defaults.items():
        for rule in rules:
            override = overrides.get((kind, rule["rule_id"]))
            if override is None:
                continue
            if override.enabled is not None:
                rule["enabled"] = override.enabled
            if override.actions is not None:
                rule["actions"] = override.actions
    user_rules: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for stored in stored_rules:
        if stored.kind in user_rules:
            user_rules[stored.kind].append(format_user_rule(stored))
    ruleset: dict[str, list[dict[str, Any]]] = {}
    for kind in KINDS:
        default = defaults[kind]
        if kind == "override":
            master = [r for r in default if r["rule_id"] == ".m.rule.master"]
            rest = [r for r in default if r["rule_id"] != ".m.rule.master"]
            ruleset[kind] = master + user_rules[kind] + rest
        else:
            ruleset[kind] = user_rules[kind] + default
    return ruleset


class WritePushRules(ReplicationEndpoint):
    """Every change to a user's push rules, run on the push_rules writer."""

    NAME = "push_rules"
    STREAM = "push_rules"

    @staticmethod
    async def handle(hs: HomeServer, p: dict[str, Any]) -> Any:
        store = hs.stores.push_rules
        user_id, kind, rule_id, args = p["user_id"], p["kind"], p["rule_id"], p["args"]
        try:
            if p["op"] == "put":
                await store.put_rule(user_id, kind, rule_id, **args)
            elif p["op"] == "delete":
                await store.delete_rule(user_id, kind, rule_id)
            elif p["op"] == "default_override":
                await store.set_default_override(user_id, kind, rule_id, **args)
            else:
                await store.set_user_rule_field(user_id, kind, rule_id, **args)
        except RuleNotFound as e:
            if p["op"] == "put":
                raise MatrixError(400, "M_UNKNOWN",
                                  f"before/after rule not found: {e}") from None
            raise not_found("Unknown push rule") from None
        return {}


class PushRulesHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.push_rules

    async def get_ruleset(self, user_id: str) -> dict[str, list[dict[str, Any]]]:
        """The user's full global ruleset: ``{override, content, room, sender, underride}``."""
        return build_ruleset(user_id, await self.store.get_default_overrides(user_id),
                             await self.store.get_user_rules(user_id))

    async def get_rulesets(self, user_ids: list[str],
                           ) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """:meth:`get_ruleset` for many users, in two queries per 200 users."""
        overrides = await self.store.get_default_overrides_many(user_ids)
        stored = await self.store.get_user_rules_many(user_ids)
        return {u: build_ruleset(u, overrides[u], stored[u]) for u in user_ids}

    async def get_rule(self, user_id: str, kind: str, rule_id: str) -> dict[str, Any]:
        ruleset = await self.get_ruleset(user_id)
        for rule in ruleset[kind]:
            if rule["rule_id"] == rule_id:
                return rule
        raise not_found("Unknown push rule")

    async def _write(self, op: str, user_id: str, kind: str, rule_id: str,
                     **args: Any) -> None:
        await self.hs.replication.call(WritePushRules, {
            "op": op, "user_id": user_id, "kind": kind, "rule_id": rule_id, "args": args})

    async def put_rule(self, user_id: str, kind: str, rule_id: str, body: dict[str, Any],
                       before: str | None, after: str | None) -> None:
        if _is_default_id(rule_id):
            raise MatrixError(400, "M_UNKNOWN",
                              "Rule ids starting with '.' are reserved for server-default rules")
        if not rule_id or "/" in rule_id or "\\" in rule_id:
            raise MatrixError(400, "M_INVALID_PARAM", "Rule id may not contain slashes")
        for anchor in (before, after):
            if anchor is not None and _is_default_id(anchor):
                raise MatrixError(400, "M_UNKNOWN",
                                  "Cannot place a rule relative to a server-default rule")
        if "actions" not in body:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing actions")
        actions = validate_actions(body["actions"])
        conditions: list[Any] = []
        pattern: str | None = None
        if kind in ("override", "underride"):
            conditions = _validate_conditions(body.get("conditions", []))
        elif kind == "content":
            pattern = body.get("pattern")
            if not isinstance(pattern, str):
                raise MatrixError(400, "M_MISSING_PARAM", "Content rules need a pattern")
            conditions = [_match("content.body", pattern)]
        elif kind == "room":
            conditions = [_match("room_id", rule_id)]
        elif kind == "sender":
            conditions = [_match("user_id", rule_id)]
        await self._write("put", user_id, kind, rule_id, conditions=conditions,
                          actions=actions, pattern=pattern, before=before, after=after)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> None:
        if _is_default_id(rule_id):
            await self.get_rule(user_id, kind, rule_id)  # 404 if no such default rule
            raise MatrixError(400, "M_UNKNOWN", "Cannot delete a server-default rule")
        await self._write("delete", user_id, kind, rule_id)

    async def set_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> None:
        await self._set_field(user_id, kind, rule_id, enabled=enabled)

    async def set_actions(self, user_id: str, kind: str, rule_id: str,
                          actions: list[Any]) -> None:
        await self._set_field(user_id, kind, rule_id, actions=validate_actions(actions))

    async def _set_field(self, user_id: str, kind: str, rule_id: str, *,
                         enabled: bool | None = None, actions: list[Any] | None = None) -> None:
        if _is_default_id(rule_id):
            if not any(r["rule_id"] == rule_id for r in DEFAULT_RULES[kind]):
                raise not_found("Unknown push rule")
            await self._write("default_override", user_id, kind, rule_id, enabled=enabled,
                              actions=actions)
        else:
            await self._write("user_field", user_id, kind, rule_id, enabled=enabled,
                              actions=actions)

    async def changed_between(self, user_id: str, from_id: int, to_id: int) -> bool:
        return await self.store.changed_between(user_id, from_id, to_id)
