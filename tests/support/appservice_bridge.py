"""A bridge built with mautrix-python's ``AppService``, on loopback, for tests.

The bridge runs its own event loop in a thread (it must answer the
homeserver's queries while a test waits on a blocking HTTP call) and records
what its transactions carried, in arrival order.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import yaml
from aiohttp import web
from mautrix.appservice import AppService
from mautrix.appservice.state_store import FileASStateStore
from mautrix.types import Event, RoomCreatePreset, UserID

from tests.support.server import SERVER_NAME

AS_TOKEN = "as-token-of-the-test-bridge"
HS_TOKEN = "hs-token-of-the-test-bridge"
PUPPET_PREFIX = "_bridge_"


def puppet(name: str) -> str:
    return f"@{PUPPET_PREFIX}{name}:{SERVER_NAME}"


class Bridge:
    """A mautrix AppService in a thread of its own, recording what it receives."""

    def __init__(self, hs_url: str, port: int, workdir: str) -> None:
        self.hs_url, self.port, self.workdir = hs_url, port, workdir
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []  # room events, in arrival order
        self.ephemeral: list[dict[str, Any]] = []
        self.to_device: list[dict[str, Any]] = []
        self.queried_users: list[str] = []
        self.queried_aliases: list[str] = []
        self.known_puppets: set[str] = set()  # the users query_user creates
        self.appserv: AppService | None = None

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def start(self) -> None:
        self.run(self._start())

    def stop(self) -> None:
        self.run(self._stop())

    async def _start(self) -> None:
        appserv = AppService(
            server=self.hs_url, domain=SERVER_NAME, as_token=AS_TOKEN, hs_token=HS_TOKEN,
            bot_localpart="bridgebot", id="testbridge", loop=self.loop,
            query_user=self._query_user, query_alias=self._query_alias,
            state_store=FileASStateStore(os.path.join(self.workdir, "mx-state.json"),
                                         binary=False),
            ephemeral_events=True, encryption_events=True)
        appserv.synchronous_handlers = True  # record in delivery order
        appserv.matrix_event_handler(self._on_event)
        appserv.to_device_handler = self._on_to_device
        appserv.app.router.add_get("/_matrix/app/v1/thirdparty/protocol/{protocol}",
                                   self._protocol)
        appserv.app.router.add_get("/_matrix/app/v1/thirdparty/user/{protocol}",
                                   self._thirdparty_user)
        await appserv.start("127.0.0.1", self.port)
        self.appserv = appserv

    async def _stop(self) -> None:
        if self.appserv is not None:
            await self.appserv.stop()
            self.appserv = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    # -- what the homeserver calls --------------------------------------------
    async def _on_event(self, event: Event) -> None:
        raw = event.serialize()
        with self.lock:
            if event.type.is_ephemeral:
                self.ephemeral.append(raw)
            else:
                self.events.append(raw)

    async def _on_to_device(self, event: Any) -> None:
        with self.lock:
            self.to_device.append(event.serialize())

    async def _query_user(self, user_id: UserID) -> dict[str, Any] | None:
        self.queried_users.append(user_id)
        if user_id not in self.known_puppets:
            return None
        assert self.appserv is not None
        await self.appserv.intent.user(user_id).ensure_registered()
        return {"created": True}  # mautrix answers 404 for an empty (falsy) answer

    async def _query_alias(self, alias: str) -> dict[str, Any] | None:
        self.queried_aliases.append(alias)
        if not alias.startswith(f"#{PUPPET_PREFIX}portal"):
            return None
        assert self.appserv is not None
        localpart = alias[1:].split(":", 1)[0]
        await self.appserv.intent.create_room(alias_localpart=localpart, is_direct=False,
                                              preset=RoomCreatePreset.PUBLIC)
        return {"created": True}

    async def _protocol(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {HS_TOKEN}":
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        return web.json_response({
            "user_fields": ["username"], "location_fields": ["channel"], "icon": "mxc://x/y",
            "field_types": {"username": {"regexp": ".*", "placeholder": "name"},
                            "channel": {"regexp": ".*", "placeholder": "#chan"}},
            "instances": [{"network_id": "libera", "desc": "Libera", "fields": {}}]})

    async def _thirdparty_user(self, request: web.Request) -> web.Response:
        name = request.query.get("username", "")
        return web.json_response([{"userid": puppet(name), "protocol": "gitter",
                                   "fields": {"username": name}}])

    # -- helpers for the tests ------------------------------------------------------
    def intent(self, user_id: str) -> Any:
        assert self.appserv is not None
        return self.appserv.intent.user(UserID(user_id))

    def room_events(self, room_id: str, etype: str = "m.room.message") -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e.get("room_id") == room_id and e["type"] == etype]

    def wait_for(self, what: Callable[[], Any], timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = what()
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError("the bridge never saw it")




def write_registration(workdir: str, port: int, server_name: str = SERVER_NAME) -> str:
    """The bridge's registration file (exclusive users and aliases under
    ``_bridge_``, ephemeral data, not rate limited); its path."""
    registration = {
        "id": "testbridge", "url": f"http://127.0.0.1:{port}",
        "as_token": AS_TOKEN, "hs_token": HS_TOKEN, "sender_localpart": "bridgebot",
        "namespaces": {
            "users": [{"exclusive": True, "regex": f"@{PUPPET_PREFIX}.*:{server_name}"}],
            "aliases": [{"exclusive": True, "regex": f"#{PUPPET_PREFIX}.*:{server_name}"}],
            "rooms": []},
        "rate_limited": False, "receive_ephemeral": True,
        "de.sorunome.msc2409.push_ephemeral": True, "protocols": ["gitter"],
    }
    path = os.path.join(workdir, "bridge.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(registration, f)
    return path
