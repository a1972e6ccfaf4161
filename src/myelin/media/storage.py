"""Media files on disk under ``media_store_path``.

Layout (the same as Synapse's, so a media store can be copied across):
``local_content/ab/cd/efgh…`` for an upload ``abcdefgh…`` and
``local_thumbnails/ab/cd/efgh…/<w>-<h>-<type>-<method>[-animated]`` for its
thumbnails. A file is written to ``tmp/`` first and renamed into place, so a
reader never sees half a file, and bodies are streamed to disk chunk by
chunk: an upload is never whole in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass

# Written to disk once this much has arrived: fewer thread hops than one per chunk.
_WRITE_BATCH = 256 * 1024

MEDIA_ID = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Received:
    """A body streamed into a temporary file."""

    path: str
    length: int
    sha256: str


class MediaFiles:
    def __init__(self, base: str) -> None:
        self.base = os.path.abspath(base)
        self.tmp = os.path.join(self.base, "tmp")

    @staticmethod
    def _split(media_id: str) -> tuple[str, str, str]:
        # The id is checked against MEDIA_ID before any path is built from it.
        if not MEDIA_ID.match(media_id) or len(media_id) < 5:
            raise ValueError(f"bad media id {media_id!r}")
        return media_id[0:2], media_id[2:4], media_id[4:]

    def content_path(self, media_id: str) -> str:
        return os.path.join(self.base, "local_content", *self._split(media_id))

    def thumbnail_dir(self, media_id: str) -> str:
        return os.path.join(self.base, "local_thumbnails", *self._split(media_id))

    def thumbnail_path(self, media_id: str, width: int, height: int, method: str,
                       animated: bool, content_type: str) -> str:
        kind = content_type.replace("/", "-")
        name = f"{width}-{height}-{kind}-{method}" + ("-animated" if animated else "")
        return os.path.join(self.thumbnail_dir(media_id), name)

    def temp_path(self) -> str:
        os.makedirs(self.tmp, exist_ok=True)
        return os.path.join(self.tmp, secrets.token_hex(12))

    async def receive(self, chunks: AsyncIterator[bytes]) -> Received:
        """Stream ``chunks`` into a temporary file. Whatever ``chunks`` raises
        (such as M_TOO_LARGE past the limit) propagates, and the partial file
        is deleted first."""
        path = await asyncio.to_thread(self.temp_path)
        digest = hashlib.sha256()
        length = 0
        f = await asyncio.to_thread(open, path, "wb")
        try:
            pending: list[bytes] = []
            pending_size = 0
            async for chunk in chunks:
                digest.update(chunk)
                length += len(chunk)
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= _WRITE_BATCH:
                    await asyncio.to_thread(f.write, b"".join(pending))
                    pending, pending_size = [], 0
            if pending:
                await asyncio.to_thread(f.write, b"".join(pending))
            await asyncio.to_thread(f.close)
        except BaseException:
            f.close()
            await asyncio.to_thread(_unlink, path)
            raise
        return Received(path, length, digest.hexdigest())

    async def commit(self, temp: str, final: str) -> None:
        """Move a finished temporary file into place."""
        def work() -> None:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(temp, final)

        await asyncio.to_thread(work)

    async def discard(self, temp: str) -> None:
        await asyncio.to_thread(_unlink, temp)

    async def delete_media(self, media_id: str) -> None:
        """Remove an upload's content and every thumbnail of it."""
        content, thumbs = self.content_path(media_id), self.thumbnail_dir(media_id)

        def work() -> None:
            _unlink(content)
            shutil.rmtree(thumbs, ignore_errors=True)

        await asyncio.to_thread(work)

    async def delete_thumbnails(self, media_id: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self.thumbnail_dir(media_id), True)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
