"""Registration tokens: who may register when ``registration_requires_token`` is on.

A token is valid while it has not expired and ``pending + completed`` is
below ``uses_allowed`` (NULL: unlimited). A UIA session that passes the
``m.login.registration_token`` stage holds one pending use; registering turns
it into a completed one. The methods here are also what Synapse's admin API
(``/_synapse/admin/v1/registration_tokens``) needs: list, get, create,
update, delete.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Any

from myelin.storage.engines import Database
from myelin.storage.stores.accounts import now_ms

TOKEN_ALPHABET = string.ascii_letters + string.digits + "._~-"


@dataclass(frozen=True)
class RegistrationToken:
    token: str
    uses_allowed: int | None
    pending: int
    completed: int
    expiry_time: int | None

    def valid_at(self, now: int) -> bool:
        if self.expiry_time is not None and self.expiry_time < now:
            return False
        return self.uses_allowed is None or self.pending + self.completed < self.uses_allowed

    def to_json(self) -> dict[str, Any]:
        return {"token": self.token, "uses_allowed": self.uses_allowed,
                "pending": self.pending, "completed": self.completed,
                "expiry_time": self.expiry_time}


_COLUMNS = "token, uses_allowed, pending, completed, expiry_time"


def _row(r: Any) -> RegistrationToken:
    return RegistrationToken(r[0], None if r[1] is None else int(r[1]), int(r[2]), int(r[3]),
                             None if r[4] is None else int(r[4]))


class RegistrationTokenStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_token(self, token: str) -> RegistrationToken | None:
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM registration_tokens WHERE token = ?", token)
        return _row(row) if row else None

    async def list_tokens(self, valid: bool | None = None) -> list[RegistrationToken]:
        """Every token; with ``valid``, only the (in)valid ones now."""
        rows = await self.db.fetchall(f"SELECT {_COLUMNS} FROM registration_tokens ORDER BY token")
        tokens = [_row(r) for r in rows]
        if valid is None:
            return tokens
        now = now_ms()
        return [t for t in tokens if t.valid_at(now) == valid]

    async def is_valid(self, token: str) -> bool:
        record = await self.get_token(token)
        return record is not None and record.valid_at(now_ms())

    async def create_token(self, token: str | None = None, *, length: int = 16,
                           uses_allowed: int | None = None, expiry_time: int | None = None,
                           ) -> RegistrationToken | None:
        """Create a token (random of ``length`` when not given); None if it exists."""
        async with self.db.transaction() as txn:
            for _ in range(5):
                candidate = token or "".join(secrets.choice(TOKEN_ALPHABET)
                                             for _ in range(length))
                exists = await txn.fetchval(
                    "SELECT 1 FROM registration_tokens WHERE token = ?", candidate)
                if exists:
                    if token is not None:
                        return None
                    continue
                await txn.execute(
                    "INSERT INTO registration_tokens (token, uses_allowed, pending, completed,"
                    " expiry_time) VALUES (?, ?, 0, 0, ?)", candidate, uses_allowed, expiry_time)
                return RegistrationToken(candidate, uses_allowed, 0, 0, expiry_time)
        return None

    async def update_token(self, token: str, **changes: Any) -> RegistrationToken | None:
        """Set ``uses_allowed`` and/or ``expiry_time`` (None clears); None if no such token."""
        allowed = {k: v for k, v in changes.items() if k in ("uses_allowed", "expiry_time")}
        async with self.db.transaction() as txn:
            for column, value in allowed.items():
                await txn.execute(f"UPDATE registration_tokens SET {column} = ? WHERE token = ?",
                                  value, token)
            row = await txn.fetchone(
                f"SELECT {_COLUMNS} FROM registration_tokens WHERE token = ?", token)
        return _row(row) if row else None

    async def delete_token(self, token: str) -> bool:
        return await self.db.execute("DELETE FROM registration_tokens WHERE token = ?",
                                     token) > 0

    async def take_pending_use(self, token: str) -> bool:
        """Reserve one use of a valid token for a registration in progress (one
        conditional UPDATE, so two sessions cannot both take the last use)."""
        return await self.db.execute(
            "UPDATE registration_tokens SET pending = pending + 1 WHERE token = ?"
            " AND (expiry_time IS NULL OR expiry_time >= ?)"
            " AND (uses_allowed IS NULL OR pending + completed < uses_allowed)",
            token, now_ms()) > 0

    async def complete_use(self, token: str) -> None:
        """The registration that held a pending use of ``token`` succeeded."""
        await self.db.execute(
            "UPDATE registration_tokens SET pending = CASE WHEN pending > 0 THEN pending - 1"
            " ELSE 0 END, completed = completed + 1 WHERE token = ?", token)
