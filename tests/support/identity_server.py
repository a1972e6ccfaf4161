"""A fake identity server on loopback over TLS (the test session's CA):
v2 hash_details, lookup (sha256 with a pepper, or none) and store-invite,
each checking the bearer token; pubkey/isvalid for its ed25519 key (until a
test revokes it). Tests bind addresses, read what was asked and sign what an
identity server sends on a binding (``signed_invite``)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import ssl
import threading
from typing import Any

from aiohttp import web
from signedjson.key import encode_verify_key_base64, generate_signing_key, get_verify_key
from signedjson.sign import sign_json

from tests.support.federation import local_ca
from tests.support.postgres import free_port

PEPPER = "matrixrocks"


class FakeIdentityServer:
    def __init__(self, access_token: str = "id-token") -> None:
        self.port = free_port()
        self.id_server = f"localhost:{self.port}"
        self.access_token = access_token
        self.bindings: dict[tuple[str, str], str] = {}  # (medium, address) -> user id
        self.lookups: list[dict[str, Any]] = []
        self.stored: list[dict[str, Any]] = []
        # sid -> (medium, address) of sessions this server validated
        self.validated: dict[str, tuple[str, str]] = {}
        self.unbinds: list[tuple[dict[str, Any], str]] = []  # (body, Authorization)
        self.signing_key = generate_signing_key("0")
        self.public_key = encode_verify_key_base64(get_verify_key(self.signing_key))
        self.revoked: set[str] = set()
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
        ca = local_ca()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(ca.cert_pem, ca.key_pem)
        app = web.Application()
        app.router.add_get("/_matrix/identity/v2/hash_details", self._hash_details)
        app.router.add_post("/_matrix/identity/v2/lookup", self._lookup)
        app.router.add_post("/_matrix/identity/v2/store-invite", self._store_invite)
        app.router.add_post("/_matrix/identity/v2/3pid/bind", self._bind)
        app.router.add_post("/_matrix/identity/v2/3pid/unbind", self._unbind)
        app.router.add_get("/_matrix/identity/v2/pubkey/isvalid", self._is_valid)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=context)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.access_token}"

    @staticmethod
    def _unauthorised() -> web.Response:
        return web.json_response({"errcode": "M_UNAUTHORIZED", "error": "bad token"},
                                 status=401)

    async def _hash_details(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        return web.json_response({"algorithms": ["none", "sha256"], "lookup_pepper": PEPPER})

    async def _lookup(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        body = await request.json()
        self.lookups.append(body)
        mappings = {}
        for (medium, address), user_id in self.bindings.items():
            if body.get("algorithm") == "sha256" and body.get("pepper") == PEPPER:
                digest = hashlib.sha256(f"{address} {medium} {PEPPER}".encode()).digest()
                key = base64.urlsafe_b64encode(digest).decode().rstrip("=")
            else:
                key = f"{address} {medium}"
            if key in body.get("addresses", []):
                mappings[key] = user_id
        return web.json_response({"mappings": mappings})

    async def _bind(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        body = await request.json()
        if body.get("sid") not in self.validated:
            return web.json_response({"errcode": "M_SESSION_NOT_VALIDATED"}, status=400)
        medium, address = self.validated[body["sid"]]
        self.bindings[(medium, address)] = body["mxid"]
        return web.json_response({"medium": medium, "address": address, "mxid": body["mxid"],
                                  "not_before": 0, "not_after": 4582425849161, "ts": 0})

    async def _unbind(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.unbinds.append((body, request.headers.get("Authorization", "")))
        key = (body["threepid"]["medium"], body["threepid"]["address"])
        if self.bindings.get(key) != body.get("mxid"):
            return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)
        del self.bindings[key]
        return web.json_response({})

    async def _store_invite(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        body = await request.json()
        self.stored.append(body)
        token = secrets.token_urlsafe(12)
        return web.json_response({
            "token": token, "display_name": body["address"][:3] + "...",
            "public_keys": [{"public_key": self.public_key,
                             "key_validity_url": f"https://{self.id_server}/_matrix/identity/"
                                                 "v2/pubkey/isvalid"}]})

    async def _is_valid(self, request: web.Request) -> web.Response:
        key = request.query.get("public_key", "")
        return web.json_response({"valid": key == self.public_key
                                  and key not in self.revoked})

    def signed_invite(self, token: str, mxid: str, **extra: str) -> dict[str, Any]:
        """The ``signed`` block this server sends on binding ``mxid``."""
        signed: dict[str, Any] = sign_json({"mxid": mxid, "token": token, **extra},
                                           self.id_server, self.signing_key)
        return signed
