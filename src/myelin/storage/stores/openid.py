"""OpenID tokens: what ``/user/{userId}/openid/request_token`` hands out and
the federation's ``/openid/userinfo`` checks, until they expire."""

from __future__ import annotations

from myelin.storage.engines import Database


class OpenIdTokenStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_token(self, token: str, user_id: str, valid_until_ms: int) -> None:
        async with self.db.transaction() as txn:
            # Expired tokens are of no use to anyone: drop them as we go.
            await txn.execute("DELETE FROM open_id_tokens WHERE ts_valid_until_ms < ?",
                              valid_until_ms - 24 * 3600 * 1000)
            await txn.execute(
                "INSERT INTO open_id_tokens (token, user_id, ts_valid_until_ms) VALUES (?, ?, ?)",
                token, user_id, valid_until_ms)

    async def user_for_token(self, token: str, now_ms: int) -> str | None:
        value = await self.db.fetchval(
            "SELECT user_id FROM open_id_tokens WHERE token = ? AND ts_valid_until_ms > ?",
            token, now_ms)
        return None if value is None else str(value)
