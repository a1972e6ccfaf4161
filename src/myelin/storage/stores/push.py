"""Push actions (what the push rules gave each user for each event) and pushers.

``event_push_actions`` is written by the push actions indexer inside each
event's own transaction, so it is exact at every events position; unread
counts and ``/notifications`` read it from any process. ``pushers`` holds
what clients registered through ``/pushers/set``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from myelin.storage.engines import Database, Transaction

MAIN_TIMELINE = "main"

# (room_id, thread_id) -> (notification_count, highlight_count)
Counts = dict[tuple[str, str], tuple[int, int]]


@dataclass(frozen=True)
class PushAction:
    user_id: str
    room_id: str
    event_id: str
    stream_ordering: int
    thread_id: str
    notif: bool       # counts towards unread notifications
    highlight: bool   # counts towards unread highlights
    actions: list[Any]
    inserted_ts: int


@dataclass(frozen=True)
class Pusher:
    user_id: str
    app_id: str
    pushkey: str
    kind: str
    app_display_name: str
    device_display_name: str
    profile_tag: str
    lang: str
    data: dict[str, Any]
    device_id: str | None
    access_token: str | None
    last_stream_ordering: int
    # When the pushkey was set (ms): a notification's pushkey_ts.
    created_ts: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"app_id": self.app_id, "pushkey": self.pushkey, "kind": self.kind,
                "app_display_name": self.app_display_name,
                "device_display_name": self.device_display_name,
                "profile_tag": self.profile_tag, "lang": self.lang, "data": self.data}


# One range of a user's actions to count: room, only this thread (or every
# thread but `exclude`), after `lower`, up to `upper`.
@dataclass(frozen=True)
class CountRange:
    room_id: str
    lower: int
    upper: int
    thread_id: str | None = None
    exclude: tuple[str, ...] = ()


_ACTION_COLUMNS = ("user_id, room_id, event_id, stream_ordering, thread_id, notif, highlight,"
                   " actions, inserted_ts")
_CLAUSES_PER_QUERY = 100


def _action(row: Sequence[Any]) -> PushAction:
    return PushAction(row[0], row[1], row[2], int(row[3]), row[4], bool(row[5]), bool(row[6]),
                      orjson.loads(row[7]), int(row[8]))


class PushActionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    async def add(txn: Transaction, actions: Iterable[PushAction]) -> None:
        """Write one event's actions for all its recipients (one batched statement)."""
        await txn.executemany(
            f"INSERT INTO event_push_actions ({_ACTION_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(a.user_id, a.room_id, a.event_id, a.stream_ordering, a.thread_id, int(a.notif),
              int(a.highlight), orjson.dumps(a.actions).decode(), a.inserted_ts)
             for a in actions])

    async def count(self, user_id: str, ranges: Sequence[CountRange]) -> Counts:
        """Notifying and highlighting actions of ``user_id`` per (room, thread)
        within the given ranges: one query per hundred ranges."""
        out: Counts = {}
        for start in range(0, len(ranges), _CLAUSES_PER_QUERY):
            clauses: list[str] = []
            args: list[Any] = [user_id]
            for r in ranges[start:start + _CLAUSES_PER_QUERY]:
                clause = "(room_id = ? AND stream_ordering > ? AND stream_ordering <= ?"
                args += [r.room_id, r.lower, r.upper]
                if r.thread_id is not None:
                    clause += " AND thread_id = ?"
                    args.append(r.thread_id)
                if r.exclude:
                    clause += f" AND thread_id NOT IN ({','.join('?' * len(r.exclude))})"
                    args += r.exclude
                clauses.append(clause + ")")
            rows = await self.db.fetchall(
                "SELECT room_id, thread_id, SUM(notif), SUM(highlight) FROM event_push_actions"
                f" WHERE user_id = ? AND ({' OR '.join(clauses)}) GROUP BY room_id, thread_id",
                *args)
            for room_id, thread_id, notif, highlight in rows:
                key = (room_id, thread_id)
                old = out.get(key, (0, 0))
                out[key] = (old[0] + int(notif or 0), old[1] + int(highlight or 0))
        return out

    async def get_for_user(self, user_id: str, *, before: int | None = None,
                           after: int | None = None, limit: int = 20,
                           only_highlight: bool = False) -> list[PushAction]:
        """A user's actions, newest first below ``before``, or oldest first
        above ``after`` (what a pusher delivers next)."""
        where = ["user_id = ?"]
        args: list[Any] = [user_id]
        if before is not None:
            where.append("stream_ordering < ?")
            args.append(before)
        if after is not None:
            where.append("stream_ordering > ?")
            args.append(after)
        if only_highlight:
            where.append("highlight = 1")
        order = "ASC" if after is not None else "DESC"
        rows = await self.db.fetchall(
            f"SELECT {_ACTION_COLUMNS} FROM event_push_actions WHERE {' AND '.join(where)}"
            f" ORDER BY stream_ordering {order} LIMIT ?", *args, limit)
        return [_action(r) for r in rows]

    async def users_with_actions(self, lower: int, upper: int) -> set[str]:
        """Users with an action in (lower, upper]: whose pushers have news."""
        rows = await self.db.fetchall(
            "SELECT DISTINCT user_id FROM event_push_actions"
            " WHERE stream_ordering > ? AND stream_ordering <= ?", lower, upper)
        return {r[0] for r in rows}


