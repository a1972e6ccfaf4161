"""End-to-end encryption keys: device keys, one-time and fallback keys, cross-signing keys
and the signatures uploaded for them.

One-time keys are handed out exactly once: a claim deletes the row it
returns and only counts it as claimed if its own DELETE removed the row, so
two concurrent claims (several processes on PostgreSQL) never get the same key.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from myelin.storage.caches import Cache, CacheRegistry, Invalidate
from myelin.storage.engines import Database

CLAIM_CANDIDATES = 5


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class E2EKeyStore:
    def __init__(self, db: Database, caches: CacheRegistry, invalidate: Invalidate) -> None:
        self.db = db
        # (user, device) -> (one-time key counts, unused fallback key types);
        # claims happen on any process, so changes travel on the caches stream.
        self._key_counts: Cache[tuple[str, str], tuple[dict[str, int], list[str]]] = \
            caches.register("e2e_key_counts", 100_000)
        self._invalidate = invalidate

    # -- device keys -------------------------------------------------------
    async def get_device_keys_json(self, user_id: str, device_id: str) -> dict[str, Any] | None:
        raw = await self.db.fetchval(
            "SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?",
            user_id, device_id)
        return None if raw is None else orjson.loads(raw)

    async def set_device_keys(self, user_id: str, device_id: str,
                              keys: dict[str, Any]) -> bool:
        """Store a device's keys; False if they were already exactly these."""
        new_json = _dumps(keys)
        async with self.db.transaction() as txn:
            old = await txn.fetchval(
                "SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?",
                user_id, device_id)
            if old is not None and orjson.loads(old) == keys:
                return False
            await txn.execute(
                "INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES (?, ?, ?)"
                " ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
                user_id, device_id, new_json)
        return True

    async def get_users_device_keys(self, user_id: str, device_ids: Iterable[str] | None,
                                    ) -> dict[str, dict[str, Any]]:
        """device_id -> stored device keys for one user (all devices if ``device_ids`` is None)."""
        if device_ids is None:
            rows = await self.db.fetchall(
                "SELECT device_id, key_json FROM e2e_device_keys WHERE user_id = ?", user_id)
        else:
            wanted = list(device_ids)
            if not wanted:
                return {}
            marks = ",".join("?" * len(wanted))
            rows = await self.db.fetchall(
                f"SELECT device_id, key_json FROM e2e_device_keys WHERE user_id = ?"
                f" AND device_id IN ({marks})", user_id, *wanted)
        return {r[0]: orjson.loads(r[1]) for r in rows}

    async def _keys_changed(self, user_id: str, device_id: str) -> None:
        await self._invalidate("e2e_key_counts", [[user_id, device_id]])

    async def key_counts_for_sync(self, user_id: str, device_id: str,
                                  ) -> tuple[dict[str, int], list[str]]:
        """One-time key counts and unused fallback key types, as /sync reports
        them on every response (cached until this device's keys change)."""
        cached = self._key_counts.get((user_id, device_id))
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        generation = self._key_counts.generation
        counts = {"signed_curve25519": 0}
        counts.update(await self.count_one_time_keys(user_id, device_id))
        result = (counts, await self.unused_fallback_key_types(user_id, device_id))
        self._key_counts.put_if(generation, (user_id, device_id), result)
        return result

    async def delete_device(self, user_id: str, device_id: str) -> None:
        async with self.db.transaction() as txn:
            for table in ("e2e_device_keys", "e2e_one_time_keys", "e2e_fallback_keys"):
                await txn.execute(f"DELETE FROM {table} WHERE user_id = ? AND device_id = ?",
                                  user_id, device_id)
            await txn.execute(
                "DELETE FROM e2e_key_signatures WHERE target_user_id = ? AND target_key_id = ?",
                user_id, device_id)
        await self._keys_changed(user_id, device_id)

    # -- one-time keys -----------------------------------------------------
    async def get_one_time_keys(self, user_id: str, device_id: str,
                                key_ids: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """(algorithm, key_id) -> key_json for those of ``key_ids`` already stored."""
        out: dict[tuple[str, str], str] = {}
        for start in range(0, len(key_ids), 100):
            chunk = key_ids[start:start + 100]
            clause = " OR ".join("(algorithm = ? AND key_id = ?)" for _ in chunk)
            args = [v for pair in chunk for v in pair]
            rows = await self.db.fetchall(
                f"SELECT algorithm, key_id, key_json FROM e2e_one_time_keys WHERE user_id = ?"
                f" AND device_id = ? AND ({clause})", user_id, device_id, *args)
            out.update({(r[0], r[1]): r[2] for r in rows})
        return out

    async def add_one_time_keys(self, user_id: str, device_id: str,
                                keys: list[tuple[str, str, dict[str, Any]]]) -> None:
        if not keys:
            return
        async with self.db.transaction() as txn:
            await txn.executemany(
                "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(user_id, device_id, alg, key_id, _dumps(key)) for alg, key_id, key in keys])
        await self._keys_changed(user_id, device_id)

    async def count_one_time_keys(self, user_id: str, device_id: str) -> dict[str, int]:
        rows = await self.db.fetchall(
            "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys WHERE user_id = ?"
            " AND device_id = ? GROUP BY algorithm", user_id, device_id)
        return {r[0]: int(r[1]) for r in rows}

    async def claim_one_time_key(self, user_id: str, device_id: str, algorithm: str,
                                 ) -> tuple[str, dict[str, Any]] | None:
        """Take one one-time key of ``algorithm`` for ever; None when there are none left."""
        while True:
            rows = await self.db.fetchall(
                "SELECT key_id, key_json FROM e2e_one_time_keys WHERE user_id = ?"
                " AND device_id = ? AND algorithm = ? ORDER BY key_id LIMIT ?",
                user_id, device_id, algorithm, CLAIM_CANDIDATES)
            if not rows:
                return None
            for key_id, key_json in rows:
                deleted = await self.db.execute(
                    "DELETE FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ?"
                    " AND algorithm = ? AND key_id = ?", user_id, device_id, algorithm, key_id)
                if deleted == 1:
                    await self._keys_changed(user_id, device_id)
                    return key_id, orjson.loads(key_json)
            # Every candidate went to a concurrent claim: look again.

    # -- fallback keys -----------------------------------------------------
    async def set_fallback_key(self, user_id: str, device_id: str, algorithm: str,
                               key_id: str, key: dict[str, Any] | str) -> None:
        """Replace the fallback key of ``algorithm``; re-uploading the same key keeps its state."""
        key_json = _dumps(key)
        async with self.db.transaction() as txn:
            row = await txn.fetchone(
                "SELECT key_id, key_json FROM e2e_fallback_keys WHERE user_id = ?"
                " AND device_id = ? AND algorithm = ?", user_id, device_id, algorithm)
            if row is not None and row[0] == key_id and orjson.loads(row[1]) == key:
                return
            await txn.execute(
                "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json,"
                " used) VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT (user_id, device_id, algorithm)"
                " DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json,"
                " used = 0", user_id, device_id, algorithm, key_id, key_json)
        await self._keys_changed(user_id, device_id)

    async def claim_fallback_key(self, user_id: str, device_id: str, algorithm: str,
                                 ) -> tuple[str, dict[str, Any]] | None:
        """The fallback key of ``algorithm``, now marked used (it stays claimable)."""
        async with self.db.transaction() as txn:
            row = await txn.fetchone(
                "SELECT key_id, key_json FROM e2e_fallback_keys WHERE user_id = ?"
                " AND device_id = ? AND algorithm = ?", user_id, device_id, algorithm)
            if row is None:
                return None
            await txn.execute(
                "UPDATE e2e_fallback_keys SET used = 1 WHERE user_id = ? AND device_id = ?"
                " AND algorithm = ?", user_id, device_id, algorithm)
        await self._keys_changed(user_id, device_id)
        return row[0], orjson.loads(row[1])

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT algorithm FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ?"
            " AND used = 0", user_id, device_id)
        return [r[0] for r in rows]

    # -- cross-signing keys ------------------------------------------------
    async def get_cross_signing_keys(self, user_id: str) -> dict[str, dict[str, Any]]:
        """key_type (master, self_signing, user_signing) -> key JSON."""
        rows = await self.db.fetchall(
            "SELECT key_type, key_json FROM e2e_cross_signing_keys WHERE user_id = ?", user_id)
        return {r[0]: orjson.loads(r[1]) for r in rows}

    async def set_cross_signing_keys(self, user_id: str,
                                     keys: dict[str, tuple[str, dict[str, Any]]]) -> None:
        """key_type -> (public key, key JSON), all in one transaction."""
        async with self.db.transaction() as txn:
            for key_type, (key_id, key) in keys.items():
                await txn.execute(
                    "INSERT INTO e2e_cross_signing_keys (user_id, key_type, key_id, key_json)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (user_id, key_type) DO UPDATE SET"
                    " key_id = excluded.key_id, key_json = excluded.key_json",
                    user_id, key_type, key_id, _dumps(key))

    # -- signatures --------------------------------------------------------
    async def add_signatures(self, rows: list[tuple[str, str, str, str, str]]) -> None:
        """(target_user_id, target_key_id, signer_user_id, signer_key_id, signature) rows."""
        if not rows:
            return
        async with self.db.transaction() as txn:
            await txn.executemany(
                "INSERT INTO e2e_key_signatures (target_user_id, target_key_id, signer_user_id,"
                " signer_key_id, signature) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)"
                " DO UPDATE SET signature = excluded.signature", rows)

    async def get_signatures(self, target_user_id: str, target_key_ids: list[str],
                             ) -> dict[str, list[tuple[str, str, str]]]:
        """target_key_id -> [(signer_user_id, signer_key_id, signature)]."""
        if not target_key_ids:
            return {}
        marks = ",".join("?" * len(target_key_ids))
        rows = await self.db.fetchall(
            f"SELECT target_key_id, signer_user_id, signer_key_id, signature"
            f" FROM e2e_key_signatures WHERE target_user_id = ? AND target_key_id IN ({marks})",
            target_user_id, *target_key_ids)
        out: dict[str, list[tuple[str, str, str]]] = {}
        for target, signer, signer_key, signature in rows:
            out.setdefault(target, []).append((signer, signer_key, signature))
        return out

    # -- who sees whose device lists ---------------------------------------
    async def users_sharing_rooms_with(self, user_id: str) -> set[str]:
        """Users joined to any room ``user_id`` is joined to, and the user."""
        rows = await self.db.fetchall(
            "SELECT DISTINCT other.user_id FROM room_memberships AS mine"
            " JOIN room_memberships AS other ON other.room_id = mine.room_id"
            " WHERE mine.user_id = ? AND mine.membership = 'join'"
            " AND other.membership = 'join'", user_id)
        return {r[0] for r in rows} | {user_id}

    async def own_departures_between(self, user_id: str, room_ids: Sequence[str],
                                     from_pos: int, to_pos: int) -> list[tuple[int, str]]:
        """(position, room id) of ``user_id``'s own non-join membership events
        in ``room_ids`` within (``from_pos``, ``to_pos``]: the rooms they left
        (or were kicked from) and may be back in."""
        if not room_ids or from_pos >= to_pos:
            return []
        out: list[tuple[int, str]] = []
        for start in range(0, len(room_ids), 200):
            chunk = list(room_ids[start:start + 200])
            marks = ",".join("?" * len(chunk))
            rows = await self.db.fetchall(
                f"SELECT stream_ordering, room_id FROM events WHERE type = 'm.room.member'"
                f" AND state_key = ? AND membership != 'join' AND stream_ordering > ?"
                f" AND stream_ordering <= ? AND room_id IN ({marks})",
                user_id, from_pos, to_pos, *chunk)
            out.extend((int(r[0]), r[1]) for r in rows)
        return out
