"""A recording push gateway on loopback: aiohttp in a thread of its own.

Tests read what the homeserver posted to ``/_matrix/push/v1/notify`` (per
pushkey), make the gateway fail for a while, or reject pushkeys.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.support.postgres import free_port

NOTIFY_PATH = "/_matrix/push/v1/notify"


class PushGateway:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{NOTIFY_PATH}"
        self.other_url = f"http://127.0.0.2:{self.port}{NOTIFY_PATH}"
        self.received: list[dict[str, Any]] = []
        self.failures: dict[str, int] = {}  # pushkey -> requests left to answer 500
        self.failed: list[dict[str, Any]] = []
        self.rejected: set[str] = set()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10)

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post(NOTIFY_PATH, self._notify)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        # Also on 127.0.0.2: a second loopback address a test may block.
        for host in ("127.0.0.1", "127.0.0.2"):
            site = web.TCPSite(self._runner, host, self.port)
            self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()

    async def _notify(self, request: web.Request) -> web.Response:
        body = await request.json()
        note = body["notification"]
        pushkeys = [d["pushkey"] for d in note.get("devices", [])]
        with self._lock:
            for pushkey in pushkeys:
                if self.failures.get(pushkey, 0) > 0:
                    self.failures[pushkey] -= 1
                    self.failed.append(note)
                    return web.json_response({"error": "down"}, status=500)
            self.received.append(note)
            rejected = [p for p in pushkeys if p in self.rejected]
        return web.json_response({"rejected": rejected})

    # -- reading -------------------------------------------------------------
    def for_pushkey(self, pushkey: str) -> list[dict[str, Any]]:
        with self._lock:
            return [n for n in self.received
                    if any(d["pushkey"] == pushkey for d in n.get("devices", []))]

    def wait_for(self, pushkey: str, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = 30.0) -> dict[str, Any]:
        """The first notification to ``pushkey`` that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for note in self.for_pushkey(pushkey):
                if predicate(note):
                    return note
            time.sleep(0.05)
        raise AssertionError(f"no such notification for {pushkey}: {self.for_pushkey(pushkey)}")

    def wait_event(self, pushkey: str, event_id: str, timeout: float = 30.0) -> dict[str, Any]:
        return self.wait_for(pushkey, lambda n: n.get("event_id") == event_id, timeout)

    def events(self, pushkey: str) -> list[str]:
        return [n["event_id"] for n in self.for_pushkey(pushkey) if "event_id" in n]
