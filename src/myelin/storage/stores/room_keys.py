"""Server-side key backups: a user's backup versions and the session keys in them.

Any process may serve ``/room_keys`` (the database is shared), so the rules
are kept by the database, not by a process-local lock:

- A key write first takes the version's row lock (a no-op UPDATE), so it
  serialises with deleting that version and with creating the next one (which
  locks the then-current version the same way). A write therefore never lands
  in a version that was deleted or superseded before it committed.
- The spec's replacement rule ("keep the better key") is the ``WHERE`` of the
  upsert, so two concurrent uploads of one session keep the better key
  whatever their order, and the row count tells whether anything changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from myelin.storage.engines import Database
from myelin.storage.engines.base import Transaction

# The upsert keeps the stored key unless the new one is better: verified
# beats unverified, then a lower first_message_index, then a lower forwarded_count.
_UPSERT_KEY = (
    "INSERT INTO e2e_room_keys (user_id, version, room_id, session_id, first_message_index,"
    " forwarded_count, is_verified, session_data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET"
    " first_message_index = excluded.first_message_index,"
    " forwarded_count = excluded.forwarded_count, is_verified = excluded.is_verified,"
    " session_data = excluded.session_data"
    " WHERE excluded.is_verified > e2e_room_keys.is_verified"
    " OR (excluded.is_verified = e2e_room_keys.is_verified AND ("
    "  excluded.first_message_index < e2e_room_keys.first_message_index"
    "  OR (excluded.first_message_index = e2e_room_keys.first_message_index"
    "   AND excluded.forwarded_count < e2e_room_keys.forwarded_count)))"
)

_CREATE_ATTEMPTS = 10


@dataclass(frozen=True)
class BackupVersion:
    version: int
    algorithm: str
    auth_data: Any  # an object for the spec's algorithm; opaque to us
    etag: int


@dataclass(frozen=True)
class RoomKey:
    """One backed-up session key (``KeyBackupData`` in the spec)."""

    first_message_index: int
    forwarded_count: int
    is_verified: bool
    session_data: Any  # the client's encrypted data, an object for the spec's algorithm

    def to_json(self) -> dict[str, Any]:
        return {"first_message_index": self.first_message_index,
                "forwarded_count": self.forwarded_count, "is_verified": self.is_verified,
                "session_data": self.session_data}


class WrongVersion(Exception):
    """A write to a version that is not the current one (``current`` may be None)."""

    def __init__(self, current: int | None) -> None:
        super().__init__(current)
        self.current = current


class UnknownVersion(Exception):
    """The version does not exist (or was deleted)."""


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _key(row: Sequence[Any]) -> RoomKey:
    return RoomKey(first_message_index=int(row[0]), forwarded_count=int(row[1]),
                   is_verified=bool(row[2]), session_data=orjson.loads(row[3]))


class RoomKeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- versions ----------------------------------------------------------
    async def current_version(self, user_id: str) -> int | None:
        value = await self.db.fetchval(
            "SELECT MAX(version) FROM e2e_room_keys_versions WHERE user_id = ? AND deleted = 0",
            user_id)
        return None if value is None else int(value)

    async def get_version(self, user_id: str, version: int | None) -> BackupVersion | None:
        """A live version (the current one if ``version`` is None)."""
        if version is None:
            version = await self.current_version(user_id)
            if version is None:
                return None
        row = await self.db.fetchone(
            "SELECT version, algorithm, auth_data, etag FROM e2e_room_keys_versions"
            " WHERE user_id = ? AND version = ? AND deleted = 0", user_id, version)
        if row is None:
            return None
        return BackupVersion(int(row[0]), row[1], orjson.loads(row[2]), int(row[3]))

    async def create_version(self, user_id: str, algorithm: str,
                             auth_data: Any) -> int:
        """A new version numbered above every version the user ever had."""
        for _ in range(_CREATE_ATTEMPTS):
            async with self.db.transaction() as txn:
                current = await txn.fetchval(
                    "SELECT MAX(version) FROM e2e_room_keys_versions"
                    " WHERE user_id = ? AND deleted = 0", user_id)
                if current is not None:
                    await self._lock_version(txn, user_id, int(current))
                highest = await txn.fetchval(
                    "SELECT MAX(version) FROM e2e_room_keys_versions WHERE user_id = ?", user_id)
                version = int(highest or 0) + 1
                # Two processes creating at once pick the same number: one wins, one retries.
                inserted = await txn.execute(
                    "INSERT INTO e2e_room_keys_versions (user_id, version, algorithm, auth_data,"
                    " etag, deleted) VALUES (?, ?, ?, ?, 0, 0) ON CONFLICT DO NOTHING",
                    user_id, version, algorithm, _dumps(auth_data))
                if inserted:
                    return version
        raise RuntimeError(f"could not allocate a key backup version for {user_id}")

    async def update_auth_data(self, user_id: str, version: int, auth_data: Any) -> bool:
        changed = await self.db.execute(
            "UPDATE e2e_room_keys_versions SET auth_data = ? WHERE user_id = ? AND version = ?"
            " AND deleted = 0", _dumps(auth_data), user_id, version)
        return changed > 0

    async def delete_version(self, user_id: str, version: int) -> bool | None:
        """Delete a version and its keys: True if deleted now, False if it had
        been deleted before, None if it never existed."""
        async with self.db.transaction() as txn:
            changed = await txn.execute(
                "UPDATE e2e_room_keys_versions SET deleted = 1 WHERE user_id = ? AND version = ?"
                " AND deleted = 0", user_id, version)
            if not changed:
                existed = await txn.fetchval(
                    "SELECT 1 FROM e2e_room_keys_versions WHERE user_id = ? AND version = ?",
                    user_id, version)
                return False if existed else None
            await txn.execute("DELETE FROM e2e_room_keys WHERE user_id = ? AND version = ?",
                              user_id, version)
            # Keep only the row (its number stays taken), not the client's data.
            await txn.execute(
                "UPDATE e2e_room_keys_versions SET auth_data = '{}' WHERE user_id = ?"
                " AND version = ?", user_id, version)
        return True

    @staticmethod
    async def _lock_version(txn: Transaction, user_id: str, version: int) -> bool:
        """Take the version's row lock (PostgreSQL; SQLite has one writer anyway)."""
        changed = await txn.execute(
            "UPDATE e2e_room_keys_versions SET etag = etag WHERE user_id = ? AND version = ?"
            " AND deleted = 0", user_id, version)
        return changed > 0

    async def count_and_etag(self, user_id: str, version: int) -> tuple[int, int]:
        row = await self.db.fetchone(
            "SELECT (SELECT COUNT(*) FROM e2e_room_keys WHERE user_id = ? AND version = ?),"
            " etag FROM e2e_room_keys_versions WHERE user_id = ? AND version = ?",
            user_id, version, user_id, version)
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    # -- keys --------------------------------------------------------------
    async def upload_keys(self, user_id: str, version: int,
                          keys: list[tuple[str, str, RoomKey]]) -> tuple[int, int]:
        """Store keys into ``version``, which must be the current version;
        returns (count, etag) after the write."""
        async with self.db.transaction() as txn:
            if not await self._lock_version(txn, user_id, version):
                raise WrongVersion(await self._current(txn, user_id))
            current = await self._current(txn, user_id)
            if current != version:
                raise WrongVersion(current)
            changed = 0
            for room_id, session_id, key in keys:
                changed += await txn.execute(
                    _UPSERT_KEY, user_id, version, room_id, session_id, key.first_message_index,
                    key.forwarded_count, int(key.is_verified), _dumps(key.session_data))
            if changed:
                await txn.execute(
                    "UPDATE e2e_room_keys_versions SET etag = etag + 1 WHERE user_id = ?"
                    " AND version = ?", user_id, version)
            return await self._count_and_etag(txn, user_id, version)

    async def delete_keys(self, user_id: str, version: int, room_id: str | None = None,
                          session_id: str | None = None) -> tuple[int, int]:
        """Delete a version's keys (of one room, or one session); (count, etag) after."""
        async with self.db.transaction() as txn:
            if not await self._lock_version(txn, user_id, version):
                raise UnknownVersion()
            sql = "DELETE FROM e2e_room_keys WHERE user_id = ? AND version = ?"
            args: list[Any] = [user_id, version]
            if room_id is not None:
                sql += " AND room_id = ?"
                args.append(room_id)
            if session_id is not None:
                sql += " AND session_id = ?"
                args.append(session_id)
            if await txn.execute(sql, *args):
                await txn.execute(
                    "UPDATE e2e_room_keys_versions SET etag = etag + 1 WHERE user_id = ?"
                    " AND version = ?", user_id, version)
            return await self._count_and_etag(txn, user_id, version)

    async def get_keys(self, user_id: str, version: int, room_id: str | None = None,
                       session_id: str | None = None,
                       ) -> dict[str, dict[str, RoomKey]]:
        """room_id -> session_id -> key, for a version (one room, or one session)."""
        sql = ("SELECT room_id, session_id, first_message_index, forwarded_count, is_verified,"
               " session_data FROM e2e_room_keys WHERE user_id = ? AND version = ?")
        args: list[Any] = [user_id, version]
        if room_id is not None:
            sql += " AND room_id = ?"
            args.append(room_id)
        if session_id is not None:
            sql += " AND session_id = ?"
            args.append(session_id)
        out: dict[str, dict[str, RoomKey]] = {}
        for row in await self.db.fetchall(sql, *args):
            out.setdefault(row[0], {})[row[1]] = _key(row[2:])
        return out

    @staticmethod
    async def _current(txn: Transaction, user_id: str) -> int | None:
        value = await txn.fetchval(
            "SELECT MAX(version) FROM e2e_room_keys_versions WHERE user_id = ? AND deleted = 0",
            user_id)
        return None if value is None else int(value)

    @staticmethod
    async def _count_and_etag(txn: Transaction, user_id: str, version: int) -> tuple[int, int]:
        row = await txn.fetchone(
            "SELECT (SELECT COUNT(*) FROM e2e_room_keys WHERE user_id = ? AND version = ?),"
            " etag FROM e2e_room_keys_versions WHERE user_id = ? AND version = ?",
            user_id, version, user_id, version)
        return (0, 0) if row is None else (int(row[0]), int(row[1]))
