"""The search stores: the full-text index of room events, and the user directory.

The full-text tables (``event_search``, ``user_directory_search``) have the
same columns on both engines: SQLite FTS5 tables (their rowid is our key:
the stream position, a hash of the user id), or PostgreSQL tables whose
``tsvector`` is a generated column under a GIN index. Only the full-text
statements differ per engine; queries reaching them are built by
``storage/fts.py`` from the user's words, never from raw input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from myelin.storage.engines import Database, Transaction
from myelin.storage.fts import Query, index_text

# PostgreSQL text search configurations (the generated columns of migration
# 006 use the same): messages are stemmed (English, as Synapse does); names
# in the directory are not.
_PG_EVENTS_CONFIG = "english"
_PG_USERS_CONFIG = "simple"


@dataclass(frozen=True)
class SearchScope:
    """Which indexed events one search may return, before history visibility."""

    user_id: str  # only rooms this user has (or had) a membership in
    keys: Sequence[str]
    rooms: Sequence[str] | None = None
    not_rooms: Sequence[str] = ()
    senders: Sequence[str] | None = None
    not_senders: Sequence[str] = ()


@dataclass(frozen=True)
class SearchHit:
    stream_ordering: int
    event_id: str
    room_id: str
    rank: float


@dataclass(frozen=True)
class DirectoryEntry:
    user_id: str
    display_name: str | None
    avatar_url: str | None


def _user_rowid(user_id: str) -> int:
    """A user's rowid in SQLite's FTS table: 63 bits of a hash of the id, so
    an entry is found again without scanning (FTS5 indexes no other column)."""
    digest = hashlib.sha256(user_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _in_list(column: str, values: Sequence[str], negate: bool = False) -> tuple[str, list[Any]]:
    marks = ",".join("?" * len(values))
    return f"{column} {'NOT ' if negate else ''}IN ({marks})", list(values)


class SearchStore:
    """The text of message, name and topic events, and searches over it."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def index_event(self, txn: Transaction, position: int, event_id: str, room_id: str,
                    sender: str, key: str, text: str) -> None:
        # rowid = stream_ordering on SQLite (PostgreSQL ignores it: no such column).
        rowid = "rowid, " if self.db.engine == "sqlite" else ""
        mark = "?, " if rowid else ""
        args: list[Any] = [position] if rowid else []
        txn.defer(
            f"INSERT INTO event_search ({rowid}value, stream_ordering, event_id, room_id,"
            f" sender, key) VALUES ({mark}?, ?, ?, ?, ?, ?)",
            *args, index_text(text), position, event_id, room_id, sender, key)

    def unindex_event(self, txn: Transaction, event_id: str) -> None:
        """Forget an event's text (it was redacted)."""
        if self.db.engine == "sqlite":
            # By rowid: FTS5 cannot look up an UNINDEXED column without a scan.
            txn.defer("DELETE FROM event_search WHERE rowid IN"
                      " (SELECT stream_ordering FROM events WHERE event_id = ?)", event_id)
        else:
            txn.defer("DELETE FROM event_search WHERE event_id = ?", event_id)

    def _matching(self, query: Query, scope: SearchScope) -> tuple[str, list[Any]]:
        """SELECT (stream_ordering, event_id, room_id, rank) of every match in scope."""
        if self.db.engine == "postgres":
            tsquery = f"to_tsquery('{_PG_EVENTS_CONFIG}', ?)"
            sql = (f"SELECT s.stream_ordering, s.event_id, s.room_id,"
                   f" ts_rank(s.vector, {tsquery})::float8 AS rank"
                   f" FROM event_search s"
                   f" JOIN room_memberships m ON m.room_id = s.room_id AND m.user_id = ?"
                   f" WHERE s.vector @@ {tsquery}")
            text = query.to_tsquery()
            args: list[Any] = [text, scope.user_id, text]
        else:
            # bm25() is lower for better matches: negate it so higher is better on both.
            sql = ("SELECT s.rowid AS stream_ordering, s.event_id, s.room_id,"
                   " -bm25(event_search) AS rank FROM event_search s"
                   " JOIN room_memberships m ON m.room_id = s.room_id AND m.user_id = ?"
                   " WHERE event_search MATCH ?")
            args = [scope.user_id, query.to_fts5()]
        for column, values, negate in (("s.key", scope.keys, False),
                                       ("s.room_id", scope.rooms, False),
                                       ("s.room_id", scope.not_rooms, True),
                                       ("s.sender", scope.senders, False),
                                       ("s.sender", scope.not_senders, True)):
            if values is None or (negate and not values):
                continue
            if not values:
                sql += " AND 1 = 0"
                continue
            clause, more = _in_list(column, values, negate)
            sql += f" AND {clause}"
            args += more
        return sql, args

    async def count(self, query: Query, scope: SearchScope) -> int:
        if query.empty:
            return 0
        sql, args = self._matching(query, scope)
        return int(await self.db.fetchval(f"SELECT COUNT(*) FROM ({sql}) AS hits", *args) or 0)

    async def search(self, query: Query, scope: SearchScope, *, by_rank: bool,
                     after: tuple[float, int] | None, limit: int) -> list[SearchHit]:
        """Matches in order (best rank first, or newest first), after ``after``
        ((rank, stream_ordering) of the last one already returned)."""
        if query.empty or limit <= 0:
            return []
        sql, args = self._matching(query, scope)
        where = ""
        if after is not None:
            rank, position = after
            if by_rank:
                where = (" WHERE hits.rank < ? OR (hits.rank = ? AND"
                         " hits.stream_ordering < ?)")
                args += [rank, rank, position]
            else:
                where = " WHERE hits.stream_ordering < ?"
                args.append(position)
        order = "hits.rank DESC, hits.stream_ordering DESC" if by_rank else \
            "hits.stream_ordering DESC"
        rows = await self.db.fetchall(
            f"SELECT hits.stream_ordering, hits.event_id, hits.room_id, hits.rank"
            f" FROM ({sql}) AS hits{where} ORDER BY {order} LIMIT ?", *args, limit)
        return [SearchHit(int(r[0]), r[1], r[2], float(r[3] or 0.0)) for r in rows]


