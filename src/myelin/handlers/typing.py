"""Typing notifications: an in-memory stream with per-user timeouts."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from myelin.http.errors import forbidden

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

MAX_TYPING_TIMEOUT_MS = 120_000


class TypingHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        # room -> user -> expiry (monotonic seconds)
        self._typing: dict[str, dict[str, float]] = {}
        # room -> typing stream position of its last change
        self._room_serial: dict[str, int] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}

    async def set_typing(self, user_id: str, room_id: str, typing: bool,
                         timeout_ms: int | None) -> None:
        membership = await self.hs.stores.events.get_membership(room_id, user_id)
        if membership is None or membership.membership != "join":
            raise forbidden(f"User {user_id} not in room {room_id}")
        if typing:
            timeout = min(timeout_ms or 30_000, MAX_TYPING_TIMEOUT_MS) / 1000
            users = self._typing.setdefault(room_id, {})
            already = user_id in users
            users[user_id] = time.monotonic() + timeout
            self._schedule_expiry(room_id, user_id, timeout)
            if not already:
                self._changed(room_id)
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
            self._changed(room_id)

    def _changed(self, room_id: str) -> None:
        # The stream lives in memory, so it restarts with the process; positions
        # follow the wall clock (in ms) so that the first change after a restart is
        # still ahead of the tokens clients got from the previous process.
        streams = self.hs.streams
        streams.typing_position = max(streams.typing_position + 1, int(time.time() * 1000))
        self._room_serial[room_id] = self.hs.streams.typing_position
        self.hs.notifier.notify(rooms=[room_id])

    def typing_users(self, room_id: str) -> list[str]:
        return sorted(self._typing.get(room_id, {}))

    def changed_since(self, room_id: str, position: int) -> bool:
        return self._room_serial.get(room_id, 0) > position

    def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
