"""Local media rows (uploader, times, type, name, quarantine), their
thumbnails, and cached URL previews. The files themselves are on disk
(`myelin.media.storage`); every process of a fleet shares both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from myelin.storage.engines import Database

_COLUMNS = ("media_id, user_id, created_ts, upload_ts, unused_expires_at, media_type,"
            " media_length, upload_name, sha256, authenticated, last_access_ts,"
            " quarantined_by, safe_from_quarantine")


@dataclass(frozen=True)
class LocalMedia:
    media_id: str
    user_id: str
    created_ts: int
    upload_ts: int | None
    unused_expires_at: int | None
    media_type: str | None
    media_length: int | None
    upload_name: str | None
    sha256: str | None
    authenticated: bool
    last_access_ts: int | None
    quarantined_by: str | None
    safe_from_quarantine: bool

    @property
    def uploaded(self) -> bool:
        return self.upload_ts is not None

    def admin_json(self) -> dict[str, Any]:
        """The shape of Synapse's admin API for one local media."""
        return {"media_id": self.media_id, "media_type": self.media_type,
                "media_length": self.media_length, "upload_name": self.upload_name,
                "created_ts": self.created_ts, "last_access_ts": self.last_access_ts,
                "quarantined_by": self.quarantined_by,
                "safe_from_quarantine": self.safe_from_quarantine}


@dataclass(frozen=True)
class Thumbnail:
    media_id: str
    width: int            # the size asked for (or the configured size)
    height: int
    method: str
    animated: bool
    thumbnail_type: str
    thumbnail_width: int  # the size of the file
    thumbnail_height: int
    length: int


def _media(row: Any) -> LocalMedia:
    return LocalMedia(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8],
                      bool(row[9]), row[10], row[11], bool(row[12]))


class MediaStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- local media --------------------------------------------------------
    async def create_pending(self, media_id: str, user_id: str, now: int, expires_at: int,
                             authenticated: bool) -> None:
        await self.db.execute(
            "INSERT INTO local_media (media_id, user_id, created_ts, unused_expires_at,"
            " authenticated) VALUES (?, ?, ?, ?, ?)",
            media_id, user_id, now, expires_at, int(authenticated))

    async def count_pending(self, user_id: str, now: int) -> int:
        return int(await self.db.fetchval(
            "SELECT COUNT(*) FROM local_media WHERE user_id = ? AND upload_ts IS NULL"
            " AND unused_expires_at > ?", user_id, now))

    async def insert_uploaded(self, media: LocalMedia) -> None:
        await self.db.execute(
            f"INSERT INTO local_media ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            media.media_id, media.user_id, media.created_ts, media.upload_ts,
            media.unused_expires_at, media.media_type, media.media_length, media.upload_name,
            media.sha256, int(media.authenticated), media.last_access_ts, media.quarantined_by,
            int(media.safe_from_quarantine))

    async def complete_pending(self, media_id: str, user_id: str, now: int, media_type: str,
                               length: int, upload_name: str | None, sha256: str) -> bool:
        """Fill in a pending media; False if it was uploaded (or expired) meanwhile."""
        changed = await self.db.execute(
            "UPDATE local_media SET upload_ts = ?, media_type = ?, media_length = ?,"
            " upload_name = ?, sha256 = ?, last_access_ts = ?"
            " WHERE media_id = ? AND user_id = ? AND upload_ts IS NULL"
            " AND unused_expires_at > ?",
            now, media_type, length, upload_name, sha256, now, media_id, user_id, now)
        return changed == 1

    async def get(self, media_id: str) -> LocalMedia | None:
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM local_media WHERE media_id = ?", media_id)
        return None if row is None else _media(row)

    async def touch(self, media_id: str, now: int) -> None:
        await self.db.execute("UPDATE local_media SET last_access_ts = ? WHERE media_id = ?",
                              now, media_id)

    async def by_user(self, user_id: str, start: int, limit: int, order_by: str,
                      direction: str) -> tuple[list[LocalMedia], int]:
        """A page of a user's uploaded media and how many there are in all.
        ``order_by`` is a column name checked by the caller."""
        total = int(await self.db.fetchval(
            "SELECT COUNT(*) FROM local_media WHERE user_id = ? AND upload_ts IS NOT NULL",
            user_id))
        order = "DESC" if direction == "b" else "ASC"
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM local_media WHERE user_id = ? AND upload_ts IS NOT NULL"
            f" ORDER BY {order_by} {order}, media_id {order} LIMIT ? OFFSET ?",
            user_id, limit, start)
        return [_media(r) for r in rows], total

    async def ids_of_user(self, user_id: str) -> list[str]:
        rows = await self.db.fetchall("SELECT media_id FROM local_media WHERE user_id = ?",
                                      user_id)
        return [r[0] for r in rows]

    async def old_media(self, before_ts: int, size_gt: int) -> list[str]:
        """Uploaded, unprotected media last accessed before ``before_ts``, larger
        than ``size_gt`` bytes (the admin's bulk delete)."""
        rows = await self.db.fetchall(
            "SELECT media_id FROM local_media WHERE upload_ts IS NOT NULL"
            " AND COALESCE(last_access_ts, created_ts) < ? AND media_length > ?"
            " AND safe_from_quarantine = 0", before_ts, size_gt)
        return [r[0] for r in rows]

    async def delete(self, media_ids: list[str]) -> None:
        async with self.db.transaction() as txn:
            for media_id in media_ids:
                await txn.execute("DELETE FROM local_media_thumbnails WHERE media_id = ?",
                                  media_id)
                await txn.execute("DELETE FROM local_media WHERE media_id = ?", media_id)

    async def set_quarantined(self, media_ids: list[str], by: str | None) -> int:
        """Quarantine (``by`` an admin) or release (``by`` None) media; protected
        media is never quarantined. Returns how many rows changed."""
        changed = 0
        async with self.db.transaction() as txn:
            for media_id in media_ids:
                if by is None:
                    changed += await txn.execute(
                        "UPDATE local_media SET quarantined_by = NULL WHERE media_id = ?",
                        media_id)
                else:
                    changed += await txn.execute(
                        "UPDATE local_media SET quarantined_by = ? WHERE media_id = ?"
                        " AND safe_from_quarantine = 0", by, media_id)
        return changed

    async def set_protected(self, media_id: str, protected: bool) -> bool:
        changed = await self.db.execute(
            "UPDATE local_media SET safe_from_quarantine = ? WHERE media_id = ?",
            int(protected), media_id)
        return changed == 1

    async def expired_pending(self, now: int) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT media_id FROM local_media WHERE upload_ts IS NULL AND unused_expires_at <= ?",
            now)
        return [r[0] for r in rows]

    # -- where media is used ------------------------------------------------
    async def event_contents_in_room(self, room_id: str) -> list[str]:
        """The JSON of every event of a room that may reference media."""
        rows = await self.db.fetchall(
            "SELECT json FROM events WHERE room_id = ? AND json LIKE ?", room_id, "%mxc://%")
        return [r[0] for r in rows]

    async def avatar_urls(self) -> set[str]:
        """mxc URIs used as user avatars (the admin's bulk delete keeps them)."""
        rows = await self.db.fetchall(
            "SELECT avatar_url FROM profiles WHERE avatar_url LIKE ?", "mxc://%")
        return {r[0] for r in rows}

    async def room_avatar_contents(self) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT e.json FROM current_state_events c JOIN events e ON e.event_id = c.event_id"
            " WHERE c.type = ?", "m.room.avatar")
        return [r[0] for r in rows]

    # -- media cached from other servers --------------------------------------
    async def get_remote(self, origin: str, media_id: str) -> LocalMedia | None:
        """Cached remote media, shaped as local media whose ``media_id`` is the
        file's local (filesystem) id; ``user_id`` is empty: nobody here uploaded it."""
        row = await self.db.fetchone(
            "SELECT filesystem_id, created_ts, media_type, media_length, upload_name,"
            " sha256, last_access_ts, quarantined_by FROM remote_media_cache"
            " WHERE media_origin = ? AND media_id = ?", origin, media_id)
        if row is None:
            return None
        return LocalMedia(row[0], "", row[1], row[1], None, row[2], row[3], row[4], row[5],
                          True, row[6], row[7], False)

    async def insert_remote(self, origin: str, media_id: str, media: LocalMedia) -> bool:
        """Record fetched remote media; False if another process cached it first."""
        changed = await self.db.execute(
            "INSERT INTO remote_media_cache (media_origin, media_id, filesystem_id,"
            " media_type, media_length, upload_name, sha256, created_ts, last_access_ts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            origin, media_id, media.media_id, media.media_type, media.media_length,
            media.upload_name, media.sha256, media.created_ts, media.last_access_ts)
        return changed == 1

    # -- thumbnails ---------------------------------------------------------
    async def get_thumbnail(self, media_id: str, width: int, height: int, method: str,
                            animated: bool) -> Thumbnail | None:
        row = await self.db.fetchone(
            "SELECT thumbnail_type, thumbnail_width, thumbnail_height, length"
            " FROM local_media_thumbnails WHERE media_id = ? AND width = ? AND height = ?"
            " AND method = ? AND animated = ?", media_id, width, height, method, int(animated))
        if row is None:
            return None
        return Thumbnail(media_id, width, height, method, animated, row[0], row[1], row[2],
                         row[3])

    async def add_thumbnail(self, t: Thumbnail) -> None:
        # Two processes may generate the same thumbnail at once: the files are
        # identical, the first row wins.
        await self.db.execute(
            "INSERT INTO local_media_thumbnails (media_id, width, height, method, animated,"
            " thumbnail_type, thumbnail_width, thumbnail_height, length)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            t.media_id, t.width, t.height, t.method, int(t.animated), t.thumbnail_type,
            t.thumbnail_width, t.thumbnail_height, t.length)

    # -- URL previews -------------------------------------------------------
    async def get_preview(self, url: str, ts: int) -> tuple[str, int] | None:
        """The newest preview of ``url`` fetched at or before ``ts`` still valid
        at ``ts``: (og JSON, expires_ts)."""
        row = await self.db.fetchone(
            "SELECT og, expires_ts FROM url_preview_cache WHERE url = ? AND download_ts <= ?"
            " AND expires_ts > ? ORDER BY download_ts DESC LIMIT 1", url, ts, ts)
        return None if row is None else (row[0], row[1])

    async def store_preview(self, url: str, download_ts: int, expires_ts: int, og: str) -> None:
        await self.db.execute(
            "INSERT INTO url_preview_cache (url, download_ts, expires_ts, og) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING", url, download_ts, expires_ts, og)