class UserDirectoryStore:
    """Who may be found in the user directory, and under which names."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- profiles ------------------------------------------------------------
    async def write_profile(self, txn: Transaction, user_id: str, display_name: str | None,
                            avatar_url: str | None) -> None:
        """The directory entry of a local user, as their profile now is."""
        await txn.execute(
            "INSERT INTO user_directory (user_id, display_name, avatar_url) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name,"
            " avatar_url = excluded.avatar_url", user_id, display_name, avatar_url)
        # The whole user id, so that a pasted "@bob:example.org" finds bob.
        words = index_text(f"{user_id} {display_name or ''}")
        if self.db.engine == "postgres":
            await txn.execute(
                "INSERT INTO user_directory_search (words, user_id) VALUES (?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET words = excluded.words", words, user_id)
            return
        rowid = _user_rowid(user_id)
        await txn.execute("DELETE FROM user_directory_search WHERE rowid = ?", rowid)
        await txn.execute("INSERT INTO user_directory_search (rowid, words, user_id)"
                          " VALUES (?, ?, ?)", rowid, words, user_id)

    async def users_without_entry(self, limit: int) -> list[tuple[str, str | None, str | None]]:
        """Local users the directory has no entry for (users older than it)."""
        rows = await self.db.fetchall(
            "SELECT u.user_id, p.displayname, p.avatar_url FROM users u"
            " LEFT JOIN profiles p ON p.user_id = u.user_id"
            " WHERE NOT EXISTS (SELECT 1 FROM user_directory d WHERE d.user_id = u.user_id)"
            " ORDER BY u.user_id LIMIT ?", limit)
        return [(r[0], r[1], r[2]) for r in rows]

    # -- public rooms --------------------------------------------------------
    @staticmethod
    async def set_public_member(txn: Transaction, room_id: str, user_id: str,
                                listed: bool) -> None:
        if listed:
            await txn.execute("INSERT INTO users_in_public_rooms (user_id, room_id)"
                              " VALUES (?, ?) ON CONFLICT DO NOTHING", user_id, room_id)
        else:
            await txn.execute("DELETE FROM users_in_public_rooms WHERE user_id = ?"
                              " AND room_id = ?", user_id, room_id)

    @staticmethod
    async def set_public_room(txn: Transaction, room_id: str, public: bool) -> None:
        """List all of a room's joined members (public) or none of them."""
        await txn.execute("DELETE FROM users_in_public_rooms WHERE room_id = ?", room_id)
        if public:
            await txn.execute(
                "INSERT INTO users_in_public_rooms (user_id, room_id)"
                " SELECT user_id, room_id FROM room_memberships"
                " WHERE room_id = ? AND membership = 'join'", room_id)

    # -- the position in the events stream ------------------------------------
    async def get_position(self) -> int | None:
        value = await self.db.fetchval(
            "SELECT stream_ordering FROM user_directory_position WHERE id = 1")
        return None if value is None else int(value)

    @staticmethod
    async def set_position(txn: Transaction, position: int) -> None:
        await txn.execute(
            "INSERT INTO user_directory_position (id, stream_ordering) VALUES (1, ?)"
            " ON CONFLICT (id) DO UPDATE SET stream_ordering = excluded.stream_ordering",
            position)

    # -- search --------------------------------------------------------------
    async def search(self, searcher: str, query: Query, limit: int, *,
                     search_all_users: bool, show_locked_users: bool = False,
                     ) -> list[DirectoryEntry]:
        """Up to ``limit`` users matching ``query`` whom ``searcher`` may find:
        users sharing a room with them, users in public rooms, or (with
        ``search_all_users``) every local user; never deactivated ones, and
        locked ones only with ``show_locked_users``."""
        if query.empty or limit <= 0:
            return []
        if self.db.engine == "postgres":
            tsquery = f"to_tsquery('{_PG_USERS_CONFIG}', ?)"
            sql = (f"SELECT d.user_id, d.display_name, d.avatar_url,"
                   f" ts_rank(f.vector, {tsquery}) AS rank FROM user_directory_search f"
                   f" JOIN user_directory d ON d.user_id = f.user_id"
                   f" WHERE f.vector @@ {tsquery}")
            text = query.to_tsquery()
            args: list[Any] = [text, text]
        else:
            sql = ("SELECT d.user_id, d.display_name, d.avatar_url,"
                   " -bm25(user_directory_search) AS rank FROM user_directory_search f"
                   " JOIN user_directory d ON d.user_id = f.user_id"
                   " WHERE user_directory_search MATCH ?")
            args = [query.to_fts5()]
        sql += (" AND EXISTS (SELECT 1 FROM users u WHERE u.user_id = d.user_id"
                " AND u.deactivated = 0" + ("" if show_locked_users else " AND u.locked = 0")
                + ")")
        if not search_all_users:
            sql += (" AND (EXISTS (SELECT 1 FROM users_in_public_rooms p"
                    " WHERE p.user_id = d.user_id)"
                    " OR EXISTS (SELECT 1 FROM room_memberships mine"
                    " JOIN room_memberships theirs ON theirs.room_id = mine.room_id"
                    " WHERE mine.user_id = ? AND mine.membership = 'join'"
                    " AND theirs.user_id = d.user_id AND theirs.membership = 'join'"
                    # Nobody shares a room with themselves.
                    " AND theirs.user_id <> mine.user_id))")
            args.append(searcher)
        rows = await self.db.fetchall(
            f"SELECT hits.user_id, hits.display_name, hits.avatar_url FROM ({sql}) AS hits"
            f" ORDER BY hits.rank DESC, hits.display_name IS NULL, hits.display_name,"
            f" hits.user_id LIMIT ?", *args, limit)
        return [DirectoryEntry(r[0], r[1], r[2]) for r in rows]
