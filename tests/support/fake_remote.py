"""A fake remote homeserver for the DAG tests: it signs what it sends and
serves what the server under test asks it for.

:class:`FakeRemote` runs an aiohttp server on loopback TLS (the session CA's
``localhost`` certificate), named ``localhost:<port>``, with its own signing
key published at ``/_matrix/key/v2/server``. It builds events with
Myelin's pure signing code (so hashes and event ids are the spec's), sends
``/send`` transactions signed with X-Matrix, and answers ``/event``,
``/state_ids``, ``/event_auth``, ``/get_missing_events`` and ``/backfill``
from what the test told it, recording every request it got.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
import urllib.parse
from typing import Any

from aiohttp import web

from myelin.events.canonical import encode_canonical_json
from myelin.events.event import Event
from myelin.events.room_versions import get_room_version
from myelin.events.signing import (
    SigningKey,
    encode_verify_key_base64,
    generate_signing_key,
    sign_event,
    sign_json,
    verify_key_id,
)
from tests.support.federation import LocalCA, https_request
from tests.support.postgres import free_port

q = urllib.parse.quote


class FakeRemote:
    def __init__(self, ca: LocalCA, room_version: str = "10") -> None:
        self.ca = ca
        self.port = free_port()
        self.server_name = f"localhost:{self.port}"
        self.key: SigningKey = generate_signing_key("fake1")
        self.room_version = get_room_version(room_version)
        # What the test lets it serve: event id -> PDU; (room, event) -> state ids.
        self.pdus: dict[str, dict[str, Any]] = {}
        self.state_ids: dict[str, tuple[list[str], list[str]]] = {}
        self.missing_events: list[dict[str, Any]] = []
        self.backfill_pdus: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    def user(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    # -- events ------------------------------------------------------------------
    def event(self, room_id: str, etype: str, sender: str, content: dict[str, Any], *,
              prev: list[str], auth: list[str], depth: int, state_key: str | None = None,
              key: SigningKey | None = None) -> tuple[str, dict[str, Any]]:
        """A signed PDU (kept for serving) and its event id."""
        fields: dict[str, Any] = {
            "room_id": room_id, "type": etype, "sender": sender, "content": content,
            "prev_events": prev, "auth_events": auth, "depth": depth,
            "origin_server_ts": int(time.time() * 1000), "origin": self.server_name,
        }
        if state_key is not None:
            fields["state_key"] = state_key
        pdu = sign_event(fields, self.server_name, key or self.key, self.room_version)
        event_id = Event(pdu, self.room_version).event_id
        self.pdus[event_id] = pdu
        return event_id, pdu

    # -- sending -----------------------------------------------------------------
    def request(self, peer: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A signed federation request to ``peer`` (a MyelinPeer)."""
        signed: dict[str, Any] = {"method": method, "uri": path, "origin": self.server_name,
                                  "destination": peer.server_name}
        if body is not None:
            signed["content"] = body
        sig = sign_json(signed, self.server_name, self.key)["signatures"][self.server_name]
        key_id = verify_key_id(self.key)
        header = (f'X-Matrix origin="{self.server_name}",destination="{peer.server_name}",'
                  f'key="{key_id}",sig="{sig[key_id]}"')
        return https_request(self.ca, peer.tls_port, method, path, body,
                             {"Authorization": header}, timeout=120)

    def send(self, peer: Any, txn_id: str, pdus: list[dict[str, Any]],
             edus: list[dict[str, Any]] | None = None) -> tuple[int, Any]:
        body = {"origin": self.server_name, "origin_server_ts": int(time.time() * 1000),
                "pdus": pdus, "edus": edus or []}
        return self.request(peer, "PUT", f"/_matrix/federation/v1/send/{q(txn_id)}", body)

    def asked(self, fragment: str) -> list[tuple[str, str, Any]]:
        return [r for r in self.requests if fragment in r[1]]

    # -- serving -----------------------------------------------------------------
    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/_matrix/key/v2/server", self._keys)
        app.router.add_get("/_matrix/key/v2/server/{keyId}", self._keys)
        app.router.add_route("*", "/_matrix/federation/{tail:.*}", self._federation)
        return app

    async def _keys(self, request: web.Request) -> web.Response:
        body = sign_json({
            "server_name": self.server_name,
            "valid_until_ts": int(time.time() * 1000) + 3600_000,
            "verify_keys": {verify_key_id(self.key): {"key": encode_verify_key_base64(self.key)}},
            "old_verify_keys": {},
        }, self.server_name, self.key)
        return web.Response(body=encode_canonical_json(body), content_type="application/json")

    async def _federation(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        path = request.raw_path
        self.requests.append((request.method, path, body))
        tail = request.match_info["tail"]
        parts = [urllib.parse.unquote(p) for p in tail.split("?")[0].split("/")]
        answer: Any = None
        if parts[:2] == ["v1", "event"] and parts[2] in self.pdus:
            answer = {"origin": self.server_name, "origin_server_ts": 0,
                      "pdus": [self.pdus[parts[2]]]}
        elif parts[:2] == ["v1", "state_ids"]:
            at = request.query.get("event_id", "")
            if at in self.state_ids:
                pdu_ids, auth_ids = self.state_ids[at]
                answer = {"pdu_ids": pdu_ids, "auth_chain_ids": auth_ids}
        elif parts[:2] == ["v1", "get_missing_events"]:
            answer = {"events": self.missing_events}
        elif parts[:2] == ["v1", "backfill"]:
            answer = {"origin": self.server_name, "origin_server_ts": 0,
                      "pdus": self.backfill_pdus}
        elif parts[:2] == ["v1", "event_auth"]:
            answer = {"auth_chain": []}
        if answer is None:
            return web.Response(status=404, content_type="application/json", text=json.dumps(
                {"errcode": "M_NOT_FOUND", "error": "Not found"}))
        return web.Response(body=encode_canonical_json(answer), content_type="application/json")

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.ca.cert_pem, self.ca.key_pem)
            runner = web.AppRunner(self._app())
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(
                web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=context).start())
            self._runner = runner
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="fake-remote")
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the fake remote did not start")

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
