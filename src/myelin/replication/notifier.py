"""Wakes waiting requests (long-polling ``/sync``) when their streams move.

A waiter registers *before* it computes its answer, so an update that lands
between "nothing new" and "wait" still wakes it. Waiters are indexed by user
and by room; a notification names the rooms and users it concerns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class Listener:
    """One waiting request's subscription."""

    __slots__ = ("_event", "_notifier", "rooms", "user_id")

    def __init__(self, notifier: Notifier, user_id: str, rooms: Iterable[str]) -> None:
        self._notifier = notifier
        self._event = asyncio.Event()
        self.user_id = user_id
        self.rooms = set(rooms)

    def wake(self) -> None:
        self._event.set()

    @property
    def woken(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109 - a deadline, not a cancel scope
        """True if woken, False on timeout."""
        if self._event.is_set():
            return True
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self._notifier._remove(self)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Notifier:
    def __init__(self) -> None:
        self._by_user: dict[str, set[Listener]] = {}
        self._by_room: dict[str, set[Listener]] = {}
        self._all: set[Listener] = set()
        self.stopping = False

    def listen(self, user_id: str, rooms: Iterable[str]) -> Listener:
        listener = Listener(self, user_id, rooms)
        self._all.add(listener)
        self._by_user.setdefault(user_id, set()).add(listener)
        for room_id in listener.rooms:
            self._by_room.setdefault(room_id, set()).add(listener)
        if self.stopping:
            listener.wake()
        return listener

    def _remove(self, listener: Listener) -> None:
        self._all.discard(listener)
        users = self._by_user.get(listener.user_id)
        if users is not None:
            users.discard(listener)
            if not users:
                del self._by_user[listener.user_id]
        for room_id in listener.rooms:
            room = self._by_room.get(room_id)
            if room is not None:
                room.discard(listener)
                if not room:
                    del self._by_room[room_id]

    def notify(self, *, rooms: Iterable[str] = (), users: Iterable[str] = ()) -> None:
        for room_id in rooms:
            for listener in self._by_room.get(room_id, ()):
                listener.wake()
        for user_id in users:
            for listener in self._by_user.get(user_id, ()):
                listener.wake()

    def notify_all(self) -> None:
        for listener in self._all:
            listener.wake()

    def shutdown(self) -> None:
        """Wake every waiter so long-polls answer before the process stops."""
        self.stopping = True
        self.notify_all()

    @property
    def waiting(self) -> int:
        return len(self._all)
