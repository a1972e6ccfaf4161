"""The media repository: uploads (direct and create-then-PUT), downloads,
thumbnails, URL previews and the admin's media operations.

Files live under ``media_store_path`` (`myelin.media.storage`), rows in the
database (`storage.stores.media`); every process that serves the ``media``
resource shares both, so any of them may answer any media request. A
download of media that another process is still receiving waits for its row
to be completed (polling the shared database; a local upload wakes it at
once). Media of other servers is fetched over federation the first time it
is asked for and kept (`remote_media_cache`), then served and thumbnailed
like local media.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import string
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError, Requester, forbidden, invalid_param, not_found, too_large
from myelin.media import preview as url_preview
from myelin.media import thumbnailer
from myelin.media.serving import DEFAULT_TYPE, base_type, served_type
from myelin.media.storage import MEDIA_ID, MediaFiles
from myelin.storage.stores.media import LocalMedia, MediaStore, Thumbnail

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)

_ID_ALPHABET = string.ascii_letters
MEDIA_ID_LENGTH = 24
DEFAULT_TIMEOUT_MS = 20_000
MAX_TIMEOUT_MS = 60_000
# How often a waiting download looks for an upload finished by another process.
_POLL_S = 0.5
# How long a URL preview is reused.
_PREVIEW_LIFETIME_MS = 3600 * 1000
# last_access_ts is written at most this often per media.
_TOUCH_EVERY_MS = 60_000


def now_ms() -> int:
    return int(time.time() * 1000)


def new_media_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(MEDIA_ID_LENGTH))


def not_yet_uploaded() -> MatrixError:
    return MatrixError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")


@dataclass(frozen=True)
class ServedFile:
    """A file to answer with, and how to describe it."""

    path: str
    content_type: str
    filename: str | None
    length: int
    thumbnail: bool = False


class MediaRepository:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.config = hs.config.media
        self.max_upload_size = hs.config.max_upload_size
        self.server_name = hs.server_name
        self.store: MediaStore = hs.stores.media
        self.files = MediaFiles(hs.config.media_store_path)
        self._uploaded: dict[str, asyncio.Event] = {}
        self._thumbnail_locks: dict[tuple[str, int, int, str, bool], asyncio.Lock] = {}
        self._remote_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._touched: dict[str, int] = {}
        self._background: set[asyncio.Task[None]] = set()

    # -- uploads ------------------------------------------------------------
    def media_config(self) -> dict[str, Any]:
        return {"m.upload.size": self.max_upload_size}

    async def upload(self, requester: Requester, body: AsyncIterator[bytes],
                     content_type: str | None, filename: str | None) -> str:
        """POST /upload: store the body as new media; returns its mxc URI."""
        received = await self.files.receive(body)
        media_id = new_media_id()
        try:
            await self.files.commit(received.path, self.files.content_path(media_id))
            now = now_ms()
            await self.store.insert_uploaded(LocalMedia(
                media_id=media_id, user_id=requester.user_id, created_ts=now, upload_ts=now,
                unused_expires_at=None, media_type=served_type(content_type),
                media_length=received.length, upload_name=filename or None,
                sha256=received.sha256,
                authenticated=self.config.enable_authenticated_media, last_access_ts=now,
                quarantined_by=None, safe_from_quarantine=False))
        except BaseException:
            await self.files.discard(received.path)
            await self.files.delete_media(media_id)
            raise
        logger.info("stored %s (%d bytes) for %s", media_id, received.length,
                    requester.user_id)
        return f"mxc://{self.server_name}/{media_id}"

    async def create(self, requester: Requester) -> dict[str, Any]:
        """POST /create: a media id to PUT content to later."""
        now = now_ms()
        pending = await self.store.count_pending(requester.user_id, now)
        if pending >= self.config.max_pending_media_uploads:
            raise MatrixError(429, "M_LIMIT_EXCEEDED", "You have too many uploads pending",
                              retry_after_ms=60_000)
        media_id = new_media_id()
        expires = now + self.config.unused_expiration_time_ms
        await self.store.create_pending(media_id, requester.user_id, now, expires,
                                        self.config.enable_authenticated_media)
        return {"content_uri": f"mxc://{self.server_name}/{media_id}",
                "unused_expires_at": expires}

    async def check_can_upload_to(self, requester: Requester, server_name: str,
                                  media_id: str) -> None:
        """PUT /upload/{serverName}/{mediaId} preconditions, before the body is read."""
        media = await self._local_row(server_name, media_id)
        if media is None:
            raise not_found("Unknown media ID")
        if media.user_id != requester.user_id:
            raise forbidden("You did not create this media ID")
        if media.uploaded:
            raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media ID already has content")
        if (media.unused_expires_at or 0) <= now_ms():
            raise not_found("Media ID has expired")

    async def upload_to(self, requester: Requester, server_name: str, media_id: str,
                        body: AsyncIterator[bytes], content_type: str | None,
                        filename: str | None) -> None:
        await self.check_can_upload_to(requester, server_name, media_id)
        received = await self.files.receive(body)
        final = self.files.content_path(media_id)
        try:
            # Claim the row first: of two concurrent PUTs exactly one wins,
            # and only the winner's file is moved into place.
            claimed = await self.store.complete_pending(
                media_id, requester.user_id, now_ms(), served_type(content_type),
                received.length, filename or None, received.sha256)
            if not claimed:
                raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA",
                                  "Media ID already has content")
            await self.files.commit(received.path, final)
        finally:
            await self.files.discard(received.path)
        event = self._uploaded.pop(media_id, None)
        if event is not None:
            event.set()

    # -- downloads ----------------------------------------------------------
    async def fetch_remote_media(self, server_name: str, media_id: str) -> LocalMedia:
        """Media of another server: from the remote-media cache, else fetched
        over federation (once per process at a time), stored in the media
        store under a fresh local id and recorded in the cache. The row
        returned is shaped as local media whose ``media_id`` is that local id,
        so downloads and thumbnails read the same files either way."""
        if not MEDIA_ID.match(media_id) or not server_name:
            raise not_found("Not found")
        cached = await self.store.get_remote(server_name, media_id)
        if cached is not None:
            return cached
        key = (server_name, media_id)
        lock = self._remote_locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                cached = await self.store.get_remote(server_name, media_id)
                if cached is not None:
                    return cached
                return await self._download_remote(server_name, media_id)
        finally:
            if not lock.locked():
                self._remote_locks.pop(key, None)

    async def _download_remote(self, server_name: str, media_id: str) -> LocalMedia:
        fetched = await self.hs.federation_queries.download_media(
            server_name, media_id, max_size=self.max_upload_size, timeout_ms=None)

        async def body() -> AsyncIterator[bytes]:
            yield fetched.body

        received = await self.files.receive(body())
        filesystem_id = new_media_id()
        now = now_ms()
        media = LocalMedia(
            media_id=filesystem_id, user_id="", created_ts=now, upload_ts=now,
            unused_expires_at=None, media_type=served_type(fetched.content_type),
            media_length=received.length, upload_name=fetched.filename, sha256=received.sha256,
            authenticated=True, last_access_ts=now, quarantined_by=None,
            safe_from_quarantine=False)
        try:
            await self.files.commit(received.path, self.files.content_path(filesystem_id))
            if not await self.store.insert_remote(server_name, media_id, media):
                # Another process cached it meanwhile: theirs is the copy.
                await self.files.delete_media(filesystem_id)
                other = await self.store.get_remote(server_name, media_id)
                if other is None:
                    raise not_found("Not found")
                return other
        except BaseException:
            await self.files.discard(received.path)
            raise
        logger.info("cached mxc://%s/%s (%d bytes) as %s", server_name, media_id,
                    received.length, filesystem_id)
        return media

    async def _local_row(self, server_name: str, media_id: str) -> LocalMedia | None:
        if server_name != self.server_name or not MEDIA_ID.match(media_id) \
                or len(media_id) < 5:
            return None
        return await self.store.get(media_id)

    async def _available(self, server_name: str, media_id: str, *, authenticated: bool,
                         timeout_ms: int | None, allow_remote: bool) -> LocalMedia:
        """The media's row once its content is there (waiting up to timeout_ms)."""
        if server_name != self.server_name:
            if not allow_remote:
                raise not_found("Not found")
            return await self.fetch_remote_media(server_name, media_id)
        media = await self._local_row(server_name, media_id)
        if media is None:
            raise not_found("Not found")
        if not authenticated and media.authenticated:
            # The freeze: uploaded while enable_authenticated_media was on.
            raise not_found("Not found")
        if not media.uploaded:
            media = await self._wait_for_upload(media, timeout_ms)
        if media.quarantined_by:
            raise not_found("Not found")
        self._touch(media)
        return media

    async def _wait_for_upload(self, media: LocalMedia, timeout_ms: int | None) -> LocalMedia:
        timeout = DEFAULT_TIMEOUT_MS if timeout_ms is None else timeout_ms
        deadline = time.monotonic() + min(max(timeout, 0), MAX_TIMEOUT_MS) / 1000
        media_id = media.media_id
        event = self._uploaded.setdefault(media_id, asyncio.Event())
        try:
            while True:
                if (media.unused_expires_at or 0) <= now_ms():
                    raise not_found("Not found")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise not_yet_uploaded()
                try:
                    await asyncio.wait_for(event.wait(), min(remaining, _POLL_S))
                except TimeoutError:
                    pass
                current = await self.store.get(media_id)
                if current is None:
                    raise not_found("Not found")
                if current.uploaded:
                    return current
                media = current
        finally:
            # Not kept for media that never arrives; a waiter still in the
            # loop polls the database anyway.
            if self._uploaded.get(media_id) is event:
                del self._uploaded[media_id]

    def _touch(self, media: LocalMedia) -> None:
        now = now_ms()
        if now - self._touched.get(media.media_id, 0) < _TOUCH_EVERY_MS:
            return
        if len(self._touched) > 10_000:
            self._touched.clear()
        self._touched[media.media_id] = now
        self._spawn(self.store.touch(media.media_id, now))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def start_jobs(self) -> None:
        """The media job (one instance: media_instance_running_background_jobs):
        forget media ids created and never uploaded once they expire."""
        self._spawn(self._expire_pending_forever())

    async def _expire_pending_forever(self) -> None:
        while True:
            try:
                expired = await self.store.expired_pending(now_ms())
                if expired:
                    await self.store.delete(expired)
                    logger.info("forgot %d expired pending media ids", len(expired))
            except Exception:
                logger.exception("expiring pending media failed")
            await asyncio.sleep(3600)

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def download(self, server_name: str, media_id: str, *, authenticated: bool,
                       timeout_ms: int | None, allow_remote: bool,
                       filename: str | None) -> ServedFile:
        media = await self._available(server_name, media_id, authenticated=authenticated,
                                      timeout_ms=timeout_ms, allow_remote=allow_remote)
        path = self.files.content_path(media.media_id)
        if not await asyncio.to_thread(_exists, path):
            logger.warning("media %s has a row but no file at %s", media.media_id, path)
            raise not_found("Not found")
        return ServedFile(path, media.media_type or DEFAULT_TYPE, filename or media.upload_name,
                          media.media_length or 0)

    # -- thumbnails ---------------------------------------------------------
    async def thumbnail(self, server_name: str, media_id: str, width: int, height: int,
                        method: str, animated: bool, *, authenticated: bool,
                        timeout_ms: int | None, allow_remote: bool) -> ServedFile:
        if width < 1 or height < 1:
            raise invalid_param("width and height must be positive integers")
        if method not in ("crop", "scale"):
            raise invalid_param("method must be crop or scale")
        media = await self._available(server_name, media_id, authenticated=authenticated,
                                      timeout_ms=timeout_ms, allow_remote=allow_remote)
        if base_type(media.media_type) not in thumbnailer.THUMBNAILABLE:
            raise cannot_thumbnail()
        source = self.files.content_path(media.media_id)
        info = await self._probe(source)
        if thumbnailer.original_will_do(info, base_type(media.media_type),
                                        width, height, animated):
            return ServedFile(source, info.content_type, None, media.media_length or 0,
                              thumbnail=True)
        if not self.config.dynamic_thumbnails:
            size = thumbnailer.choose_size(info, width, height, method,
                                           self.config.thumbnail_sizes)
            if size is None:
                raise cannot_thumbnail()
            width, height, method = size.width, size.height, size.method
        thumb = await self._thumbnail_file(media.media_id, source, info, width, height,
                                           method, animated and info.animated)
        path = self.files.thumbnail_path(media.media_id, width, height, method,
                                         thumb.animated, thumb.thumbnail_type)
        return ServedFile(path, thumb.thumbnail_type, None, thumb.length, thumbnail=True)

    async def _probe(self, source: str) -> thumbnailer.ImageInfo:
        try:
            return await asyncio.to_thread(thumbnailer.probe, source,
                                           self.config.max_image_pixels)
        except thumbnailer.TooManyPixels:
            raise too_large("Content is too large to thumbnail") from None
        except thumbnailer.NotAnImage:
            raise cannot_thumbnail() from None
        except FileNotFoundError:
            logger.warning("media file %s is missing", source)
            raise not_found("Not found") from None

    async def _thumbnail_file(self, media_id: str, source: str, info: thumbnailer.ImageInfo,
                              width: int, height: int, method: str,
                              animated: bool) -> Thumbnail:
        """The cached thumbnail, generated (once per process at a time) if missing."""
        key = (media_id, width, height, method, animated)
        lock = self._thumbnail_locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                cached = await self.store.get_thumbnail(media_id, width, height, method,
                                                        animated)
                if cached is not None:
                    path = self.files.thumbnail_path(media_id, width, height, method,
                                                     animated, cached.thumbnail_type)
                    if await asyncio.to_thread(_exists, path):
                        return cached
                content_type = thumbnailer.thumbnail_type(info, animated)
                dest = self.files.thumbnail_path(media_id, width, height, method, animated,
                                                 content_type)
                try:
                    t_w, t_h, t_type, length = await asyncio.to_thread(
                        thumbnailer.make_thumbnail, source, dest, info, width, height,
                        method, animated)
                except (OSError, ValueError) as e:
                    logger.warning("cannot thumbnail %s: %s", media_id, e)
                    raise cannot_thumbnail() from None
                thumb = Thumbnail(media_id, width, height, method, animated, t_type, t_w,
                                  t_h, length)
                await self.store.add_thumbnail(thumb)
                return thumb
        finally:
            if not lock.locked():
                self._thumbnail_locks.pop(key, None)

    # -- URL previews -------------------------------------------------------
    async def preview(self, requester: Requester, url: str, ts: int | None) -> dict[str, Any]:
        """The OpenGraph data of ``url`` as of ``ts`` (cached per URL and time)."""
        now = now_ms()
        at = now if ts is None or ts > now else ts
        cached = await self.store.get_preview(url, at)
        if cached is not None:
            og: dict[str, Any] = json.loads(cached[0])
            return og
        og = await self._fetch_preview(requester, url)
        await self.store.store_preview(url, now, now + _PREVIEW_LIFETIME_MS, json.dumps(og))
        return og

    def _policy(self) -> url_preview.AddressPolicy:
        return url_preview.AddressPolicy(self.config.url_preview_ip_range_blacklist,
                                     self.config.url_preview_ip_range_whitelist)

    async def _fetch(self, url: str) -> url_preview.Fetched:
        try:
            return await url_preview.fetch(
                url, self._policy(), self.config.max_spider_size,
                self.config.url_preview_accept_language,
                verify_tls=not self.config.insecure_tls_for_testing)
        except url_preview.PreviewBlocked:
            raise MatrixError(403, "M_UNKNOWN", "IP address blocked") from None
        except url_preview.PreviewDnsBlocked:
            raise MatrixError(502, "M_UNKNOWN",
                              "DNS resolution failure during URL preview generation") from None
        except url_preview.PreviewTooLarge:
            raise MatrixError(502, "M_TOO_LARGE", "The content is too large to preview") \
                from None
        except url_preview.PreviewFailed as e:
            raise MatrixError(502, "M_UNKNOWN", f"Failed to download content: {e}") from None

    async def _fetch_preview(self, requester: Requester, url: str) -> dict[str, Any]:
        fetched = await self._fetch(url)
        if fetched.status >= 400:
            raise MatrixError(502, "M_UNKNOWN",
                              f"The page answered HTTP {fetched.status}")
        kind = base_type(fetched.content_type)
        if kind.startswith("image/"):
            return await self._preview_image(requester, fetched)
        if kind not in ("text/html", "application/xhtml+xml"):
            return {}
        og = url_preview.parse_html(fetched.body, fetched.content_type, fetched.url)
        image_url = og.pop("og:image", None)
        if isinstance(image_url, str):
            try:
                image = await self._fetch(image_url)
            except MatrixError as e:
                logger.info("preview of %s: its image %s: %s", url, image_url, e.message)
            else:
                if image.status < 400 and base_type(image.content_type).startswith("image/"):
                    og.update(await self._preview_image(requester, image))
        return og

    async def _preview_image(self, requester: Requester,
                             fetched: url_preview.Fetched) -> dict[str, Any]:
        """Store a previewed image as local media: og:image is its mxc URI."""
        async def body() -> AsyncIterator[bytes]:
            yield fetched.body

        uri = await self.upload(requester, body(), base_type(fetched.content_type), None)
        og: dict[str, Any] = {"og:image": uri, "og:image:type": base_type(fetched.content_type),
                              "matrix:image:size": len(fetched.body)}
        media_id = uri.rsplit("/", 1)[1]
        try:
            info = await asyncio.to_thread(thumbnailer.probe, self.files.content_path(media_id),
                                           self.config.max_image_pixels)
        except (thumbnailer.NotAnImage, thumbnailer.TooManyPixels):
            return og
        og["og:image:width"], og["og:image:height"] = info.width, info.height
        return og

    # -- admin --------------------------------------------------------------
    async def get_media_info(self, server_name: str, media_id: str) -> dict[str, Any]:
        media = await self._local_row(server_name, media_id)
        if media is None:
            raise not_found("Unknown media")
        return {"media_info": {
            "media_origin": self.server_name, "user_id": media.user_id,
            **media.admin_json(), "filesystem_id": media.media_id, "url_cache": None,
            "authenticated": media.authenticated, "sha256": media.sha256}}

    async def delete_local_media(self, media_ids: list[str]) -> dict[str, Any]:
        for media_id in media_ids:
            await self.files.delete_media(media_id)
        await self.store.delete(media_ids)
        return {"deleted_media": media_ids, "total": len(media_ids)}

    async def delete_one(self, server_name: str, media_id: str) -> dict[str, Any]:
        if server_name != self.server_name:
            raise MatrixError(400, "M_UNKNOWN", "Can only delete local media")
        if await self._local_row(server_name, media_id) is None:
            raise not_found("Unknown media")
        return await self.delete_local_media([media_id])

    async def delete_old(self, before_ts: int, size_gt: int,
                         keep_profiles: bool) -> dict[str, Any]:
        candidates = await self.store.old_media(before_ts, size_gt)
        if keep_profiles:
            used = await self._profile_media()
            candidates = [m for m in candidates if m not in used]
        return await self.delete_local_media(candidates)

    async def _profile_media(self) -> set[str]:
        """Local media ids used as user or room avatars."""
        uris = set(await self.store.avatar_urls())
        for text in await self.store.room_avatar_contents():
            url = json.loads(text).get("content", {}).get("url")
            if isinstance(url, str):
                uris.add(url)
        return {mid for uri in uris if (mid := self.local_media_id(uri)) is not None}

    def local_media_id(self, uri: str) -> str | None:
        prefix = f"mxc://{self.server_name}/"
        if uri.startswith(prefix) and MEDIA_ID.match(uri[len(prefix):]):
            return uri[len(prefix):]
        return None

    async def media_in_room(self, room_id: str) -> tuple[list[str], list[str]]:
        """(local, remote) mxc URIs referenced by a room's events."""
        local: dict[str, None] = {}
        remote: dict[str, None] = {}
        for text in await self.store.event_contents_in_room(room_id):
            content = json.loads(text).get("content")
            if not isinstance(content, dict):
                continue
            info = content.get("info")
            candidates = [content.get("url")]
            if isinstance(info, dict):
                candidates.append(info.get("thumbnail_url"))
            for uri in candidates:
                if not isinstance(uri, str) or not uri.startswith("mxc://"):
                    continue
                (local if self.local_media_id(uri) is not None else remote)[uri] = None
        return list(local), list(remote)

    async def quarantine(self, media_ids: list[str], admin: str | None) -> int:
        changed = await self.store.set_quarantined(media_ids, admin)
        if admin is not None:
            for media_id in media_ids:
                # Quarantined media is not served; its thumbnails go.
                await self.files.delete_thumbnails(media_id)
        return changed

    async def quarantine_one(self, server_name: str, media_id: str,
                             admin: str | None) -> None:
        if await self._local_row(server_name, media_id) is None:
            raise not_found("Unknown media")
        await self.quarantine([media_id], admin)

    async def protect(self, media_id: str, protected: bool) -> None:
        if not MEDIA_ID.match(media_id) or not await self.store.set_protected(media_id,
                                                                               protected):
            raise not_found("Unknown media")


def cannot_thumbnail() -> MatrixError:
    return MatrixError(400, "M_UNKNOWN", "Cannot generate thumbnails for the requested content")


def _exists(path: str) -> bool:
    return os.path.exists(path)
