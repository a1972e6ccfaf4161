"""Typing notifications: an in-memory stream with per-user timeouts.

The `typing` stream's writer keeps who types where, with the timers; every
change is a row carrying the room's whole list, which every process (the
writer too) keeps as its replica for ``/sync``. A process that is not the
writer forwards ``set_typing`` to it over HTTP replication.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from myelin.domain import forbidden
from myelin.replication.http import ReplicationEndpoint
from myelin.storage.stream_rows import TypingRow

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

MAX_TYPING_TIMEOUT_MS = 120_000


class SetTyping(ReplicationEndpoint):
    NAME = "set_typing"
    STREAM = "typing"
    SHARD_BY = "room_id"

    @staticmethod
    async def handle(hs: HomeServer, payload: dict[str, Any]) -> Any:
        hs.typing.apply(payload["user_id"], payload["room_id"], bool(payload["typing"]),
                        payload.get("timeout_ms"))
        return {}


class TypingHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        # On the writer: room -> user -> expiry (monotonic seconds), and timers.
        self._typing: dict[str, dict[str, float]] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        # Everywhere, from the stream: room -> users typing, and the position
        # of the room's last change.
        self._users: dict[str, list[str]] = {}
        self._room_serial: dict[str, int] = {}
        hs.announcer.replicate_hooks.append(self._republish)

    async def set_typing(self, user_id: str, room_id: str, typing: bool,
                         timeout_ms: int | None) -> None:
        membership = await self.hs.stores.memberships.get_membership(room_id, user_id)
        if membership is None or membership.membership != "join":
            raise forbidden(f"User {user_id} not in room {room_id}")
        await self.hs.replication.call(SetTyping, {
            "user_id": user_id, "room_id": room_id, "typing": typing, "timeout_ms": timeout_ms})

    # -- the writer ----------------------------------------------------------
    def apply(self, user_id: str, room_id: str, typing: bool, timeout_ms: int | None) -> None:
        if typing:
            timeout = min(timeout_ms or 30_000, MAX_TYPING_TIMEOUT_MS) / 1000
            users = self._typing.setdefault(room_id, {})
            already = user_id in users
            users[user_id] = time.monotonic() + timeout
            self._schedule_expiry(room_id, user_id, timeout)
            if not already:
                self._publish(room_id)
        else:
            self._stop(room_id, user_id)

    def _schedule_expiry(self, room_id: str, user_id: str, timeout: float) -> None:
        key = (room_id, user_id)
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(timeout, self._stop, room_id, user_id)

    def _stop(self, room_id: str, user_id: str) -> None:
        timer = self._timers.pop((room_id, user_id), None)
        if timer is not None:
            timer.cancel()
        users = self._typing.get(room_id)
        if users and user_id in users:
            del users[user_id]
            if not users:
                del self._typing[room_id]
            self._publish(room_id)

    def _publish(self, room_id: str) -> None:
        self.hs.streams.typing.write(TypingRow(room_id, sorted(self._typing.get(room_id, {}))))

    def _republish(self) -> None:
        """Answer REPLICATE: a process that just started learns who is typing."""
        if self.hs.streams.typing.is_writer:
            for room_id in list(self._typing):
                self._publish(room_id)

    # -- every process -------------------------------------------------------
    def on_typing_rows(self, writer: str, rows: Sequence[tuple[int, TypingRow]]) -> None:
        for position, row in rows:
            if row.user_ids:
                self._users[row.room_id] = list(row.user_ids)
            else:
                self._users.pop(row.room_id, None)
            self._room_serial[row.room_id] = position

    def typing_users(self, room_id: str) -> list[str]:
        return list(self._users.get(room_id, ()))

    def changed_since(self, room_id: str, position: int) -> bool:
        return self._room_serial.get(room_id, 0) > position

    def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
