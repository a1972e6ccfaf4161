"""Push rules over HTTP on both engines: the predefined rules, user rules, /sync delivery."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any
from urllib.parse import quote

from tests.support.client import TokenClient
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"
_ids = itertools.count()


class Client(TokenClient):
    def __init__(self, hs: ServerProcess, localpart: str | None = None) -> None:
        self.hs = hs
        login = hs.register(localpart or f"pusher{next(_ids)}")
        self.user_id: str = login["user_id"]
        self.token: str = login["access_token"]

    def sync(self, since: str | None = None, timeout: int = 0) -> Any:
        query = f"?timeout={timeout}" + (f"&since={quote(since)}" if since else "")
        return self.ok("GET", "/sync" + query)


def ids(rules: list[dict[str, Any]]) -> list[str]:
    return [r["rule_id"] for r in rules]


def push_rules_event(sync_body: dict[str, Any]) -> dict[str, Any] | None:
    for event in sync_body["account_data"]["events"]:
        if event["type"] == "m.push_rules":
            return dict(event["content"])
    return None


# The spec's predefined rules, plus the legacy body-mention rules (dropped from
# the spec in v1.17) in the place they had before.
SPEC_OVERRIDE = [".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me",
                 ".m.rule.member_event", ".m.rule.is_user_mention",
                 ".m.rule.contains_display_name", ".m.rule.is_room_mention",
                 ".m.rule.roomnotif", ".m.rule.tombstone", ".m.rule.reaction",
                 ".m.rule.room.server_acl", ".m.rule.suppress_edits"]
SPEC_UNDERRIDE = [".m.rule.call", ".m.rule.encrypted_room_one_to_one",
                  ".m.rule.room_one_to_one", ".m.rule.message", ".m.rule.encrypted"]


def test_default_rules(hs: ServerProcess) -> None:
    alice = Client(hs)
    for prefix in ("/_matrix/client/r0", V3):
        status, body = hs.request("GET", prefix + "/pushrules/", token=alice.token)
        assert status == 200, body
        ruleset = body["global"]
        assert set(ruleset) == {"override", "content", "room", "sender", "underride"}
        assert ids(ruleset["override"]) == SPEC_OVERRIDE
        assert ids(ruleset["underride"]) == SPEC_UNDERRIDE
        assert ruleset["room"] == ruleset["sender"] == []
        assert ruleset["content"] == [{
            "rule_id": ".m.rule.contains_user_name", "default": True, "enabled": True,
            "pattern": alice.user_id[1:].split(":")[0],
            "actions": ["notify", {"set_tweak": "sound", "value": "default"},
                        {"set_tweak": "highlight"}]}]
    override = {r["rule_id"]: r for r in ruleset["override"]}
    assert override[".m.rule.master"] == {"rule_id": ".m.rule.master", "default": True,
                                          "enabled": False, "conditions": [], "actions": []}
    invite = override[".m.rule.invite_for_me"]
    assert {"key": "state_key", "kind": "event_match", "pattern": alice.user_id} \
        in invite["conditions"]
    assert invite["actions"] == ["notify", {"set_tweak": "sound", "value": "default"}]
    mention = override[".m.rule.is_user_mention"]
    assert mention["conditions"] == [{"kind": "event_property_contains",
                                      "key": "content.m\\.mentions.user_ids",
                                      "value": alice.user_id}]
    assert mention["actions"][-1] == {"set_tweak": "highlight"}
    for rule in ruleset["override"] + ruleset["underride"] + ruleset["content"]:
        assert rule["default"] is True
        assert rule["enabled"] is (rule["rule_id"] != ".m.rule.master")
    one_to_one = {r["rule_id"]: r for r in ruleset["underride"]}[".m.rule.room_one_to_one"]
    assert {"kind": "room_member_count", "is": "2"} in one_to_one["conditions"]

    assert alice.ok("GET", "/pushrules/global/") == ruleset
    assert alice.ok("GET", "/pushrules/global/override/.m.rule.suppress_notices") == \
        override[".m.rule.suppress_notices"]
    assert alice.ok("GET", "/pushrules/global/override/.m.rule.master/enabled") == \
        {"enabled": False}
    assert alice.ok("GET", "/pushrules/global/underride/.m.rule.call/actions") == \
        {"actions": ["notify", {"set_tweak": "sound", "value": "ring"}]}
    alice.err("GET", "/pushrules/global/override/nosuchrule", status=404, errcode="M_NOT_FOUND")
    alice.err("GET", "/pushrules/global/underride/.m.rule.master", status=404)
    alice.err("GET", "/pushrules/global/sideways/x", status=400)
    status, _ = hs.request("GET", V3 + "/pushrules/")
    assert status == 401


def test_sync_delivers_rules_initially(hs: ServerProcess) -> None:
    alice = Client(hs)
    body = alice.sync()
    content = push_rules_event(body)
    assert content is not None
    assert content == {"global": alice.ok("GET", "/pushrules/")["global"]}
    # Nothing changed: an incremental sync does not repeat them.
    again = alice.sync(body["next_batch"])
    assert push_rules_event(again) is None


def test_user_rule_lifecycle(hs: ServerProcess) -> None:
    alice = Client(hs)
    since = alice.sync()["next_batch"]
    rule = {"conditions": [{"kind": "event_match", "key": "content.body", "pattern": "cake*"}],
            "actions": ["notify", {"set_tweak": "sound", "value": "cakealarm.wav"}]}
    alice.ok("PUT", "/pushrules/global/override/cake", rule)
    got = alice.ok("GET", "/pushrules/global/override/cake")
    assert got == {"rule_id": "cake", "default": False, "enabled": True, **rule}
    override = alice.ok("GET", "/pushrules/")["global"]["override"]
    # User rules come after the master rule but before the other defaults.
    assert ids(override)[:3] == [".m.rule.master", "cake", ".m.rule.suppress_notices"]

    body = alice.sync(since)
    content = push_rules_event(body)
    assert content is not None and "cake" in ids(content["global"]["override"])
    since = body["next_batch"]

    alice.ok("PUT", "/pushrules/global/override/cake/enabled", {"enabled": False})
    assert alice.ok("GET", "/pushrules/global/override/cake/enabled") == {"enabled": False}
    body = alice.sync(since)
    content = push_rules_event(body)
    assert content is not None
    assert {r["rule_id"]: r for r in content["global"]["override"]}["cake"]["enabled"] is False
    since = body["next_batch"]

    alice.ok("PUT", "/pushrules/global/override/cake/actions", {"actions": ["dont_notify"]})
    assert alice.ok("GET", "/pushrules/global/override/cake/actions") == \
        {"actions": ["dont_notify"]}
    got = alice.ok("GET", "/pushrules/global/override/cake")
    assert got["enabled"] is False and got["conditions"] == rule["conditions"]

    # Re-putting keeps enabled state and place, updates the rule.
    alice.ok("PUT", "/pushrules/global/override/cake", {"actions": ["notify"],
                                                        "conditions": []})
    assert alice.ok("GET", "/pushrules/global/override/cake")["actions"] == ["notify"]

    alice.ok("DELETE", "/pushrules/global/override/cake")
    alice.err("GET", "/pushrules/global/override/cake", status=404, errcode="M_NOT_FOUND")
    alice.err("DELETE", "/pushrules/global/override/cake", status=404, errcode="M_NOT_FOUND")
    body = alice.sync(since)
    content = push_rules_event(body)
    assert content is not None and "cake" not in ids(content["global"]["override"])


def test_kinds_and_ordering(hs: ServerProcess) -> None:
    alice = Client(hs)
    room = "!abcdef:test.localhost"
    alice.ok("PUT", f"/pushrules/global/room/{quote(room)}", {"actions": []})
    alice.ok("PUT", f"/pushrules/global/sender/{quote('@spam:test.localhost')}",
             {"actions": ["dont_notify"]})
    alice.ok("PUT", "/pushrules/global/content/cakes",
             {"pattern": "cake", "actions": ["notify"]})
    alice.err("PUT", "/pushrules/global/content/nopattern", {"actions": ["notify"]},
              status=400)
    ruleset = alice.ok("GET", "/pushrules/")["global"]
    assert ruleset["room"] == [{"rule_id": room, "default": False, "enabled": True,
                                "actions": []}]
    assert ids(ruleset["sender"]) == ["@spam:test.localhost"]
    assert ruleset["content"][0] == {"rule_id": "cakes", "default": False, "enabled": True,
                                     "actions": ["notify"], "pattern": "cake"}

    # New rules go first; before/after place them relative to user rules.
    for name in ("a", "b"):
        alice.ok("PUT", f"/pushrules/global/underride/{name}", {"actions": [],
                                                                  "conditions": []})
    assert ids(alice.ok("GET", "/pushrules/")["global"]["underride"])[:3] == \
        ["b", "a", ".m.rule.call"]
    alice.ok("PUT", "/pushrules/global/underride/c?after=a", {"actions": []})
    alice.ok("PUT", "/pushrules/global/underride/d?before=a", {"actions": []})
    alice.ok("PUT", "/pushrules/global/underride/b?after=c", {"actions": []})
    assert ids(alice.ok("GET", "/pushrules/")["global"]["underride"])[:5] == \
        ["d", "a", "c", "b", ".m.rule.call"]
    alice.err("PUT", "/pushrules/global/underride/e?before=nosuch", {"actions": []},
              status=400, errcode="M_UNKNOWN")
    alice.err("PUT", "/pushrules/global/underride/e?after=.m.rule.call", {"actions": []},
              status=400, errcode="M_UNKNOWN")
    # Another user's rules are their own.
    bob = Client(hs)
    assert bob.ok("GET", "/pushrules/")["global"]["room"] == []


def test_server_default_rules_are_protected(hs: ServerProcess) -> None:
    alice = Client(hs)
    alice.err("PUT", "/pushrules/global/override/.m.rule.master", {"actions": []},
              status=400, errcode="M_UNKNOWN")
    alice.err("PUT", "/pushrules/global/override/.mine", {"actions": []},
              status=400, errcode="M_UNKNOWN")
    alice.err("DELETE", "/pushrules/global/override/.m.rule.suppress_notices",
              status=400, errcode="M_UNKNOWN")
    alice.err("DELETE", "/pushrules/global/override/.m.rule.nosuch", status=404)
    alice.err("PUT", "/pushrules/global/override/x", {"conditions": []}, status=400)
    alice.err("PUT", "/pushrules/global/override/x", {"actions": ["explode"]}, status=400)
    alice.err("PUT", "/pushrules/global/override/x%2Fy", {"actions": []}, status=400)
    alice.err("PUT", "/pushrules/global/override/.m.rule.nosuch/enabled", {"enabled": True},
              status=404)
    alice.err("PUT", "/pushrules/global/override/nosuch/actions", {"actions": []}, status=404)
    alice.err("PUT", "/pushrules/global/override/.m.rule.master/enabled", {"enabled": "yes"},
              status=400)

    # But they can be enabled/disabled and given new actions.
    alice.ok("PUT", "/pushrules/global/override/.m.rule.master/enabled", {"enabled": True})
    alice.ok("PUT", "/pushrules/global/underride/.m.rule.message/actions",
             {"actions": ["dont_notify"]})
    ruleset = alice.ok("GET", "/pushrules/")["global"]
    assert ruleset["override"][0]["rule_id"] == ".m.rule.master"
    assert ruleset["override"][0]["enabled"] is True
    message = {r["rule_id"]: r for r in ruleset["underride"]}[".m.rule.message"]
    assert message["actions"] == ["dont_notify"] and message["default"] is True
    alice.ok("PUT", "/pushrules/global/override/.m.rule.master/enabled", {"enabled": False})
    assert alice.ok("GET", "/pushrules/global/override/.m.rule.master/enabled") == \
        {"enabled": False}


def test_long_poll_wakes_on_change(hs: ServerProcess) -> None:
    alice = Client(hs)
    since = alice.sync()["next_batch"]
    result: dict[str, Any] = {}

    def poll() -> None:
        start = time.monotonic()
        result["body"] = alice.sync(since, timeout=20000)
        result["elapsed"] = time.monotonic() - start

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.5)
    alice.ok("PUT", "/pushrules/global/override/.m.rule.suppress_notices/enabled",
             {"enabled": False})
    thread.join(30)
    assert not thread.is_alive()
    assert result["elapsed"] < 10
    content = push_rules_event(result["body"])
    assert content is not None
    notices = {r["rule_id"]: r for r in content["global"]["override"]}[
        ".m.rule.suppress_notices"]
    assert notices["enabled"] is False


def test_sync_filter_can_exclude_push_rules(hs: ServerProcess) -> None:
    alice = Client(hs)
    body = alice.ok("GET", "/sync?filter=" + quote(
        '{"account_data": {"not_types": ["m.push_rules"]}}'))
    assert push_rules_event(body) is None


def test_paths_that_name_no_rule_are_bad_requests(hs: ServerProcess) -> None:
    alice = Client(hs)
    for path in ("/pushrules/", "/pushrules/global", "/pushrules/global/room",
                 "/pushrules/global/room/", "/pushrules/global/override/.m.rule.master/x"):
        alice.err("PUT", path, {"enabled": True}, status=400, errcode="M_UNRECOGNIZED")
    for path in ("/pushrules/global", "/pushrules/global/room",
                 "/pushrules/global/override/.m.rule.master/x"):
        alice.err("GET", path, status=400, errcode="M_UNRECOGNIZED")
    alice.err("GET", "/pushrules", status=404)
    # Nothing was changed on the way.
    assert alice.ok("GET", "/pushrules/global/override/.m.rule.master/enabled") == \
        {"enabled": False}
