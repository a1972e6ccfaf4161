"""Relations over HTTP, on SQLite and PostgreSQL: edits, threads and
references bundled on the original event wherever it is served (/sync,
/event, /messages, /context, /relations, /threads), /relations paging and
filters, /threads, redacted children leaving the aggregations, and the
history visibility of parents and children."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.api.rooms_support import Api, User, q
from tests.support.server import ServerProcess

V1 = "/_matrix/client/v1"
_names = itertools.count()


@pytest.fixture
def api(hs: ServerProcess) -> Iterator[Api]:
    yield Api(hs)


def new_user(api: Api, name: str) -> User:
    return api.user(f"{name}{next(_names)}")


def text(body: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body}


def edit(parent: str, body: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": f"* {body}",
            "m.new_content": {"msgtype": "m.text", "body": body},
            "m.relates_to": {"rel_type": "m.replace", "event_id": parent}}


def thread_reply(root: str, body: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body,
            "m.relates_to": {"rel_type": "m.thread", "event_id": root}}


def relations(user: User, room: str, parent: str, *path: str, **params: Any) -> Any:
    suffix = "".join(f"/{q(p)}" for p in path)
    query = f"?{urlencode(params)}" if params else ""
    return user.ok("GET", f"{V1}/rooms/{q(room)}/relations/{q(parent)}{suffix}{query}")


def get_event(user: User, room: str, event_id: str) -> Any:
    return user.ok("GET", f"/rooms/{q(room)}/event/{q(event_id)}")


def bundled(event: dict[str, Any]) -> dict[str, Any]:
    return dict(event.get("unsigned", {}).get("m.relations", {}))


def test_edit_and_thread_are_bundled_everywhere(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    since = bob.ok("GET", "/sync?timeout=0")["next_batch"]
    original = alice.send(room, content=text("I like cake"))
    alice.send(room, content=edit(original, "I like chocolate cake"))
    latest_edit = alice.send(room, content=edit(original, "I like lemon cake"))
    bob.send(room, content=edit(original, "Bob's edit is not valid"))
    root = bob.send(room, content=text("thread root"))
    alice.send(room, content=thread_reply(root, "first reply"))
    last_reply = alice.send(room, content=thread_reply(root, "second reply"))

    def check(by_id: dict[str, dict[str, Any]], where: str) -> None:
        replace = bundled(by_id[original])["m.replace"]
        assert replace["event_id"] == latest_edit, where
        assert replace["content"]["m.new_content"]["body"] == "I like lemon cake", where
        assert replace["sender"] == alice.user_id and "origin_server_ts" in replace, where
        assert by_id[original]["content"]["body"] == "I like cake", where  # never replaced
        thread = bundled(by_id[root])["m.thread"]
        assert thread["count"] == 2, where
        assert thread["latest_event"]["event_id"] == last_reply, where
        assert thread["latest_event"]["content"]["body"] == "second reply", where

    # /event: from each reader's point of view.
    check({e: get_event(bob, room, e) for e in (original, root)}, "/event")
    assert bundled(get_event(alice, room, root))["m.thread"]["current_user_participated"]
    assert bundled(get_event(bob, room, root))["m.thread"]["current_user_participated"]
    carol = new_user(api, "carol")
    carol.join(room)
    assert not bundled(get_event(carol, room, root))["m.thread"]["current_user_participated"]
    # /messages, /context, /sync.
    chunk = bob.messages(room, dir="b", limit=50)["chunk"]
    check({e["event_id"]: e for e in chunk}, "/messages")
    context = bob.ok("GET", f"/rooms/{q(room)}/context/{q(original)}?limit=20")
    check({e["event_id"]: e for e in [context["event"], *context["events_after"]]}, "/context")
    sync = bob.ok("GET", f"/sync?timeout=0&since={since}")
    timeline = sync["rooms"]["join"][room]["timeline"]["events"]
    check({e["event_id"]: e for e in timeline}, "/sync")
    # An event nobody relates to carries no aggregation.
    plain = alice.send(room, content=text("plain"))
    assert "m.relations" not in get_event(bob, room, plain).get("unsigned", {})


def test_new_relation_updates_a_cached_aggregation(api: Api) -> None:
    alice = new_user(api, "alice")
    room = alice.create_room()
    root = alice.send(room, content=text("root"))
    assert "m.relations" not in get_event(alice, room, root)["unsigned"]  # cached: none
    alice.send(room, content=thread_reply(root, "one"))
    assert bundled(get_event(alice, room, root))["m.thread"]["count"] == 1
    reference = alice.send(room, content={"body": "see above", "msgtype": "m.text",
                                          "m.relates_to": {"rel_type": "m.reference",
                                                           "event_id": root}})
    after = bundled(get_event(alice, room, root))
    assert after["m.thread"]["count"] == 1
    assert after["m.reference"] == {"chunk": [{"event_id": reference}]}


def test_redacted_children_leave_the_aggregations(api: Api) -> None:
    alice = new_user(api, "alice")
    room = alice.create_room()
    original = alice.send(room, content=text("v1"))
    first = alice.send(room, content=edit(original, "v2"))
    second = alice.send(room, content=edit(original, "v3"))
    assert bundled(get_event(alice, room, original))["m.replace"]["event_id"] == second
    alice.ok("PUT", f"/rooms/{q(room)}/redact/{q(second)}/r1", {})
    assert bundled(get_event(alice, room, original))["m.replace"]["event_id"] == first
    root = alice.send(room, content=text("root"))
    one = alice.send(room, content=thread_reply(root, "one"))
    two = alice.send(room, content=thread_reply(root, "two"))
    alice.ok("PUT", f"/rooms/{q(room)}/redact/{q(two)}/r2", {})
    thread = bundled(get_event(alice, room, root))["m.thread"]
    assert thread["count"] == 1 and thread["latest_event"]["event_id"] == one
    assert [e["event_id"] for e in relations(alice, room, root)["chunk"]] == [one]
    alice.ok("PUT", f"/rooms/{q(room)}/redact/{q(one)}/r3", {})
    assert "m.relations" not in get_event(alice, room, root)["unsigned"]
    threads = alice.ok("GET", f"{V1}/rooms/{q(room)}/threads")
    assert threads["chunk"] == []
    # A redacted original shows no edit.
    alice.ok("PUT", f"/rooms/{q(room)}/redact/{q(original)}/r4", {})
    assert "m.replace" not in bundled(get_event(alice, room, original))


def test_relations_pages_and_filters(api: Api) -> None:
    alice = new_user(api, "alice")
    room = alice.create_room()
    parent = alice.send(room, content=text("parent"))
    children = []
    for i in range(5):
        children.append(alice.send(room, content={
            "body": f"ref {i}", "msgtype": "m.text",
            "m.relates_to": {"rel_type": "m.reference", "event_id": parent}}))
    reaction = alice.send(room, etype="m.reaction", content={
        "m.relates_to": {"rel_type": "m.annotation", "event_id": parent, "key": "👍"}})
    alice.send(room, content=text("unrelated"))
    # Newest first, in pages of two, until there is no next_batch.
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = relations(alice, room, parent, **params)
        assert len(page["chunk"]) <= 2
        seen.extend(e["event_id"] for e in page["chunk"])
        if "next_batch" not in page:
            break
        params["from"] = page["next_batch"]
    assert seen == [reaction, *reversed(children)]
    forwards = relations(alice, room, parent, "m.reference", dir="f", limit=10)
    assert [e["event_id"] for e in forwards["chunk"]] == children
    assert "next_batch" not in forwards
    by_type = relations(alice, room, parent, "m.annotation", "m.reaction")
    assert [e["event_id"] for e in by_type["chunk"]] == [reaction]
    assert relations(alice, room, parent, "m.annotation", "m.room.message")["chunk"] == []
    assert "recursion_depth" not in by_type
    # Bad input is refused.
    for query in ("dir=x", "limit=0", "limit=abc"):
        alice.err("GET", f"{V1}/rooms/{q(room)}/relations/{q(parent)}?{query}", status=400,
                  errcode="M_INVALID_PARAM")
    alice.err("GET", f"{V1}/rooms/{q(room)}/relations/{q('$nope')}", status=404,
              errcode="M_NOT_FOUND")


def test_relations_recurse(api: Api) -> None:
    alice = new_user(api, "alice")
    room = alice.create_room()
    root = alice.send(room, content=text("root"))
    reply = alice.send(room, content=thread_reply(root, "reply"))
    reply_edit = alice.send(room, content=edit(reply, "reply, edited"))
    direct = relations(alice, room, root)
    assert [e["event_id"] for e in direct["chunk"]] == [reply]
    deep = relations(alice, room, root, recurse="true")
    assert [e["event_id"] for e in deep["chunk"]] == [reply_edit, reply]
    assert deep["recursion_depth"] >= 1
    # A filter applies at every level: the edit hangs off a thread reply.
    only_edits = relations(alice, room, root, "m.replace", recurse="true")
    assert only_edits["chunk"] == []


def test_relations_respect_history_visibility(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room = alice.create_room(preset="public_chat")
    alice.put_state(room, "m.room.history_visibility", {"history_visibility": "joined"})
    parent = alice.send(room, content=text("before bob"))
    early = alice.send(room, content=thread_reply(parent, "early reply"))
    bob.join(room)
    late = alice.send(room, content=thread_reply(parent, "late reply"))
    bob.err("GET", f"{V1}/rooms/{q(room)}/relations/{q(parent)}", status=404,
            errcode="M_NOT_FOUND")
    assert [e["event_id"] for e in relations(alice, room, parent)["chunk"]] == [late, early]
    later_parent = alice.send(room, content=text("after bob"))
    child = bob.send(room, content=thread_reply(later_parent, "bob's reply"))
    assert [e["event_id"] for e in relations(bob, room, later_parent)["chunk"]] == [child]
    stranger = new_user(api, "stranger")
    stranger.err("GET", f"{V1}/rooms/{q(room)}/relations/{q(later_parent)}", status=404,
                 errcode="M_NOT_FOUND")


def test_threads_list_by_activity(api: Api) -> None:
    alice, bob = new_user(api, "alice"), new_user(api, "bob")
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    first = alice.send(room, content=text("first root"))
    second = alice.send(room, content=text("second root"))
    bob.send(room, content=thread_reply(first, "bob in first"))
    alice.send(room, content=thread_reply(second, "alice in second"))
    alice.send(room, content=thread_reply(first, "alice in first"))
    listed = alice.ok("GET", f"{V1}/rooms/{q(room)}/threads")
    assert [e["event_id"] for e in listed["chunk"]] == [first, second]
    assert bundled(listed["chunk"][0])["m.thread"]["count"] == 2
    page1 = alice.ok("GET", f"{V1}/rooms/{q(room)}/threads?limit=1")
    assert [e["event_id"] for e in page1["chunk"]] == [first]
    page2 = alice.ok("GET", f"{V1}/rooms/{q(room)}/threads?limit=1&from={page1['next_batch']}")
    assert [e["event_id"] for e in page2["chunk"]] == [second]
    assert "next_batch" not in page2
    mine = bob.ok("GET", f"{V1}/rooms/{q(room)}/threads?include=participated")
    assert [e["event_id"] for e in mine["chunk"]] == [first]
    bob.err("GET", f"{V1}/rooms/{q(room)}/threads?include=some", status=400,
            errcode="M_INVALID_PARAM")
    bob.err("GET", f"{V1}/rooms/{q(room)}/threads?from=bogus", status=400,
            errcode="M_INVALID_PARAM")
    outsider = new_user(api, "outsider")
    outsider.err("GET", f"{V1}/rooms/{q(room)}/threads", status=403, errcode="M_FORBIDDEN")


def test_thread_off_a_child_is_refused(api: Api) -> None:
    alice = new_user(api, "alice")
    room = alice.create_room()
    root = alice.send(room, content=text("root"))
    reply = alice.send(room, content=thread_reply(root, "reply"))
    before = [e["event_id"] for e in alice.messages(room, dir="b", limit=50)["chunk"]]
    alice.err("POST", f"/rooms/{q(room)}/send/m.room.message", thread_reply(reply, "nested"),
              status=400, errcode="M_UNKNOWN")
    assert [e["event_id"] for e in alice.messages(room, dir="b", limit=50)["chunk"]] == before
    assert json.dumps(relations(alice, room, reply)["chunk"]) == "[]"
