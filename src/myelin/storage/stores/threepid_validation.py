"""Third-party identifier validation sessions (``requestToken`` → emailed link).

One session per (client_secret, medium, address): asking again with a
higher ``send_attempt`` sends a new token on the same session; the same or
a lower one answers the same session without sending anything (the spec's
idempotency).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from myelin.storage.engines import Database


@dataclass(frozen=True)
class ValidationSession:
    session_id: str
    medium: str
    address: str
    client_secret: str
    purpose: str
    token: str
    send_attempt: int
    token_expires_ts: int
    validated_ts: int | None


_COLUMNS = ("session_id, medium, address, client_secret, purpose, token, send_attempt,"
            " token_expires_ts, validated_ts")


def _session(row: Sequence[Any]) -> ValidationSession:
    return ValidationSession(row[0], row[1], row[2], row[3], row[4], row[5], int(row[6]),
                             int(row[7]), None if row[8] is None else int(row[8]))


class ThreepidValidationStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_by_secret(self, client_secret: str, medium: str,
                            address: str) -> ValidationSession | None:
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM threepid_validation_sessions"
            " WHERE client_secret = ? AND medium = ? AND address = ?",
            client_secret, medium, address)
        return _session(row) if row else None

    async def get(self, session_id: str) -> ValidationSession | None:
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM threepid_validation_sessions WHERE session_id = ?",
            session_id)
        return _session(row) if row else None

    async def start(self, session: ValidationSession, now_ms: int) -> str:
        """Create the session, or give an existing one (same secret and
        address) a new token; returns its id."""
        async with self.db.transaction() as txn:
            existing = await txn.fetchval(
                "SELECT session_id FROM threepid_validation_sessions"
                " WHERE client_secret = ? AND medium = ? AND address = ?",
                session.client_secret, session.medium, session.address)
            if existing is not None:
                await txn.execute(
                    "UPDATE threepid_validation_sessions SET token = ?, send_attempt = ?,"
                    " token_expires_ts = ?, purpose = ? WHERE session_id = ?",
                    session.token, session.send_attempt, session.token_expires_ts,
                    session.purpose, existing)
                return str(existing)
            await txn.execute(
                f"INSERT INTO threepid_validation_sessions ({_COLUMNS}, created_ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                session.session_id, session.medium, session.address, session.client_secret,
                session.purpose, session.token, session.send_attempt,
                session.token_expires_ts, None, now_ms)
            return session.session_id

    async def mark_validated(self, session_id: str, now_ms: int) -> None:
        await self.db.execute(
            "UPDATE threepid_validation_sessions SET validated_ts = ?"
            " WHERE session_id = ? AND validated_ts IS NULL", now_ms, session_id)

    async def delete(self, session_id: str) -> None:
        """A session whose address was used up (added, or a password reset)."""
        await self.db.execute("DELETE FROM threepid_validation_sessions WHERE session_id = ?",
                              session_id)
