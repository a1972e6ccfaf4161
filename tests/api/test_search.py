"""POST /search over raw HTTP: what a user finds, in which order, page by page,
and never an event they may not see."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.rooms_support import Api, User, q
from tests.support.server import ServerProcess

_ids = itertools.count()


def fresh(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


@pytest.fixture(scope="module")
def api(hs: ServerProcess) -> Iterator[Api]:
    checker = Api(hs)
    yield checker
    checker.verify_all()


def search(user: User, term: str, next_batch: str | None = None,
           **room_events: Any) -> dict[str, Any]:
    path = "/search" + (f"?next_batch={q(next_batch)}" if next_batch else "")
    body = user.ok("POST", path, {"search_categories": {
        "room_events": {"search_term": term, **room_events}}})
    return dict(body["search_categories"]["room_events"])


def bodies(found: dict[str, Any]) -> list[str]:
    return [r["result"]["content"].get("body") for r in found["results"]]


def test_finds_own_messages_with_the_timeline_format(api: Api) -> None:
    alice = api.user(fresh("alice"))
    room = alice.create_room()
    word = fresh("kumquat")
    event_id = alice.send(room, f"I like {word} jam")
    alice.send(room, "something else")
    found = search(alice, word)
    assert found["count"] == 1
    assert word in found["highlights"]
    [result] = found["results"]
    assert isinstance(result["rank"], (int, float))
    event = result["result"]
    assert event["event_id"] == event_id and event["room_id"] == room
    assert event["sender"] == alice.user_id and event["type"] == "m.room.message"
    assert event["content"] == {"msgtype": "m.text", "body": f"I like {word} jam"}
    assert "age" in event["unsigned"]
    assert "next_batch" not in found
    # Prefixes and case do not matter.
    assert bodies(search(alice, word[:-2].upper())) == [f"I like {word} jam"]


def test_only_rooms_the_searcher_may_see(api: Api) -> None:
    alice, bob = api.user(fresh("alice")), api.user(fresh("bob"))
    word = fresh("marmalade")
    # A room bob never joined.
    private = alice.create_room(preset="private_chat")
    alice.send(private, f"{word} secret")
    assert bodies(search(alice, word)) == [f"{word} secret"]
    found = search(bob, word)
    assert found["results"] == [] and found["count"] == 0
    # A room that shows members only what was said while they were joined.
    joined_only = alice.create_room(preset="private_chat")
    alice.put_state(joined_only, "m.room.history_visibility", {"history_visibility": "joined"})
    alice.send(joined_only, f"{word} before bob")
    alice.invite(joined_only, bob.user_id)
    bob.join(joined_only)
    alice.send(joined_only, f"{word} after bob")
    found = search(bob, word)
    assert bodies(found) == [f"{word} after bob"]
    assert found["count"] == 1
    # After bob leaves, what came later stays hidden; what he saw stays found.
    bob.leave(joined_only)
    alice.send(joined_only, f"{word} after leaving")
    assert bodies(search(bob, word)) == [f"{word} after bob"]


def test_names_topics_and_the_keys_filter(api: Api) -> None:
    alice = api.user(fresh("alice"))
    word = fresh("zanzibar")
    room = alice.create_room(name=f"The {word} room", topic=f"Talk about {word} here")
    alice.send(room, f"{word} in a message")
    found = search(alice, word)
    assert {r["result"]["type"] for r in found["results"]} == {
        "m.room.name", "m.room.topic", "m.room.message"}
    [name] = search(alice, word, keys=["content.name"])["results"]
    assert name["result"]["content"]["name"] == f"The {word} room"
    [topic] = search(alice, word, keys=["content.topic"])["results"]
    assert topic["result"]["type"] == "m.room.topic"
    # The filter's types narrow it too.
    found = search(alice, word, filter={"types": ["m.room.message"]})
    assert bodies(found) == [f"{word} in a message"]


def test_order_by_recent_and_by_rank(api: Api) -> None:
    alice = api.user(fresh("alice"))
    room = alice.create_room()
    word = fresh("papaya")
    alice.send(room, f"{word} {word} {word}")
    alice.send(room, f"a long message that mentions {word} once among many other words")
    alice.send(room, f"{word} here")
    recent = search(alice, word, order_by="recent")
    assert bodies(recent) == [f"{word} here",
                              f"a long message that mentions {word} once among many other words",
                              f"{word} {word} {word}"]
    ranked = search(alice, word, order_by="rank")
    ranks = [r["rank"] for r in ranked["results"]]
    assert ranks == sorted(ranks, reverse=True)
    assert bodies(ranked)[0] == f"{word} {word} {word}"
    assert bodies(ranked)[-1] == \
        f"a long message that mentions {word} once among many other words"


@pytest.mark.parametrize("order_by", ["recent", "rank"])
def test_next_batch_pages_through_the_rest_without_repeats(api: Api, order_by: str) -> None:
    alice, bob = api.user(fresh("alice")), api.user(fresh("bob"))
    room = alice.create_room(preset="public_chat")
    alice.put_state(room, "m.room.history_visibility", {"history_visibility": "joined"})
    word = fresh("guava")
    for i in range(8):
        alice.send(room, f"{word} hidden {i}")
    bob.join(room)
    sent = [alice.send(room, f"{word} {'x ' * (i % 4)}number {i}") for i in range(23)]
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        found = search(bob, word, token, order_by=order_by, filter={"limit": 10})
        assert found["count"] == 23
        assert len(found["results"]) <= 10
        seen += [r["result"]["event_id"] for r in found["results"]]
        pages += 1
        token = found.get("next_batch")
        if token is None:
            break
        assert pages < 10
    assert pages == 3
    assert len(seen) == len(set(seen)) == 23
    assert set(seen) == set(sent)
    # A token of one order is no good for the other.
    other = "rank" if order_by == "recent" else "recent"
    first = search(bob, word, order_by=order_by, filter={"limit": 10})
    bob.err("POST", f"/search?next_batch={q(first['next_batch'])}", {"search_categories": {
        "room_events": {"search_term": word, "order_by": other}}},
        status=400, errcode="M_INVALID_PARAM")


def test_groupings_by_room_and_sender(api: Api) -> None:
    alice, bob = api.user(fresh("alice")), api.user(fresh("bob"))
    word = fresh("lychee")
    one = alice.create_room(preset="public_chat")
    two = alice.create_room(preset="public_chat")
    bob.join(one)
    alice.send(one, f"{word} a1")
    bob.send(one, f"{word} b1")
    alice.send(two, f"{word} a2")
    alice.send(two, f"{word} a3")
    found = search(alice, word, order_by="recent", groupings={
        "group_by": [{"key": "room_id"}, {"key": "sender"}]})
    groups = found["groups"]
    by_room = {room: len(g["results"]) for room, g in groups["room_id"].items()}
    assert by_room == {one: 2, two: 2}
    by_sender = {sender: len(g["results"]) for sender, g in groups["sender"].items()}
    assert by_sender == {alice.user_id: 3, bob.user_id: 1}
    # Newest first: room two's group comes first.
    assert groups["room_id"][two]["order"] < groups["room_id"][one]["order"]
    result_ids = {r["result"]["event_id"] for r in found["results"]}
    assert {e for g in groups["room_id"].values() for e in g["results"]} == result_ids


def test_event_context_and_state(api: Api) -> None:
    alice = api.user(fresh("alice"))
    alice.ok("PUT", f"/profile/{q(alice.user_id)}/displayname", {"displayname": "Alice A."})
    room = alice.create_room(name="Context room")
    word = fresh("quince")
    alice.send(room, "before two")
    alice.send(room, "before one")
    alice.send(room, f"the {word} itself")
    alice.send(room, "after one")
    alice.send(room, "after two")
    found = search(alice, word, include_state=True,
                   event_context={"before_limit": 1, "after_limit": 2, "include_profile": True})
    [result] = found["results"]
    context = result["context"]
    assert [e["content"]["body"] for e in context["events_before"]] == ["before one"]
    assert [e["content"]["body"] for e in context["events_after"]] == ["after one", "after two"]
    assert isinstance(context["start"], str) and isinstance(context["end"], str)
    assert context["profile_info"][alice.user_id]["displayname"] == "Alice A."
    state = {(e["type"], e["state_key"]): e for e in found["state"][room]}
    assert state[("m.room.name", "")]["content"]["name"] == "Context room"
    # The context tokens page on from there.
    later = alice.messages(room, dir="f", **{"from": context["end"]})
    assert later["chunk"] == []


def test_filter_rooms_and_senders(api: Api) -> None:
    alice, bob = api.user(fresh("alice")), api.user(fresh("bob"))
    word = fresh("tamarind")
    one = alice.create_room(preset="public_chat")
    two = alice.create_room(preset="public_chat")
    bob.join(one)
    alice.send(one, f"{word} alice one")
    bob.send(one, f"{word} bob one")
    alice.send(two, f"{word} alice two")
    assert sorted(bodies(search(alice, word, filter={"rooms": [one]}))) == [
        f"{word} alice one", f"{word} bob one"]
    assert bodies(search(alice, word, filter={"not_rooms": [one]})) == [f"{word} alice two"]
    assert bodies(search(alice, word, filter={"senders": [bob.user_id]})) == [f"{word} bob one"]
    assert len(search(alice, word, filter={"not_senders": [bob.user_id]})["results"]) == 2


def test_redacted_messages_are_not_found(api: Api) -> None:
    alice = api.user(fresh("alice"))
    room = alice.create_room()
    word = fresh("durian")
    event_id = alice.send(room, f"{word} regrettable")
    alice.send(room, f"{word} fine")
    alice.ok("PUT", f"/rooms/{q(room)}/redact/{q(event_id)}/txn1", {"reason": "oops"})
    assert bodies(search(alice, word)) == [f"{word} fine"]
    assert search(alice, "regrettable")["results"] == []


@pytest.mark.parametrize("term", ['"', "*", "foo*", "AND", "a AND", "OR", "NOT x", "NEAR(",
                                  "NEAR(a b", "-", "-x", '"unbalanced', "a:b", "()", "\\",
                                  "'", "!&|", "<->", "^col", "   ", ""])
def test_search_syntax_in_the_term_is_not_an_error(api: Api, term: str) -> None:
    alice = api.user(fresh("alice"))
    room = alice.create_room()
    alice.send(room, 'hello "world" AND NEAR(foo) - bar * baz')
    found = search(alice, term)
    assert isinstance(found["results"], list) and isinstance(found["count"], int)


def test_quoted_words_from_the_term_are_still_found(api: Api) -> None:
    alice = api.user(fresh("alice"))
    room = alice.create_room()
    word = fresh("NEAR")
    alice.send(room, f"use {word} AND other things")
    assert len(search(alice, f'{word}( "AND" *')["results"]) == 1


@pytest.mark.parametrize(("body", "errcode"), [
    ({}, "M_BAD_JSON"),
    ({"search_categories": []}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": "x"}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {}}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": 5}}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "order_by": "best"}}},
     "M_INVALID_PARAM"),
    ({"search_categories": {"room_events": {"search_term": "x", "keys": "content.body"}}},
     "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "keys": ["content.url"]}}},
     "M_INVALID_PARAM"),
    ({"search_categories": {"room_events": {"search_term": "x", "filter": {"limit": "2"}}}},
     "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x",
                                            "event_context": {"before_limit": "1"}}}},
     "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x",
                                            "event_context": {"before_limit": -1}}}},
     "M_INVALID_PARAM"),
    ({"search_categories": {"room_events": {"search_term": "x", "include_state": "yes"}}},
     "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x",
                                            "groupings": {"group_by": [{"key": "type"}]}}}},
     "M_INVALID_PARAM"),
])
def test_bad_bodies(api: Api, body: dict[str, Any], errcode: str) -> None:
    alice = api.user(fresh("alice"))
    alice.err("POST", "/search", body, status=400, errcode=errcode)


def test_bad_tokens_and_no_token(api: Api) -> None:
    alice = api.user(fresh("alice"))
    body = {"search_categories": {"room_events": {"search_term": "x"}}}
    alice.err("POST", "/search?next_batch=nonsense", body, status=400,
              errcode="M_INVALID_PARAM")
    status, data = api.server.request("POST", "/_matrix/client/v3/search", body)
    assert status == 401 and data["errcode"] == "M_MISSING_TOKEN"
    # No room_events category: nothing to search.
    assert alice.ok("POST", "/search", {"search_categories": {}}) == {"search_categories": {}}