def _pusher(row: Sequence[Any]) -> Pusher:
    return Pusher(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                  orjson.loads(row[8]), row[9], row[10], int(row[11]),
                  int(row[12]) if len(row) > 12 else 0)


_PUSHER_COLUMNS = ("user_id, app_id, pushkey, kind, app_display_name, device_display_name,"
                   " profile_tag, lang, data, device_id, access_token, last_stream_ordering")
_PUSHER_READ = _PUSHER_COLUMNS + ", created_ts"


class PusherStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_pushers(self, user_id: str) -> list[Pusher]:
        rows = await self.db.fetchall(
            f"SELECT {_PUSHER_READ} FROM pushers WHERE user_id = ?"
            " ORDER BY created_ts, app_id, pushkey", user_id)
        return [_pusher(r) for r in rows]

    async def get_pusher(self, user_id: str, app_id: str, pushkey: str) -> Pusher | None:
        row = await self.db.fetchone(
            f"SELECT {_PUSHER_READ} FROM pushers WHERE user_id = ? AND app_id = ?"
            " AND pushkey = ?", user_id, app_id, pushkey)
        return _pusher(row) if row else None

    async def all_pushers(self, kinds: Sequence[str]) -> list[Pusher]:
        """Every pusher of these kinds (what a starting pusher pool runs)."""
        rows = await self.db.fetchall(
            f"SELECT {_PUSHER_READ} FROM pushers WHERE kind IN ({','.join('?' * len(kinds))})"
            " ORDER BY user_id, app_id, pushkey", *kinds)
        return [_pusher(r) for r in rows]

    async def advance(self, user_id: str, app_id: str, pushkey: str, position: int) -> bool:
        """Record what a pusher has delivered; False when the pusher is gone."""
        changed = await self.db.execute(
            "UPDATE pushers SET last_stream_ordering = ? WHERE user_id = ? AND app_id = ?"
            " AND pushkey = ? AND last_stream_ordering < ?",
            position, user_id, app_id, pushkey, position)
        if changed:
            return True
        return await self.get_pusher(user_id, app_id, pushkey) is not None

    async def set_pusher(self, pusher: Pusher, *, append: bool, now_ms: int) -> None:
        """Create or update (same user, app_id, pushkey). Without ``append``,
        the same app_id + pushkey of other users is removed (the spec)."""
        async with self.db.transaction() as txn:
            if not append:
                await txn.execute(
                    "DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id <> ?",
                    pusher.app_id, pusher.pushkey, pusher.user_id)
            await txn.execute(
                f"INSERT INTO pushers ({_PUSHER_COLUMNS}, created_ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET"
                " kind = excluded.kind, app_display_name = excluded.app_display_name,"
                " device_display_name = excluded.device_display_name,"
                " profile_tag = excluded.profile_tag, lang = excluded.lang,"
                " data = excluded.data, device_id = excluded.device_id,"
                " access_token = excluded.access_token",
                pusher.user_id, pusher.app_id, pusher.pushkey, pusher.kind,
                pusher.app_display_name, pusher.device_display_name, pusher.profile_tag,
                pusher.lang, orjson.dumps(pusher.data).decode(), pusher.device_id,
                pusher.access_token, pusher.last_stream_ordering, now_ms)

    async def delete_pusher(self, user_id: str, app_id: str, pushkey: str) -> int:
        return await self.db.execute(
            "DELETE FROM pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?",
            user_id, app_id, pushkey)

    async def delete_for_devices(self, txn: Transaction, user_id: str,
                                 device_ids: Sequence[str]) -> None:
        for device_id in device_ids:
            await txn.execute("DELETE FROM pushers WHERE user_id = ? AND device_id = ?",
                              user_id, device_id)

    async def delete_for_token(self, txn: Transaction, access_token: str) -> None:
        await txn.execute("DELETE FROM pushers WHERE access_token = ?", access_token)

    async def delete_for_user(self, txn: Transaction, user_id: str, *,
                              keep: Mapping[str, str | None] | None = None) -> None:
        """Every pusher of ``user_id``, except those set from ``keep``'s
        device (or, for a device-less session, its access token)."""
        if keep and keep.get("device_id"):
            await txn.execute(
                "DELETE FROM pushers WHERE user_id = ? AND (device_id IS NULL OR device_id <> ?)",
                user_id, keep["device_id"])
        elif keep and keep.get("access_token"):
            await txn.execute(
                "DELETE FROM pushers WHERE user_id = ?"
                " AND (access_token IS NULL OR access_token <> ?)",
                user_id, keep["access_token"])
        else:
            await txn.execute("DELETE FROM pushers WHERE user_id = ?", user_id)
