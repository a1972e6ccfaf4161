"""Periodic housekeeping: the jobs `run_background_tasks_on` places.

Exactly one process of a fleet runs them (main unless configured), so they
never race each other: pruning the `caches` stream's old rows (every process
has applied them within seconds; an hour is plenty), expired
user-interactive-auth sessions, and transaction ids old enough that no
client will retry them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)

INTERVAL_S = 300.0
CACHE_ROWS_KEPT_MS = 3_600_000
UIA_SESSION_LIFETIME_MS = 3_600_000
TXN_IDS_KEPT_MS = 86_400_000


class BackgroundTasks:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self._task: asyncio.Task[None] | None = None
        self.runs = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL_S)
            try:
                await self.run_once()
            except Exception:
                logger.exception("background tasks failed")

    async def run_once(self) -> dict[str, int]:
        """One round of every job; returns how many rows each removed."""
        now = int(time.time() * 1000)
        db = self.hs.db
        removed = {
            "cache_invalidation_stream": await db.execute(
                "DELETE FROM cache_invalidation_stream WHERE invalidation_ts < ?",
                now - CACHE_ROWS_KEPT_MS),
            "ui_auth_sessions": await db.execute(
                "DELETE FROM ui_auth_sessions WHERE created_ts < ?",
                now - UIA_SESSION_LIFETIME_MS),
            "event_txn_ids": await db.execute(
                "DELETE FROM event_txn_ids WHERE inserted_ts < ?", now - TXN_IDS_KEPT_MS),
        }
        self.runs += 1
        return removed
