"""Users, devices, access tokens, profiles and saved filters."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from myelin.storage.engines import Database, Transaction
from myelin.storage.stores.search import UserDirectoryStore


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class UserRecord:
    user_id: str
    password_hash: str | None
    created_ts: int
    admin: bool
    deactivated: bool
    is_guest: bool
    locked: bool = False
    suspended: bool = False


@dataclass(frozen=True)
class TokenRecord:
    user_id: str
    device_id: str | None
    valid_until_ms: int | None
    refresh_token: str | None = None
    used: bool = False


@dataclass(frozen=True)
class DeviceRecord:
    user_id: str
    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None

    def to_json(self) -> dict[str, Any]:
        """The client API's device. Unknown fields are null rather than absent:
        the spec types them as optional strings, but matrix-nio (and other
        clients written against Synapse, which sends nulls) require the keys."""
        return {
            "device_id": self.device_id,
            "display_name": self.display_name,
            "last_seen_ts": self.last_seen_ts,
            "last_seen_ip": self.last_seen_ip,
        }


class AccountStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Each profile write updates the user's directory entry in its transaction.
        self.directory = UserDirectoryStore(db)

    # -- users -------------------------------------------------------------
    async def create_user(self, txn: Transaction, user_id: str, password_hash: str | None, *,
                          admin: bool = False, is_guest: bool = False,
                          appservice_id: str | None = None) -> bool:
        """Insert a user; False if the id is taken (case-insensitively)."""
        existing = await txn.fetchone("SELECT 1 FROM users WHERE lower(user_id) = lower(?)",
                                      user_id)
        if existing:
            return False
        await txn.execute(
            "INSERT INTO users (user_id, password_hash, created_ts, admin, is_guest,"
            " appservice_id) VALUES (?, ?, ?, ?, ?, ?)",
            user_id, password_hash, now_ms(), int(admin), int(is_guest), appservice_id,
        )
        await txn.execute(
            "INSERT INTO profiles (user_id, displayname) VALUES (?, ?)"
            " ON CONFLICT (user_id) DO NOTHING",
            user_id, user_id[1:].split(":", 1)[0],
        )
        await self.directory.write_profile(txn, user_id, user_id[1:].split(":", 1)[0], None)
        return True

    async def get_user(self, user_id: str) -> UserRecord | None:
        row = await self.db.fetchone(
            "SELECT user_id, password_hash, created_ts, admin, deactivated, is_guest, locked,"
            " suspended FROM users WHERE user_id = ?", user_id)
        if row is None:
            return None
        return UserRecord(row[0], row[1], row[2], bool(row[3]), bool(row[4]), bool(row[5]),
                          bool(row[6]), bool(row[7]))

    async def set_user_flag(self, user_id: str, flag: str, value: bool) -> None:
        """Lock/unlock or suspend/unsuspend a user."""
        assert flag in ("locked", "suspended")
        await self.db.execute(f"UPDATE users SET {flag} = ? WHERE user_id = ?",
                              int(value), user_id)

    async def upgrade_guest(self, txn: Transaction, user_id: str,
                            password_hash: str | None) -> bool:
        """Turn a guest into a full account (same user id); False if not a guest."""
        return await txn.execute(
            "UPDATE users SET is_guest = 0, password_hash = ? WHERE user_id = ? AND is_guest = 1",
            password_hash, user_id) > 0

    async def find_user_case_insensitive(self, user_id: str) -> list[str]:
        rows = await self.db.fetchall("SELECT user_id FROM users WHERE lower(user_id) = lower(?)",
                                      user_id)
        return [r[0] for r in rows]

    async def user_id_taken(self, user_id: str) -> bool:
        return bool(await self.find_user_case_insensitive(user_id))

    async def set_password_hash(self, txn: Transaction, user_id: str, password_hash: str | None,
                                ) -> None:
        await txn.execute("UPDATE users SET password_hash = ? WHERE user_id = ?",
                          password_hash, user_id)

    async def mark_deactivated(self, txn: Transaction, user_id: str) -> None:
        await txn.execute("UPDATE users SET deactivated = 1, password_hash = NULL"
                          " WHERE user_id = ?", user_id)

    # -- devices ------------------------------------------------------------
    async def upsert_device(self, txn: Transaction, user_id: str, device_id: str,
                            display_name: str | None) -> bool:
        """Create a device if missing; True if it was new."""
        row = await txn.fetchone("SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?",
                                 user_id, device_id)
        if row:
            if display_name is not None:
                await txn.execute("UPDATE devices SET display_name = ?"
                                  " WHERE user_id = ? AND device_id = ?",
                                  display_name, user_id, device_id)
            return False
        await txn.execute(
            "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts)"
            " VALUES (?, ?, ?, ?)", user_id, device_id, display_name, now_ms())
        return True

    async def get_device(self, user_id: str, device_id: str) -> DeviceRecord | None:
        row = await self.db.fetchone(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip"
            " FROM devices WHERE user_id = ? AND device_id = ?", user_id, device_id)
        return DeviceRecord(*row) if row else None

    async def get_devices(self, user_id: str) -> list[DeviceRecord]:
        rows = await self.db.fetchall(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip"
            " FROM devices WHERE user_id = ? ORDER BY device_id", user_id)
        return [DeviceRecord(*r) for r in rows]

    async def devices_last_seen(self, user_id: str,
                                ) -> list[tuple[str, int | None, str | None, str | None]]:
        """(device_id, last_seen_ts, last_seen_ip, user_agent) of each device."""
        rows = await self.db.fetchall(
            "SELECT device_id, last_seen_ts, last_seen_ip, last_seen_user_agent FROM devices"
            " WHERE user_id = ? ORDER BY device_id", user_id)
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def update_device_display_name(self, user_id: str, device_id: str,
                                         display_name: str | None) -> bool:
        return await self.db.execute(
            "UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?",
            display_name, user_id, device_id) > 0

    async def record_device_seen(self, user_id: str, device_id: str, ip: str,
                                 user_agent: str | None) -> None:
        await self.db.execute(
            "UPDATE devices SET last_seen_ts = ?, last_seen_ip = ?, last_seen_user_agent = ?"
            " WHERE user_id = ? AND device_id = ?",
            now_ms(), ip, user_agent, user_id, device_id)

    async def delete_devices(self, txn: Transaction, user_id: str, device_ids: list[str],
                             ) -> list[str]:
        """Delete devices and their tokens; returns the tokens that were removed."""
        tokens: list[str] = []
        for device_id in device_ids:
            rows = await txn.fetchall(
                "SELECT token FROM access_tokens WHERE user_id = ? AND device_id = ?",
                user_id, device_id)
            tokens.extend(r[0] for r in rows)
            await txn.execute("DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?",
                              user_id, device_id)
            await txn.execute("DELETE FROM refresh_tokens WHERE user_id = ? AND device_id = ?",
                              user_id, device_id)
            await txn.execute("DELETE FROM devices WHERE user_id = ? AND device_id = ?",
                              user_id, device_id)
        return tokens

    # -- access tokens -------------------------------------------------------
    async def add_access_token(self, txn: Transaction, token: str, user_id: str,
                               device_id: str | None, valid_until_ms: int | None,
                               refresh_token: str | None = None) -> None:
        await txn.execute(
            "INSERT INTO access_tokens (token, user_id, device_id, created_ts, valid_until_ms,"
            " refresh_token) VALUES (?, ?, ?, ?, ?, ?)",
            token, user_id, device_id, now_ms(), valid_until_ms, refresh_token)

    async def get_token(self, token: str) -> TokenRecord | None:
        row = await self.db.fetchone(
            "SELECT user_id, device_id, valid_until_ms, refresh_token, used FROM access_tokens"
            " WHERE token = ?", token)
        return TokenRecord(row[0], row[1], row[2], row[3], bool(row[4])) if row else None

    # -- refresh tokens ------------------------------------------------------
    async def add_refresh_token(self, txn: Transaction, token: str, user_id: str,
                                device_id: str, prev_token: str | None) -> None:
        await txn.execute(
            "INSERT INTO refresh_tokens (token, user_id, device_id, prev_token, created_ts)"
            " VALUES (?, ?, ?, ?, ?)", token, user_id, device_id, prev_token, now_ms())

    async def get_refresh_token(self, txn: Transaction, token: str,
                                ) -> tuple[str, str, str | None] | None:
        """(user_id, device_id, prev_token) of a live refresh token."""
        row = await txn.fetchone(
            "SELECT user_id, device_id, prev_token FROM refresh_tokens WHERE token = ?", token)
        return (row[0], row[1], row[2]) if row else None

    async def delete_refresh_token(self, txn: Transaction, token: str) -> None:
        await txn.execute("DELETE FROM refresh_tokens WHERE token = ?", token)

    async def access_tokens_of_refresh(self, txn: Transaction, refresh_token: str) -> list[str]:
        rows = await txn.fetchall("SELECT token FROM access_tokens WHERE refresh_token = ?",
                                  refresh_token)
        return [r[0] for r in rows]

    async def mark_access_token_used(self, token: str, refresh_token: str) -> None:
        """The first use of a refreshed pair revokes the refresh token it replaced."""
        async with self.db.transaction() as txn:
            await txn.execute("UPDATE access_tokens SET used = 1 WHERE token = ?", token)
            prev = await txn.fetchval("SELECT prev_token FROM refresh_tokens WHERE token = ?",
                                      refresh_token)
            if prev is not None:
                await txn.execute("DELETE FROM refresh_tokens WHERE token = ?", prev)
                await txn.execute("UPDATE refresh_tokens SET prev_token = NULL WHERE token = ?",
                                  refresh_token)

    async def delete_token(self, txn: Transaction, token: str) -> None:
        await txn.execute("DELETE FROM access_tokens WHERE token = ?", token)

    async def tokens_of_user(self, txn: Transaction, user_id: str,
                             except_token: str | None = None) -> list[tuple[str, str | None]]:
        rows = await txn.fetchall("SELECT token, device_id FROM access_tokens WHERE user_id = ?",
                                  user_id)
        return [(r[0], r[1]) for r in rows if r[0] != except_token]

    # -- profiles ------------------------------------------------------------
    async def get_profile(self, user_id: str) -> tuple[str | None, str | None] | None:
        row = await self.db.fetchone(
            "SELECT displayname, avatar_url FROM profiles WHERE user_id = ?", user_id)
        return (row[0], row[1]) if row else None

    async def set_profile_field(self, user_id: str, field: str, value: str | None) -> None:
        assert field in ("displayname", "avatar_url")
        async with self.db.transaction() as txn:
            # The profile row stays locked until commit, so concurrent changes
            # of one profile write the directory in the order they wrote it.
            await txn.execute(
                f"INSERT INTO profiles (user_id, {field}) VALUES (?, ?)"
                f" ON CONFLICT (user_id) DO UPDATE SET {field} = excluded.{field}",
                user_id, value)
            row = await txn.fetchone(
                "SELECT displayname, avatar_url FROM profiles WHERE user_id = ?", user_id)
            assert row is not None
            await self.directory.write_profile(txn, user_id, row[0], row[1])

    async def get_custom_profile_fields(self, user_id: str) -> dict[str, Any]:
        rows = await self.db.fetchall(
            "SELECT field, value_json FROM profile_fields WHERE user_id = ?", user_id)
        return {r[0]: orjson.loads(r[1]) for r in rows}

    async def set_custom_profile_field(self, user_id: str, field: str, value: Any,
                                       *, delete: bool = False) -> None:
        if delete:
            await self.db.execute(
                "DELETE FROM profile_fields WHERE user_id = ? AND field = ?", user_id, field)
            return
        await self.db.execute(
            "INSERT INTO profile_fields (user_id, field, value_json) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id, field) DO UPDATE SET value_json = excluded.value_json",
            user_id, field, orjson.dumps(value).decode())

    # -- filters -------------------------------------------------------------
    async def add_filter(self, user_id: str, filter_json: dict[str, Any]) -> int:
        async with self.db.transaction() as txn:
            current = await txn.fetchval(
                "SELECT MAX(filter_id) FROM user_filters WHERE user_id = ?", user_id)
            filter_id = 0 if current is None else int(current) + 1
            await txn.execute(
                "INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES (?, ?, ?)",
                user_id, filter_id, orjson.dumps(filter_json).decode())
        return filter_id

    async def get_filter(self, user_id: str, filter_id: int) -> dict[str, Any] | None:
        raw = await self.db.fetchval(
            "SELECT filter_json FROM user_filters WHERE user_id = ? AND filter_id = ?",
            user_id, filter_id)
        return orjson.loads(raw) if raw is not None else None

    # -- user-interactive auth sessions -------------------------------------
    async def create_uia_session(self, session_id: str, uri: str, method: str,
                                 params: dict[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO ui_auth_sessions (session_id, created_ts, uri, method, completed, params)"
            " VALUES (?, ?, ?, ?, '[]', ?)",
            session_id, now_ms(), uri, method, orjson.dumps(params).decode())

    async def get_uia_session(self, session_id: str,
                              ) -> tuple[str, str, list[str], dict[str, Any]] | None:
        row = await self.db.fetchone(
            "SELECT uri, method, completed, params FROM ui_auth_sessions WHERE session_id = ?",
            session_id)
        if row is None:
            return None
        return row[0], row[1], orjson.loads(row[2]), orjson.loads(row[3])

    async def mark_uia_stage_done(self, session_id: str, completed: list[str]) -> None:
        await self.db.execute("UPDATE ui_auth_sessions SET completed = ? WHERE session_id = ?",
                              orjson.dumps(completed).decode(), session_id)

    async def update_uia_session(self, session_id: str, completed: list[str],
                                 params: dict[str, Any]) -> None:
        await self.db.execute(
            "UPDATE ui_auth_sessions SET completed = ?, params = ? WHERE session_id = ?",
            orjson.dumps(completed).decode(), orjson.dumps(params).decode(), session_id)

    async def delete_old_uia_sessions(self, older_than_ms: int) -> None:
        await self.db.execute("DELETE FROM ui_auth_sessions WHERE created_ts < ?",
                              older_than_ms)

    async def delete_uia_session(self, session_id: str) -> None:
        await self.db.execute("DELETE FROM ui_auth_sessions WHERE session_id = ?", session_id)
