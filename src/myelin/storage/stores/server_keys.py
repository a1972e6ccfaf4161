"""Other servers' signing keys (``server_signing_keys``) and the signed key
responses we serve again as a notary (``server_key_responses``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from myelin.storage.engines import Database


@dataclass(frozen=True)
class StoredServerKey:
    server_name: str
    key_id: str
    verify_key: str  # unpadded base64
    # verify_keys: usable for signatures up to this; old_verify_keys: their expired_ts
    valid_until_ts: int
    old: bool
    fetched_ts: int
    from_server: str


@dataclass(frozen=True)
class StoredKeyResponse:
    valid_until_ts: int
    fetched_ts: int
    key_json: str


class ServerKeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def keys_for_server(self, server_name: str) -> list[StoredServerKey]:
        rows = await self.db.fetchall(
            "SELECT key_id, verify_key, valid_until_ts, old, fetched_ts, from_server"
            " FROM server_signing_keys WHERE server_name = ?", server_name)
        return [StoredServerKey(server_name, str(r[0]), str(r[1]), int(r[2]), bool(r[3]),
                                int(r[4]), str(r[5])) for r in rows]

    async def store_keys(self, keys: Iterable[StoredServerKey]) -> None:
        """Upsert; a key keeps the longest validity any answer gave it."""
        async with self.db.transaction() as txn:
            for key in keys:
                await txn.execute(
                    "INSERT INTO server_signing_keys (server_name, key_id, verify_key,"
                    " valid_until_ts, old, fetched_ts, from_server)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (server_name, key_id) DO UPDATE SET"
                    " verify_key = excluded.verify_key,"
                    " valid_until_ts = CASE WHEN excluded.valid_until_ts >"
                    "   server_signing_keys.valid_until_ts THEN excluded.valid_until_ts"
                    "   ELSE server_signing_keys.valid_until_ts END,"
                    " old = excluded.old, fetched_ts = excluded.fetched_ts,"
                    " from_server = excluded.from_server",
                    key.server_name, key.key_id, key.verify_key, key.valid_until_ts,
                    1 if key.old else 0, key.fetched_ts, key.from_server)

    async def store_key_response(self, server_name: str, key_ids: Iterable[str],
                                 valid_until_ts: int, fetched_ts: int, from_server: str,
                                 key_json: str) -> None:
        """Keep ``key_json`` as the latest response listing each of ``key_ids``."""
        async with self.db.transaction() as txn:
            for key_id in key_ids:
                await txn.execute(
                    "INSERT INTO server_key_responses (server_name, key_id, valid_until_ts,"
                    " fetched_ts, from_server, key_json) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (server_name, key_id) DO UPDATE SET"
                    " valid_until_ts = excluded.valid_until_ts,"
                    " fetched_ts = excluded.fetched_ts, from_server = excluded.from_server,"
                    " key_json = excluded.key_json",
                    server_name, key_id, valid_until_ts, fetched_ts, from_server, key_json)

    async def key_responses(self, server_name: str) -> dict[str, StoredKeyResponse]:
        """key id → the latest signed response of ``server_name`` listing it."""
        rows = await self.db.fetchall(
            "SELECT key_id, valid_until_ts, fetched_ts, key_json FROM server_key_responses"
            " WHERE server_name = ?", server_name)
        return {str(r[0]): StoredKeyResponse(int(r[1]), int(r[2]), str(r[3])) for r in rows}
