"""The full-text stores on both engines: what a query matches, and that no
user input reaches the engine's query syntax."""

from __future__ import annotations

import pytest

from myelin.storage.engines import Database
from myelin.storage.fts import parse_query, search_words
from myelin.storage.stores.search import SearchScope, SearchStore, UserDirectoryStore

HOSTILE = ['"', '""', '"unterminated', "*", "**", "foo*", "AND", "OR", "NOT", "a AND",
           "OR b", "NEAR(", "NEAR(a b)", "-", "--", "-foo", "- -", "(", ")", "()", "a:b",
           "'", "\\", "!", "&", "|", "<->", "foo:*", "^", "{a}", "col:foo", "a OR OR b",
           "   ", "", "🐇", "_", "a_b", "NOT hello", "hello NOT", "\x00"]


# -- parsing (pure) -------------------------------------------------------------------

def test_words_are_letters_and_digits_casefolded() -> None:
    assert search_words("Alice.Smith_99 Straße") == ["alice", "smith", "99", "strasse"]


def test_plain_words_all_must_match_as_prefixes() -> None:
    query = parse_query("hello wor")
    assert query.to_fts5() == '(("hello"*)) AND (("wor"*))'
    assert query.to_tsquery() == "((hello:*)) & ((wor:*))"


def test_phrases_exclusions_and_or() -> None:
    query = parse_query('"big cat" -dog lion OR tiger')
    assert query.highlight_words() == ["big", "cat", "lion", "tiger"]
    assert query.to_tsquery() == "((big <-> cat)) & ((lion:*) | (tiger:*)) & !(dog:*)"
    assert query.to_fts5() == ('((("big cat")) AND (("lion"*) OR ("tiger"*))) NOT ("dog"*)')


def test_nothing_to_look_for_is_an_empty_query() -> None:
    for text in ("", "   ", "-foo", "* ( ) OR", '""'):
        assert parse_query(text).empty, text


# -- both engines ---------------------------------------------------------------------

async def _index(db: Database, store: SearchStore, rows: list[tuple[int, str, str]]) -> None:
    async with db.transaction() as txn:
        for position, room_id, text in rows:
            await txn.execute(
                "INSERT INTO room_memberships (room_id, user_id, membership, event_id,"
                " stream_ordering, forgotten) VALUES (?, '@u:x', 'join', ?, 1, 0)"
                " ON CONFLICT DO NOTHING", room_id, f"$m{room_id}")
            await txn.execute(
                "INSERT INTO events (stream_ordering, event_id, room_id, type, sender, depth,"
                " origin_server_ts, instance_name, json) VALUES (?, ?, ?, 'm.room.message',"
                " '@s:x', 1, 0, 'master', '{}')", position, f"$e{position}", room_id)
            store.index_event(txn, position, f"$e{position}", room_id, "@s:x", "content.body",
                              text)


async def _found(store: SearchStore, text: str, by_rank: bool = False) -> list[str]:
    hits = await store.search(parse_query(text), SearchScope("@u:x", ["content.body"]),
                              by_rank=by_rank, after=None, limit=50)
    return [h.event_id for h in hits]


async def test_event_search_matches_words_prefixes_and_phrases(db: Database) -> None:
    store = SearchStore(db)
    await _index(db, store, [(1, "!a:x", "The quick brown fox"),
                             (2, "!a:x", "quickly, a fox-like dog"),
                             (3, "!b:x", "nothing to see here"),
                             (4, "!b:x", "user@example.org said: brown!")])
    assert await _found(store, "fox") == ["$e2", "$e1"]  # newest first
    assert await _found(store, "qui") == ["$e2", "$e1"]
    assert await _found(store, "QUICK BROWN") == ["$e1"]
    assert await _found(store, '"brown fox"') == ["$e1"]
    assert await _found(store, "fox -dog") == ["$e1"]
    assert await _found(store, "brown OR dog") == ["$e4", "$e2", "$e1"]
    assert await _found(store, "example") == ["$e4"]
    assert await _found(store, "elephant") == []
    # The rank order puts the better match first.
    assert (await _found(store, "fox quick", by_rank=True))[0] in ("$e1", "$e2")


@pytest.mark.parametrize("text", HOSTILE)
async def test_no_input_is_an_engine_syntax_error(db: Database, text: str) -> None:
    store = SearchStore(db)
    await _index(db, store, [(1, "!a:x", 'hello "world" AND NEAR(foo) -bar * a_b')])
    scope = SearchScope("@u:x", ["content.body"])
    query = parse_query(text)
    await store.count(query, scope)
    await store.search(query, scope, by_rank=True, after=None, limit=5)
    await UserDirectoryStore(db).search("@u:x", query, 5, search_all_users=True)


async def test_redacted_text_is_forgotten(db: Database) -> None:
    store = SearchStore(db)
    await _index(db, store, [(1, "!a:x", "secret plans"), (2, "!a:x", "public plans")])
    async with db.transaction() as txn:
        store.unindex_event(txn, "$e1")
    assert await _found(store, "plans") == ["$e2"]
    assert await _found(store, "secret") == []


async def test_directory_matches_localparts_and_display_names(db: Database) -> None:
    store = UserDirectoryStore(db)
    async with db.transaction() as txn:
        for user_id, name in (("@alice.smith:x", "Alice Liddell"), ("@bob:x", "Bobby Tables"),
                              ("@carol:x", None)):
            await txn.execute("INSERT INTO users (user_id, created_ts) VALUES (?, 0)", user_id)
            await store.write_profile(txn, user_id, name, None)
        # A second write replaces the first: the old name no longer matches.
        await store.write_profile(txn, "@bob:x", "Robert", "mxc://x/y")

    async def found(text: str) -> list[str]:
        entries = await store.search("@nobody:x", parse_query(text), 10, search_all_users=True)
        return sorted(e.user_id for e in entries)

    assert await found("lid") == ["@alice.smith:x"]
    assert await found("smi") == ["@alice.smith:x"]
    assert await found("ALICE l") == ["@alice.smith:x"]
    assert await found("rob") == ["@bob:x"]
    assert await found("bobby") == []
    assert await found("car") == ["@carol:x"]
    # Locked accounts are listed only when asked for.
    await db.execute("UPDATE users SET locked = 1 WHERE user_id = '@carol:x'")
    assert await found("car") == []
    entries = await store.search("@nobody:x", parse_query("car"), 10, search_all_users=True,
                                 show_locked_users=True)
    assert [e.user_id for e in entries] == ["@carol:x"]
    # Without search_all_users, only room mates and public-room members.
    assert await store.search("@nobody:x", parse_query("car"), 10,
                              search_all_users=False) == []
