"""What the Synapse-compatible admin API reads and writes beyond the other
stores: user listings, admin-only user fields (admin, shadow ban, user type),
blocked rooms, rate-limit overrides, server-notice rooms, the admin's
background jobs, and the deletion of a room's or a history's rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from myelin.storage.engines import Database
from myelin.storage.stores.accounts import now_ms


@dataclass(frozen=True)
class AdminUser:
    """One user as the admin API lists it."""

    name: str
    is_guest: bool
    admin: bool
    deactivated: bool
    locked: bool
    suspended: bool
    shadow_banned: bool
    user_type: str | None
    creation_ts: int
    displayname: str | None
    avatar_url: str | None
    last_seen_ts: int | None
    appservice_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "user_type": self.user_type, "is_guest": self.is_guest,
                "admin": self.admin, "deactivated": self.deactivated,
                "shadow_banned": self.shadow_banned, "locked": self.locked,
                "suspended": self.suspended, "approved": True,
                "erased": self.deactivated and self.displayname is None,
                "displayname": self.displayname, "avatar_url": self.avatar_url,
                # Seconds, as Synapse stores and answers it (synapse-admin
                # multiplies by 1000); last_seen_ts is in milliseconds.
                "creation_ts": self.creation_ts // 1000, "last_seen_ts": self.last_seen_ts,
                "appservice_id": self.appservice_id}


_USER_SQL = (
    "SELECT u.user_id, u.is_guest, u.admin, u.deactivated, u.locked, u.suspended,"
    " u.shadow_banned, u.user_type, u.created_ts, p.displayname, p.avatar_url,"
    " (SELECT MAX(d.last_seen_ts) FROM devices d WHERE d.user_id = u.user_id),"
    " u.appservice_id"
    " FROM users u LEFT JOIN profiles p ON p.user_id = u.user_id")


def _user(r: Any) -> AdminUser:
    return AdminUser(r[0], bool(r[1]), bool(r[2]), bool(r[3]), bool(r[4]), bool(r[5]),
                     bool(r[6]), r[7], int(r[8]), r[9], r[10],
                     None if r[11] is None else int(r[11]), r[12])


# Tables holding a room's rows, by room id; a room's deletion empties them.
# (Events-keyed tables are emptied first, by the room's event ids.)
ROOM_TABLES = ("current_state_events", "room_memberships", "room_forward_extremities",
               "room_aliases", "event_txn_ids", "receipts", "event_push_actions",
               "account_data", "e2e_room_keys", "event_relations", "threads",
               "event_search", "users_in_public_rooms", "state_groups", "events", "rooms")
EVENT_TABLES = ("event_edges", "event_auth", "event_to_state_groups", "redactions")


class AdminStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- users ----------------------------------------------------------------
    async def all_users(self) -> list[AdminUser]:
        return [_user(r) for r in await self.db.fetchall(_USER_SQL)]

    async def get_user(self, user_id: str) -> AdminUser | None:
        row = await self.db.fetchone(_USER_SQL + " WHERE u.user_id = ?", user_id)
        return _user(row) if row else None

    async def set_user_field(self, user_id: str, field: str, value: Any) -> None:
        assert field in ("admin", "shadow_banned", "user_type", "deactivated")
        if isinstance(value, bool):
            value = int(value)
        await self.db.execute(f"UPDATE users SET {field} = ? WHERE user_id = ?",
                              value, user_id)

    async def is_shadow_banned(self, user_id: str) -> bool:
        return bool(await self.db.fetchval(
            "SELECT shadow_banned FROM users WHERE user_id = ?", user_id))

    # -- rate-limit overrides ---------------------------------------------------
    async def get_ratelimit(self, user_id: str) -> tuple[int, int] | None:
        row = await self.db.fetchone(
            "SELECT messages_per_second, burst_count FROM ratelimit_override"
            " WHERE user_id = ?", user_id)
        return (int(row[0]), int(row[1])) if row else None

    async def set_ratelimit(self, user_id: str, per_second: int, burst: int) -> None:
        await self.db.execute(
            "INSERT INTO ratelimit_override (user_id, messages_per_second, burst_count)"
            " VALUES (?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET"
            " messages_per_second = excluded.messages_per_second,"
            " burst_count = excluded.burst_count", user_id, per_second, burst)

    async def delete_ratelimit(self, user_id: str) -> None:
        await self.db.execute("DELETE FROM ratelimit_override WHERE user_id = ?", user_id)

    # -- rooms --------------------------------------------------------------------
    async def all_room_ids(self) -> list[str]:
        return [r[0] for r in await self.db.fetchall("SELECT room_id FROM rooms")]

    async def room_row(self, room_id: str) -> tuple[str, str | None, bool, int] | None:
        row = await self.db.fetchone(
            "SELECT room_version, creator, is_public, created_ts FROM rooms WHERE room_id = ?",
            room_id)
        return (row[0], row[1], bool(row[2]), int(row[3])) if row else None

    async def count_state_events(self, room_id: str) -> int:
        return int(await self.db.fetchval(
            "SELECT COUNT(*) FROM current_state_events WHERE room_id = ?", room_id) or 0)

    async def get_block(self, room_id: str) -> str | None:
        value = await self.db.fetchval("SELECT user_id FROM blocked_rooms WHERE room_id = ?",
                                       room_id)
        return None if value is None else str(value)

    async def set_block(self, room_id: str, user_id: str, block: bool) -> None:
        if block:
            await self.db.execute(
                "INSERT INTO blocked_rooms (room_id, user_id) VALUES (?, ?)"
                " ON CONFLICT (room_id) DO NOTHING", room_id, user_id)
        else:
            await self.db.execute("DELETE FROM blocked_rooms WHERE room_id = ?", room_id)

    async def delete_room_rows(self, room_id: str) -> None:
        """Remove every row of ``room_id`` (its events, state, memberships,
        aliases, receipts, ...) in one transaction."""
        async with self.db.transaction() as txn:
            for table in EVENT_TABLES:
                await txn.execute(
                    f"DELETE FROM {table} WHERE event_id IN"
                    " (SELECT event_id FROM events WHERE room_id = ?)", room_id)
            await txn.execute(
                "DELETE FROM state_groups_state WHERE state_group IN"
                " (SELECT id FROM state_groups WHERE room_id = ?)", room_id)
            for table in ROOM_TABLES:
                await txn.execute(f"DELETE FROM {table} WHERE room_id = ?", room_id)
            await txn.execute("DELETE FROM server_notice_rooms WHERE room_id = ?", room_id)

    async def purge_history(self, room_id: str, before_ordering: int,
                            local_server: str | None) -> int:
        """Delete the room's non-state events older than ``before_ordering``
        (with ``local_server``, only other servers' events). State events
        stay, as outliers out of the timeline: the room's state, auth and
        membership need them. Forward extremities stay untouched."""
        async with self.db.transaction() as txn:
            rows = await txn.fetchall(
                "SELECT event_id, sender FROM events WHERE room_id = ? AND stream_ordering < ?"
                " AND state_key IS NULL AND event_id NOT IN"
                " (SELECT event_id FROM room_forward_extremities WHERE room_id = ?)",
                room_id, before_ordering, room_id)
            ids = [r[0] for r in rows
                   if local_server is None or not str(r[1]).endswith(":" + local_server)]
            # The state events before the point leave the timeline but stay.
            await txn.execute(
                "UPDATE events SET outlier = 1 WHERE room_id = ? AND stream_ordering < ?"
                " AND state_key IS NOT NULL AND event_id NOT IN"
                " (SELECT event_id FROM room_forward_extremities WHERE room_id = ?)",
                room_id, before_ordering, room_id)
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ", ".join("?" for _ in chunk)
                for table in ("event_auth", "event_to_state_groups", "redactions",
                              "event_push_actions", "event_txn_ids", "event_relations",
                              "event_search"):
                    await txn.execute(f"DELETE FROM {table} WHERE event_id IN ({marks})",
                                      *chunk)
                await txn.execute(f"DELETE FROM events WHERE event_id IN ({marks})", *chunk)
        return len(ids)

    async def stream_ordering_of(self, event_id: str) -> tuple[str, int] | None:
        row = await self.db.fetchone(
            "SELECT room_id, stream_ordering FROM events WHERE event_id = ?", event_id)
        return (str(row[0]), int(row[1])) if row else None

    async def last_ordering_before_ts(self, room_id: str, ts: int) -> int | None:
        value = await self.db.fetchval(
            "SELECT MAX(stream_ordering) FROM events WHERE room_id = ? AND origin_server_ts < ?",
            room_id, ts)
        return None if value is None else int(value) + 1

    # -- server notices -------------------------------------------------------------
    async def get_notice_room(self, user_id: str) -> str | None:
        value = await self.db.fetchval(
            "SELECT room_id FROM server_notice_rooms WHERE user_id = ?", user_id)
        return None if value is None else str(value)

    async def set_notice_room(self, user_id: str, room_id: str) -> None:
        await self.db.execute(
            "INSERT INTO server_notice_rooms (user_id, room_id) VALUES (?, ?)"
            " ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id",
            user_id, room_id)

    # -- jobs -----------------------------------------------------------------------
    async def add_job(self, job_id: str, kind: str, room_id: str) -> None:
        await self.db.execute(
            "INSERT INTO admin_jobs (job_id, kind, room_id, status, created_ts)"
            " VALUES (?, ?, ?, 'scheduled', ?)", job_id, kind, room_id, now_ms())

    async def update_job(self, job_id: str, status: str, *, error: str | None = None,
                         result: dict[str, Any] | None = None) -> None:
        await self.db.execute(
            "UPDATE admin_jobs SET status = ?, error = ?, result = ? WHERE job_id = ?",
            status, error, None if result is None else orjson.dumps(result).decode(), job_id)

    async def get_jobs(self, *, job_id: str | None = None, room_id: str | None = None,
                       kind: str) -> list[dict[str, Any]]:
        column, value = ("job_id", job_id) if job_id is not None else ("room_id", room_id)
        rows = await self.db.fetchall(
            f"SELECT job_id, room_id, status, error, result FROM admin_jobs WHERE {column} = ?"
            " AND kind = ? ORDER BY created_ts", value, kind)
        return [{"job_id": r[0], "room_id": r[1], "status": r[2], "error": r[3],
                 "result": orjson.loads(r[4]) if r[4] else None} for r in rows]

    # -- statistics -------------------------------------------------------------------
    async def media_by_user(self, since: int, until: int | None) -> list[tuple[str, int, int]]:
        """(user, media count, total bytes) of local media created in [since, until]."""
        rows = await self.db.fetchall(
            "SELECT user_id, COUNT(*), COALESCE(SUM(media_length), 0) FROM local_media"
            " WHERE created_ts >= ? AND created_ts <= ? GROUP BY user_id",
            since, until if until is not None else 2**62)
        return [(str(r[0]), int(r[1]), int(r[2])) for r in rows]

