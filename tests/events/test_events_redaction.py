"""The redaction algorithm, one test per rule of each spec fragment
(v1, v6, v8, v9, v11; v12 is unchanged from v11)."""

from __future__ import annotations

from typing import Any

import pytest

from myelin.events.redaction import prune_event_dict
from myelin.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion

ALL = list(KNOWN_ROOM_VERSIONS.values())
PRE_V11 = [rv for rv in ALL if int(rv.identifier) < 11]
V11_PLUS = [rv for rv in ALL if int(rv.identifier) >= 11]


def vid(rv: RoomVersion) -> str:
    return "v" + rv.identifier


def versions(lo: int, hi: int = 99) -> list[RoomVersion]:
    return [rv for rv in ALL if lo <= int(rv.identifier) <= hi]


def pdu(type: str, content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "$e:a.test",
        "type": type,
        "room_id": "!r:a.test",
        "sender": "@u:a.test",
        "content": content,
        "hashes": {"sha256": "h"},
        "signatures": {"a.test": {"ed25519:1": "s"}},
        "depth": 3,
        "prev_events": ["$p"],
        "auth_events": ["$a"],
        "origin_server_ts": 5,
        "unsigned": {"age": 1},
        "origin": "a.test",
        "membership": "join",
        "prev_state": [],
        "other_key": 1,
    }
    base.update(extra)
    return base


COMMON = {
    "event_id",
    "type",
    "room_id",
    "sender",
    "content",
    "hashes",
    "signatures",
    "depth",
    "prev_events",
    "auth_events",
    "origin_server_ts",
}


@pytest.mark.parametrize("rv", PRE_V11, ids=vid)
def test_top_level_keys_pre_v11(rv: RoomVersion) -> None:
    out = prune_event_dict(pdu("m.room.message", {"body": "x"}, state_key="s"), rv)
    assert set(out) == COMMON | {"state_key", "origin", "membership", "prev_state"}


@pytest.mark.parametrize("rv", V11_PLUS, ids=vid)
def test_top_level_keys_v11(rv: RoomVersion) -> None:
    # v11 drops origin, membership and prev_state.
    out = prune_event_dict(pdu("m.room.message", {"body": "x"}, state_key="s"), rv)
    assert set(out) == COMMON | {"state_key"}


@pytest.mark.parametrize("rv", ALL, ids=vid)
def test_unsigned_and_unknown_keys_stripped_and_input_untouched(rv: RoomVersion) -> None:
    original = pdu("m.room.message", {"body": "x"})
    out = prune_event_dict(original, rv)
    assert "unsigned" not in out and "other_key" not in out
    assert out["content"] == {}
    assert original["content"] == {"body": "x"} and "unsigned" in original


@pytest.mark.parametrize("rv", ALL, ids=vid)
def test_member_keeps_membership(rv: RoomVersion) -> None:
    content = {"membership": "join", "displayname": "x", "join_authorised_via_users_server": "@v:a"}
    out = prune_event_dict(pdu("m.room.member", content, state_key="@u:a.test"), rv)
    expected: dict[str, Any] = {"membership": "join"}
    if int(rv.identifier) >= 9:  # v9 fragment
        expected["join_authorised_via_users_server"] = "@v:a"
    assert out["content"] == expected


@pytest.mark.parametrize("rv", ALL, ids=vid)
def test_member_third_party_invite_signed(rv: RoomVersion) -> None:
    content = {
        "membership": "invite",
        "third_party_invite": {"display_name": "x", "signed": {"mxid": "@u:a", "token": "t"}},
    }
    out = prune_event_dict(pdu("m.room.member", content, state_key="@u:a"), rv)
    if int(rv.identifier) >= 11:
        assert out["content"] == {
            "membership": "invite",
            "third_party_invite": {"signed": {"mxid": "@u:a", "token": "t"}},
        }
    else:
        assert out["content"] == {"membership": "invite"}


@pytest.mark.parametrize("rv", ALL, ids=vid)
def test_create(rv: RoomVersion) -> None:
    content = {"creator": "@u:a.test", "room_version": "1", "m.federate": False}
    out = prune_event_dict(pdu("m.room.create", content, state_key=""), rv)
    if int(rv.identifier) >= 11:
        assert out["content"] == content  # v11: all keys
    else:
        assert out["content"] == {"creator": "@u:a.test"}


@pytest.mark.parametrize("rv", ALL, ids=vid)
def test_join_rules(rv: RoomVersion) -> None:
    content = {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}], "x": 1}
    out = prune_event_dict(pdu("m.room.join_rules", content, state_key=""), rv)
    expected: dict[str, Any] = {"join_rule": "restricted"}
    if int(rv.identifier) >= 8:  # v8 keeps allow
        expected["allow"] = content["allow"]
    assert out["content"] == expected


@pytest.mark.parametrize("rv", ALL, ids=vid)
def test_power_levels(rv: RoomVersion) -> None:
    content = {
        "ban": 1,
        "events": {"a": 1},
        "events_default": 1,
        "kick": 1,
        "redact": 1,
        "state_default": 1,
        "users": {"@u:a": 1},
        "users_default": 1,
        "invite": 1,
        "notifications": {"room": 1},
        "historical": 1,
    }
    out = prune_event_dict(pdu("m.room.power_levels", content, state_key=""), rv)
    expected = {
        k: v for k, v in content.items() if k not in ("invite", "notifications", "historical")
    }
    if int(rv.identifier) >= 11:  # v11 adds invite
        expected["invite"] = 1
    assert out["content"] == expected


@pytest.mark.parametrize("rv", ALL, ids=vid)
def test_history_visibility(rv: RoomVersion) -> None:
    out = prune_event_dict(
        pdu("m.room.history_visibility", {"history_visibility": "shared", "x": 1}, state_key=""), rv
    )
    assert out["content"] == {"history_visibility": "shared"}


@pytest.mark.parametrize("rv", ALL, ids=vid)
def test_aliases(rv: RoomVersion) -> None:
    out = prune_event_dict(pdu("m.room.aliases", {"aliases": ["#a:a"]}, state_key="a"), rv)
    # Only the v1 fragment (v1-v5) protects aliases.
    assert out["content"] == ({"aliases": ["#a:a"]} if int(rv.identifier) <= 5 else {})


@pytest.mark.parametrize("rv", ALL, ids=vid)
def test_redaction_event(rv: RoomVersion) -> None:
    out = prune_event_dict(
        pdu("m.room.redaction", {"redacts": "$x", "reason": "r"}, redacts="$x"), rv
    )
    if int(rv.identifier) >= 11:
        assert out["content"] == {"redacts": "$x"}
    else:
        assert out["content"] == {}
    # top-level redacts is never kept by the key lists.
    assert "redacts" not in out


@pytest.mark.parametrize("rv", ALL, ids=vid)
def test_other_event_types_lose_all_content(rv: RoomVersion) -> None:
    out = prune_event_dict(pdu("m.room.topic", {"topic": "t"}, state_key=""), rv)
    assert out["content"] == {}


def test_missing_and_non_object_content() -> None:
    rv = KNOWN_ROOM_VERSIONS["10"]
    p = pdu("m.room.message", {})
    del p["content"]
    assert "content" not in prune_event_dict(p, rv)
    assert prune_event_dict(pdu("m.room.message", "bad"), rv)["content"] == {}  # type: ignore[arg-type]
