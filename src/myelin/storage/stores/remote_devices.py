"""Device lists and cross-signing keys of users on other servers, as their
servers told us (``/user/devices`` snapshots and ``m.device_list_update`` /
``m.signing_key_update`` EDUs). Only users we share a room with are kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from myelin.storage.engines import Database


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


@dataclass(frozen=True)
class RemoteDevice:
    device_id: str
    display_name: str | None
    keys: dict[str, Any] | None


@dataclass(frozen=True)
class RemoteDeviceList:
    user_id: str
    stream_id: int
    resync_needed: bool
    devices: list[RemoteDevice]
    cross_signing: dict[str, dict[str, Any]]  # master / self_signing -> key JSON


class RemoteDeviceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_list_position(self, user_id: str) -> tuple[int, bool] | None:
        """(stream_id, resync_needed) of a cached list, None if none is cached."""
        row = await self.db.fetchone(
            "SELECT stream_id, resync_needed FROM remote_device_lists WHERE user_id = ?",
            user_id)
        return None if row is None else (int(row[0]), bool(row[1]))

    async def get_list(self, user_id: str) -> RemoteDeviceList | None:
        position = await self.get_list_position(user_id)
        if position is None:
            return None
        rows = await self.db.fetchall(
            "SELECT device_id, display_name, keys_json FROM remote_devices WHERE user_id = ?"
            " ORDER BY device_id", user_id)
        devices = [RemoteDevice(r[0], r[1], orjson.loads(r[2]) if r[2] else None) for r in rows]
        return RemoteDeviceList(user_id, position[0], position[1], devices,
                                await self.get_cross_signing(user_id))

    async def get_cross_signing(self, user_id: str) -> dict[str, dict[str, Any]]:
        rows = await self.db.fetchall(
            "SELECT key_type, key_json FROM remote_cross_signing_keys WHERE user_id = ?",
            user_id)
        return {r[0]: orjson.loads(r[1]) for r in rows}

    async def replace_list(self, user_id: str, stream_id: int, devices: list[RemoteDevice],
                           cross_signing: dict[str, dict[str, Any]], now: int) -> None:
        """A full snapshot (from ``/user/devices``) replaces whatever was cached."""
        async with self.db.transaction("remote_device_list_replace") as txn:
            await txn.execute("DELETE FROM remote_devices WHERE user_id = ?", user_id)
            await txn.executemany(
                "INSERT INTO remote_devices (user_id, device_id, display_name, keys_json)"
                " VALUES (?, ?, ?, ?)",
                [(user_id, d.device_id, d.display_name,
                  _dumps(d.keys) if d.keys is not None else None) for d in devices])
            await txn.execute("DELETE FROM remote_cross_signing_keys WHERE user_id = ?",
                              user_id)
            await txn.executemany(
                "INSERT INTO remote_cross_signing_keys (user_id, key_type, key_json)"
                " VALUES (?, ?, ?)",
                [(user_id, t, _dumps(k)) for t, k in cross_signing.items()])
            await txn.execute(
                "INSERT INTO remote_device_lists (user_id, stream_id, resync_needed, updated_ts)"
                " VALUES (?, ?, 0, ?) ON CONFLICT (user_id) DO UPDATE SET"
                " stream_id = excluded.stream_id, resync_needed = 0,"
                " updated_ts = excluded.updated_ts", user_id, stream_id, now)

    async def apply_update(self, user_id: str, stream_id: int, device_id: str,
                           device: RemoteDevice | None, now: int) -> bool:
        """One device added, changed (``device``) or deleted (None), if the
        cached list is still at a position before ``stream_id``; False if it
        was not (another process applied it, or a resync overtook it)."""
        async with self.db.transaction("remote_device_list_update") as txn:
            updated = await txn.execute(
                "UPDATE remote_device_lists SET stream_id = ?, updated_ts = ?"
                " WHERE user_id = ? AND stream_id < ? AND resync_needed = 0",
                stream_id, now, user_id, stream_id)
            if not updated:
                return False
            await txn.execute("DELETE FROM remote_devices WHERE user_id = ? AND device_id = ?",
                              user_id, device_id)
            if device is not None:
                await txn.execute(
                    "INSERT INTO remote_devices (user_id, device_id, display_name, keys_json)"
                    " VALUES (?, ?, ?, ?)", user_id, device_id, device.display_name,
                    _dumps(device.keys) if device.keys is not None else None)
        return True

    async def mark_resync_needed(self, user_id: str, now: int) -> None:
        await self.db.execute(
            "INSERT INTO remote_device_lists (user_id, stream_id, resync_needed, updated_ts)"
            " VALUES (?, 0, 1, ?) ON CONFLICT (user_id) DO UPDATE SET resync_needed = 1",
            user_id, now)

    async def set_cross_signing_keys(self, user_id: str,
                                     keys: dict[str, dict[str, Any]]) -> None:
        async with self.db.transaction("remote_cross_signing_set") as txn:
            for key_type, key in keys.items():
                await txn.execute(
                    "INSERT INTO remote_cross_signing_keys (user_id, key_type, key_json)"
                    " VALUES (?, ?, ?) ON CONFLICT (user_id, key_type) DO UPDATE SET"
                    " key_json = excluded.key_json", user_id, key_type, _dumps(key))

    async def forget(self, user_ids: list[str]) -> None:
        """Drop the cached lists of users we no longer share a room with."""
        if not user_ids:
            return
        marks = ",".join("?" * len(user_ids))
        async with self.db.transaction("remote_device_list_forget") as txn:
            for table in ("remote_devices", "remote_cross_signing_keys",
                          "remote_device_lists"):
                await txn.execute(f"DELETE FROM {table} WHERE user_id IN ({marks})",
                                  *user_ids)

    async def cached_users(self, user_ids: list[str]) -> set[str]:
        if not user_ids:
            return set()
        marks = ",".join("?" * len(user_ids))
        rows = await self.db.fetchall(
            f"SELECT user_id FROM remote_device_lists WHERE user_id IN ({marks})", *user_ids)
        return {r[0] for r in rows}

    async def shares_room_with_local_user(self, user_id: str, server_name: str) -> bool:
        """Is ``user_id`` joined to a room that one of our users is joined to?"""
        rows = await self.db.fetchall(
            "SELECT DISTINCT other.user_id FROM room_memberships AS theirs"
            " JOIN room_memberships AS other ON other.room_id = theirs.room_id"
            " WHERE theirs.user_id = ? AND theirs.membership = 'join'"
            " AND other.membership = 'join'", user_id)
        suffix = ":" + server_name
        return any(r[0].endswith(suffix) for r in rows)
