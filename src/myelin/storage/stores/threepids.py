"""A user's third-party identifiers (email addresses, phone numbers).

Rows are added by the admin API (and, once an email sender exists, after a
validation session); ``/account/3pid`` lists them and login resolves
``m.id.thirdparty`` identifiers through them. An address belongs to at most
one user (the primary key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from myelin.storage.engines import Database
from myelin.storage.stores.accounts import now_ms


@dataclass(frozen=True)
class Threepid:
    medium: str
    address: str
    validated_at: int
    added_at: int

    def to_json(self) -> dict[str, Any]:
        return {"medium": self.medium, "address": self.address,
                "validated_at": self.validated_at, "added_at": self.added_at}


def canonical_address(medium: str, address: str) -> str:
    """Emails compare case-insensitively (we store them lowercased); other
    media are kept as given."""
    return address.strip().lower() if medium == "email" else address.strip()


class ThreepidStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_threepid(self, user_id: str, medium: str, address: str, *,
                           validated_at: int | None = None, added_at: int | None = None,
                           ) -> bool:
        """Attach an address to ``user_id``; False if another user holds it
        (re-adding one's own address keeps it, with the new times)."""
        address = canonical_address(medium, address)
        now = now_ms()
        async with self.db.transaction() as txn:
            owner = await txn.fetchval(
                "SELECT user_id FROM user_threepids WHERE medium = ? AND address = ?",
                medium, address)
            if owner is not None and owner != user_id:
                return False
            await txn.execute(
                "INSERT INTO user_threepids (medium, address, user_id, validated_at, added_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (medium, address) DO UPDATE SET"
                " validated_at = excluded.validated_at, added_at = excluded.added_at",
                medium, address, user_id, validated_at or now, added_at or now)
        return True

    async def remove_threepid(self, user_id: str, medium: str, address: str) -> bool:
        """Detach an address from ``user_id``; False if they did not have it."""
        return await self.db.execute(
            "DELETE FROM user_threepids WHERE user_id = ? AND medium = ? AND address = ?",
            user_id, medium, canonical_address(medium, address)) > 0

    async def remove_all_threepids(self, user_id: str) -> None:
        await self.db.execute("DELETE FROM user_threepids WHERE user_id = ?", user_id)

    async def get_threepids(self, user_id: str) -> list[Threepid]:
        rows = await self.db.fetchall(
            "SELECT medium, address, validated_at, added_at FROM user_threepids"
            " WHERE user_id = ? ORDER BY added_at, medium, address", user_id)
        return [Threepid(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    async def user_by_threepid(self, medium: str, address: str) -> str | None:
        value = await self.db.fetchval(
            "SELECT user_id FROM user_threepids WHERE medium = ? AND address = ?",
            medium, canonical_address(medium, address))
        return str(value) if value is not None else None
