"""A recording remote for the federation sender's tests.

``RecordingRemote`` stands where ``hs.federation_client`` stands: it records
every transaction PUT to each destination and can be told a destination is
down (it then raises as an unreachable server does).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class Unreachable(Exception):
    """What a down destination raises (fed-keys' FederationUnreachable stands here)."""


class Refused(Exception):
    """What a destination answering 400 raises (as fed-keys' FederationError: ``.code``)."""

    code = 400


@dataclass
class Received:
    destination: str
    txn_id: str
    body: dict[str, Any]

    @property
    def pdus(self) -> list[dict[str, Any]]:
        return list(self.body.get("pdus", []))

    @property
    def edus(self) -> list[dict[str, Any]]:
        return list(self.body.get("edus", []))


class RecordingRemote:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.down: set[str] = set()
        self.refuse: set[str] = set()
        # A destination here answers only once its event is set (a slow server).
        self.hold: dict[str, asyncio.Event] = {}
        self.attempts: dict[str, list[float]] = {}
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}

    async def put_json(self, destination: str, path: str, body: Any, *,
                       args: Any = None, timeout: float = 60.0) -> Any:  # noqa: ASYNC109
        assert path.startswith("/_matrix/federation/v1/send/"), path
        self.attempts.setdefault(destination, []).append(time.monotonic())
        self.in_flight[destination] = self.in_flight.get(destination, 0) + 1
        self.max_in_flight[destination] = max(self.max_in_flight.get(destination, 0),
                                              self.in_flight[destination])
        try:
            await asyncio.sleep(0.01)  # a real round trip: others may queue meanwhile
            if destination in self.hold:
                await self.hold[destination].wait()
            if destination in self.down:
                raise Unreachable(f"{destination} is down")
            if destination in self.refuse:
                raise Refused(f"{destination} answers 400")
            self.received.append(Received(destination, path.rsplit("/", 1)[1], body))
            return {"pdus": {}}
        finally:
            self.in_flight[destination] -= 1

    async def close(self) -> None:
        """As the real client's: the HomeServer closes it when it stops."""

    def to(self, destination: str) -> list[Received]:
        return [r for r in self.received if r.destination == destination]

    def pdus_to(self, destination: str) -> list[dict[str, Any]]:
        return [p for r in self.to(destination) for p in r.pdus]

    def edus_to(self, destination: str, edu_type: str | None = None) -> list[dict[str, Any]]:
        return [e for r in self.to(destination) for e in r.edus
                if edu_type is None or e["edu_type"] == edu_type]


async def eventually(check: Callable[[], Any], timeout: float = 15.0,  # noqa: ASYNC109
                     what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy (its value), or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class LoopbackRemote:
    """A recording remote homeserver on loopback, with TLS from the session CA.

    It is ``localhost:<port>`` (discovery takes the explicit port) and answers
    ``PUT /_matrix/federation/v1/send/{txnId}``, checking each request's
    ``X-Matrix`` signature against the sending server's key; ``stop()`` takes
    it off the network (connections refused) and ``start()`` brings it back on
    the same port.
    """

    def __init__(self, ca: Any, verify_key_of: Callable[[str], Any]) -> None:
        from tests.support.postgres import free_port

        self.ca = ca
        self.port = free_port()
        self.server_name = f"localhost:{self.port}"
        self.verify_key_of = verify_key_of
        self.received: list[Received] = []
        self.refused: list[str] = []
        self._runner: Any = None

    async def start(self) -> None:
        import ssl

        from aiohttp import web

        app = web.Application()
        app.router.add_put("/_matrix/federation/v1/send/{txn_id}", self._on_send)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.ca.cert_pem, self.ca.key_pem)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=context,
                           reuse_address=True)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _on_send(self, request: Any) -> Any:
        import orjson
        from aiohttp import web
        from signedjson.sign import SignatureVerifyException, verify_signed_json

        from myelin.federation.auth import parse_x_matrix, request_json

        body = orjson.loads(await request.read())
        params = parse_x_matrix(request.headers.get("Authorization", ""))
        origin = params.get("origin", "")
        signed = request_json("PUT", request.path_qs, origin, params.get("destination", ""),
                              body)
        signed["signatures"] = {origin: {params.get("key", ""): params.get("sig", "")}}
        try:
            if params.get("destination") != self.server_name:
                raise SignatureVerifyException("wrong destination")
            verify_signed_json(signed, origin, self.verify_key_of(origin))
        except SignatureVerifyException as e:
            self.refused.append(str(e))
            return web.json_response({"errcode": "M_UNAUTHORIZED", "error": str(e)},
                                     status=401)
        self.received.append(Received(origin, request.match_info["txn_id"], body))
        return web.json_response({"pdus": {}})

    def pdus(self) -> list[dict[str, Any]]:
        return [p for r in self.received for p in r.pdus]

    def edus(self, edu_type: str) -> list[dict[str, Any]]:
        return [e for r in self.received for e in r.edus if e["edu_type"] == edu_type]
