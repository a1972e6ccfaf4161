"""Myelin servers on loopback over real TLS: signed requests, their
authentication, the keyring and the notary.

Four HomeServers run in this process, on SQLite, started once for the module:

- A (``127.0.0.1:<port>``, an IP literal) and B (``b.test``, delegated by a
  fake ``.well-known`` to ``localhost:<port>``): TLS listeners with a
  certificate from a CA made here, each trusting it through
  ``federation_custom_ca_list``, loopback allowed (blocklist emptied);
- C: the default IP blocklist, so it may not reach loopback at all;
- D: only B in ``federation_domain_whitelist`` and B as its trusted key server,
  so it learns A's keys from B's notary endpoint.

B serves one extra test servlet that authenticates the request and says who
sent it; every listener records the paths it is asked for, so "the keyring
asked again" is counted where it would happen.
"""

from __future__ import annotations

import copy
import json
import os
import ssl
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from myelin.app.homeserver import HomeServer
from myelin.app.servlets import routes_for_resources
from myelin.config import load_config_from_dict
from myelin.events.room_versions import KNOWN_ROOM_VERSIONS
from myelin.events.signing import (
    SignatureError,
    SigningKey,
    decode_verify_key_base64,
    encode_verify_key_base64,
    sign_event,
    verify_signed_json,
)
from myelin.federation.auth import authenticate_request, sign_request_header
from myelin.federation.client import FederationError, FederationUnreachable
from myelin.federation.discovery import ServerDiscovery
from myelin.federation.keyring import Keyring
from myelin.http.request import Request
from myelin.http.routing import PathPattern, RouteTable
from myelin.http.server import HttpDispatcher, Listener, server_ssl_context
from myelin.storage.engines import open_database
from tests.federation_keys.tls import LocalCA, make_ca
from tests.support.postgres import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

WHOAMI = "/_matrix/federation/v1/myelin_test/whoami"
SPEC_VECTORS = json.loads(
    Path("/work/shared/spec/test-vectors.json").read_text(encoding="utf-8"))
# A's retired key: published in old_verify_keys, expired an hour ago.
OLD_KEY = SigningKey(os.urandom(32), "old1")
OLD_KEY_EXPIRED = int(time.time() * 1000) - 3600_000
test_routes = RouteTable("federation")


@test_routes.get(PathPattern("/_matrix/federation", ("v1",), "/myelin_test/whoami"))
@test_routes.put(PathPattern("/_matrix/federation", ("v1",), "/myelin_test/whoami"))
async def whoami(request: Request) -> dict[str, Any]:
    origin = await authenticate_request(request)
    body = await request.json() if request.method == "PUT" else None
    return {"origin": origin, "host": request.raw.headers.get("Host"), "body": body}


class RecordingDispatcher(HttpDispatcher):
    """The dispatcher, writing down every path it serves."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.paths: list[str] = []
        self.peers: list[Any] = []  # the client address of each request

    async def __call__(self, raw: web.BaseRequest) -> web.StreamResponse:
        self.paths.append(raw.path)
        self.peers.append(raw.transport.get_extra_info("peername") if raw.transport else None)
        return await super().__call__(raw)


class FakeSrv:
    async def srv(self, name: str) -> tuple[list[tuple[int, int, str, int]], float]:
        return [], 60.0


@dataclass
class Node:
    hs: HomeServer
    name: str
    port: int | None = None
    dispatcher: RecordingDispatcher | None = None

    @property
    def key_fetches(self) -> int:
        assert self.dispatcher is not None
        return self.dispatcher.paths.count("/_matrix/key/v2/server")


@dataclass
class Net:
    ca: LocalCA
    a: Node
    b: Node
    c: Node
    d: Node
    worker: Node
    workdir: str
    nodes: list[Node] = field(default_factory=list)
    strict: Node | None = None
    lax: Node | None = None

    def client_ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca.ca_cert)


async def _node(workdir: str, name: str, ca: LocalCA, *, port: int | None,
                extra: dict[str, Any], replication_port: int | None = None) -> Node:
    data: dict[str, Any] = {
        "server_name": name,
        "database": {"name": "sqlite3",
                     "args": {"database": os.path.join(workdir, f"{name}.db")}},
        "listeners": [{"port": port or free_port(), "bind_addresses": ["127.0.0.1"],
                       "tls": True, "resources": [{"names": ["federation"]}]}],
        "tls_certificate_path": ca.cert, "tls_private_key_path": ca.key,
        "federation_custom_ca_list": [ca.ca_cert],
        "federation_ip_range_blocklist": [],
        "trusted_key_servers": [],
        **extra,
    }
    config = load_config_from_dict(data)
    hs = HomeServer(config, await open_database(config.database))
    node = Node(hs, name, port)
    if port is not None:
        await hs.start()
        routes = [*routes_for_resources({"federation"}), *test_routes.routes]
        node.dispatcher = RecordingDispatcher(hs, routes)
        listener = Listener(config.listeners[0], node.dispatcher,
                            server_ssl_context(ca.cert, ca.key))
        await listener.start()
        hs.listeners.append(listener)
    if replication_port is not None:
        from myelin.config import ListenerConfig

        plain = Listener(ListenerConfig(replication_port, ["127.0.0.1"],
                                        resources=frozenset({"replication"})),
                         RecordingDispatcher(hs, routes_for_resources({"replication"})))
        await plain.start()
        hs.listeners.append(plain)
    return node


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def net() -> AsyncIterator[Net]:
    workdir = tempfile.mkdtemp(prefix="myelin-fedkeys-")
    ca = make_ca(os.path.join(workdir, "ca"))
    port_a, port_b = free_port(), free_port()
    nodes: list[Node] = []
    try:
        replication_a = free_port()
        a = await _node(workdir, f"127.0.0.1:{port_a}", ca, port=port_a, extra={
            "old_signing_keys": {"ed25519:old1": {
                "key": encode_verify_key_base64(OLD_KEY), "expired_ts": OLD_KEY_EXPIRED}},
            "worker_replication_secret": "s3cret"}, replication_port=replication_a)
        nodes.append(a)
        # A worker of A's that may not make outbound federation requests itself.
        worker = await _node(workdir, a.name, ca, port=None, extra={
            "worker_app": "synapse.app.generic_worker", "worker_name": "w1",
            "worker_replication_secret": "s3cret",
            "database": {"name": "sqlite3",
                         "args": {"database": os.path.join(workdir, "w1.db")}},
            "instance_map": {"main": {"host": "127.0.0.1", "port": replication_a}},
            "outbound_federation_restricted_to": ["main"]})
        nodes.append(worker)
        # Two that do not know the test CA: one checks certificates, one does not.
        strict = await _node(workdir, "strict.test", ca, port=None, extra={
            "federation_custom_ca_list": []})
        nodes.append(strict)
        lax = await _node(workdir, "lax.test", ca, port=None, extra={
            "federation_custom_ca_list": [], "federation_verify_certificates": False})
        nodes.append(lax)
        b = await _node(workdir, "b.test", ca, port=port_b, extra={})
        nodes.append(b)
        c = await _node(workdir, "c.test", ca, port=None, extra={
            "federation_ip_range_blocklist": None})
        nodes.append(c)
        b_key = b.hs.signing_key
        from signedjson.key import encode_verify_key_base64 as encode_signedjson_key
        from signedjson.key import get_verify_key

        port_d = free_port()
        d = await _node(workdir, "d.test", ca, port=port_d, extra={
            "federation_domain_whitelist": ["b.test"],
            "trusted_key_servers": [{"server_name": "b.test", "verify_keys": {
                f"{b_key.alg}:{b_key.version}":
                    encode_signedjson_key(get_verify_key(b_key))}}]})
        nodes.append(d)
        well_known = {"b.test": f"localhost:{port_b}", "d.test": f"localhost:{port_d}"}

        async def fetch(host: str) -> tuple[int, dict[str, str], bytes]:
            if host in well_known:
                return 200, {"cache-control": "max-age=600"}, orjson.dumps(
                    {"m.server": well_known[host]})
            return 404, {}, b""

        # b.test is a name only the fake .well-known knows (there is no DNS for it).
        for node in nodes:
            node.hs.federation_client.discovery = ServerDiscovery(fetch, FakeSrv())
        yield Net(ca, a, b, c, d, worker, workdir, nodes, strict=strict, lax=lax)
    finally:
        for node in nodes:
            if node.port is not None:
                await node.hs.stop()
            else:
                if "federation_client" in node.hs.__dict__:
                    await node.hs.federation_client.close()
                if "replication" in node.hs.__dict__:
                    await node.hs.replication.close()
            for listener in node.hs.listeners:
                await listener.stop()
            await node.hs.db.close()


async def _raw_request(net: Net, node: Node, method: str, path: str, headers: dict[str, str],
                       body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.request(
                method, f"https://127.0.0.1:{node.port}{path}", headers=headers,
                data=orjson.dumps(body) if body is not None else None,
                ssl=net.client_ssl()) as response:
            return response.status, await response.json(content_type=None)


def _header(node: Node, destination: str, method: str, uri: str, body: Any = None) -> str:
    return sign_request_header(node.name, destination, node.hs.signing_key, method, uri, body)


# -- signed requests, authenticated -------------------------------------------

async def test_a_signed_request_reaches_b_by_delegation_and_is_authenticated(
        net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    told_up: list[str] = []
    sender = net.b.hs.federation_sender
    real_server_up = sender.server_up

    def server_up(origin: str) -> None:
        told_up.append(origin)
        real_server_up(origin)

    monkeypatch.setattr(sender, "server_up", server_up)
    answer = await net.a.hs.federation_client.get_json("b.test", WHOAMI)
    assert answer["origin"] == net.a.name
    # The Host header is the delegated name (the certificate was checked for it).
    assert answer["host"] == f"localhost:{net.b.port}"
    put = await net.a.hs.federation_client.put_json(
        "b.test", WHOAMI, {"hello": "world"}, args={"q": ["x y", "z"]})
    assert put["origin"] == net.a.name and put["body"] == {"hello": "world"}
    # B's federation sender heard that A is up (its queue for A stops backing off).
    assert told_up == [net.a.name, net.a.name]


async def test_requests_to_one_destination_reuse_a_connection(net: Net) -> None:
    assert net.b.dispatcher is not None
    await net.a.hs.federation_client.get_json("b.test", WHOAMI)
    first = net.b.dispatcher.peers[-1]
    for _ in range(3):
        await net.a.hs.federation_client.get_json("b.test", WHOAMI)
    assert net.b.dispatcher.peers[-3:] == [first] * 3


async def test_b_fetches_a_key_once_then_uses_its_cache_and_database(net: Net) -> None:
    await net.a.hs.federation_client.get_json("b.test", WHOAMI)
    fetched = net.a.key_fetches
    assert fetched >= 1
    for _ in range(3):
        await net.a.hs.federation_client.get_json("b.test", WHOAMI)
    assert net.a.key_fetches == fetched
    # A fresh keyring (a restarted process) finds the key in the database.
    stored = await net.b.hs.stores.server_keys.keys_for_server(net.a.name)
    key_ids = {k.key_id for k in stored}
    own = net.a.hs.signing_key
    assert f"{own.alg}:{own.version}" in key_ids and "ed25519:old1" in key_ids
    net.b.hs.__dict__["keyring"] = Keyring(net.b.hs)
    await net.a.hs.federation_client.get_json("b.test", WHOAMI)
    assert net.a.key_fetches == fetched


async def _forget_keys(node: Node, server_name: str) -> None:
    """As if ``node`` never learnt ``server_name``'s keys (a fresh Keyring forgets memory)."""
    await node.hs.db.execute("DELETE FROM server_signing_keys WHERE server_name = ?",
                             server_name)


async def test_concurrent_lookups_for_one_server_share_one_fetch(net: Net) -> None:
    import asyncio

    await _forget_keys(net.a, "b.test")
    keyring = Keyring(net.a.hs)
    before = net.b.key_fetches
    key = net.b.hs.signing_key
    results = await asyncio.gather(*(keyring.get_key("b.test", f"{key.alg}:{key.version}",
                                                     int(time.time() * 1000))
                                     for _ in range(5)))
    assert all(r is not None for r in results)
    assert net.b.key_fetches == before + 1


async def test_a_caller_that_goes_away_does_not_cancel_the_shared_fetch(net: Net) -> None:
    import asyncio

    await _forget_keys(net.a, "b.test")
    keyring = Keyring(net.a.hs)
    key = net.b.hs.signing_key
    key_id, now = f"{key.alg}:{key.version}", int(time.time() * 1000)
    before = net.b.key_fetches
    first = asyncio.ensure_future(keyring.get_key("b.test", key_id, now))
    second = asyncio.ensure_future(keyring.get_key("b.test", key_id, now))
    await asyncio.sleep(0)
    first.cancel()
    assert await second is not None
    assert first.cancelled() and net.b.key_fetches == before + 1


@pytest.mark.parametrize("tamper", ["signature", "destination", "unknown_key", "missing",
                                    "content", "uri"])
async def test_forged_requests_are_refused_401(net: Net, tamper: str) -> None:
    uri = WHOAMI
    body: Any = {"amount": 1}
    header = _header(net.a, "b.test", "PUT", uri, body)
    if tamper == "signature":
        header = header.replace('sig="', 'sig="AAAA')
    elif tamper == "destination":
        header = _header(net.a, "other.test", "PUT", uri, body)
    elif tamper == "unknown_key":
        own = net.a.hs.signing_key
        header = header.replace(f"{own.alg}:{own.version}", "ed25519:nosuchkey")
    elif tamper == "content":
        body = {"amount": 1000}
    elif tamper == "uri":
        uri = WHOAMI + "?extra=1"
    headers = {} if tamper == "missing" else {"Authorization": header}
    status, answer = await _raw_request(net, net.b, "PUT", uri, headers, body)
    assert status == 401, answer
    assert answer["errcode"] == "M_UNAUTHORIZED"


@pytest.mark.parametrize("header", ['X-Matrix origin="unterminated',
                                    'X-Matrix origin=localhost:http,key="ed25519:1",sig=AAAA'])
async def test_malformed_headers_are_400(net: Net, header: str) -> None:
    status, answer = await _raw_request(net, net.b, "GET", WHOAMI, {"Authorization": header})
    assert status == 400, answer
    assert answer["errcode"] == "M_UNAUTHORIZED"


async def test_an_unknown_key_is_looked_up_once_not_per_request(net: Net) -> None:
    own = net.a.hs.signing_key
    header = _header(net.a, "b.test", "GET", WHOAMI).replace(
        f"{own.alg}:{own.version}", "ed25519:rotated_away")
    before = net.a.key_fetches
    for _ in range(3):
        status, _ = await _raw_request(net, net.b, "GET", WHOAMI, {"Authorization": header})
        assert status == 401
    assert net.a.key_fetches == before + 1


async def test_an_untampered_raw_request_with_unquoted_params_is_accepted(net: Net) -> None:
    header = _header(net.a, "b.test", "GET", WHOAMI).replace('"', "")
    status, answer = await _raw_request(net, net.b, "GET", WHOAMI, {"Authorization": header})
    assert status == 200 and answer["origin"] == net.a.name


async def test_federation_bodies_may_be_transaction_sized(net: Net) -> None:
    # Bigger than the client API's 1 MiB default, as a full /send transaction is.
    big = {"pdus": ["x" * 60_000] * 40}
    answer = await net.a.hs.federation_client.put_json("b.test", WHOAMI, big)
    assert answer["body"] == big
    with pytest.raises(FederationError) as e:
        await net.a.hs.federation_client.put_json("b.test", WHOAMI,
                                                  {"pdus": ["x" * 65_536] * 201})
    assert e.value.code == 413 and e.value.errcode == "M_TOO_LARGE"


async def test_remote_errors_are_federation_errors(net: Net) -> None:
    with pytest.raises(FederationError) as e:
        await net.a.hs.federation_client.get_json("b.test", "/_matrix/federation/v1/nothing")
    assert e.value.code == 404 and e.value.errcode == "M_UNRECOGNIZED"


async def test_a_worker_outside_outbound_federation_restricted_to_forwards(net: Net) -> None:
    client = net.worker.hs.federation_client
    answer = await client.put_json("b.test", WHOAMI, {"via": "main"})
    # Sent by main (A), over replication: the worker opened no connection.
    assert answer["origin"] == net.a.name and answer["body"] == {"via": "main"}
    assert client.forwarded == 1 and client.requests_sent == 0
    with pytest.raises(FederationError) as e:
        await client.get_json("b.test", "/_matrix/federation/v1/nothing")
    assert e.value.code == 404
    with pytest.raises(FederationUnreachable):
        await client.get_json("127.0.0.1:1", "/_matrix/federation/v1/version", timeout=5)


async def test_a_server_that_never_answers_is_unreachable_after_the_timeout(net: Net) -> None:
    import asyncio

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the TLS hello arrives; nothing is ever said back
        await asyncio.sleep(30)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(FederationUnreachable) as e:
            await net.a.hs.federation_client.get_json(f"127.0.0.1:{port}", WHOAMI, timeout=0.5)
        assert "Timeout" in e.value.reason
    finally:
        server.close()


async def test_a_refused_connection_is_unreachable(net: Net) -> None:
    with pytest.raises(FederationUnreachable):
        await net.a.hs.federation_client.get_json(f"127.0.0.1:{free_port()}", WHOAMI)


async def test_certificates_are_checked_unless_verification_is_off(net: Net) -> None:
    assert net.strict is not None and net.lax is not None
    path = "/_matrix/federation/v1/version"
    # The test CA is in no system store: the certificate does not verify.
    with pytest.raises(FederationUnreachable) as e:
        await net.strict.hs.federation_client.get_json(net.a.name, path)
    assert "certificate" in e.value.reason.lower()
    # federation_verify_certificates: false takes it anyway (still over TLS).
    answer = await net.lax.hs.federation_client.get_json(net.a.name, path)
    assert answer["server"]["name"] == "Myelin"
    # The custom CA list is what lets A and B trust each other.
    assert (await net.a.hs.federation_client.get_json("b.test", path))["server"]


# -- the IP blocklist ------------------------------------------------------------

async def test_default_blocklist_refuses_loopback(net: Net) -> None:
    client = net.c.hs.federation_client
    for destination in (net.a.name, f"localhost:{net.b.port}", "b.test"):
        with pytest.raises(FederationUnreachable):
            await client.get_json(destination, "/_matrix/federation/v1/version")
    assert client.requests_sent == 2  # the hostnames got to the resolver; the IP did not
    # The same server, with the blocklist emptied, gets there.
    version = await net.a.hs.federation_client.get_json(net.a.name,
                                                        "/_matrix/federation/v1/version")
    assert version["server"]["name"] == "Myelin"


async def test_domain_whitelist_refuses_other_servers(net: Net) -> None:
    with pytest.raises(FederationUnreachable):
        await net.d.hs.federation_client.get_json(net.a.name, "/_matrix/federation/v1/version")
    # Inbound: A is not on D's list: 403, and D does not even fetch A's key.
    fetched = net.a.key_fetches
    with pytest.raises(FederationError) as e:
        await net.a.hs.federation_client.get_json("d.test", WHOAMI)
    assert e.value.code == 403 and e.value.errcode == "M_FORBIDDEN"
    assert net.a.key_fetches == fetched


# -- key server and notary -------------------------------------------------------

async def test_key_server_publishes_current_and_old_keys(net: Net) -> None:
    status, body = await _raw_request(net, net.a, "GET", "/_matrix/key/v2/server", {})
    assert status == 200
    own = net.a.hs.signing_key
    key_id = f"{own.alg}:{own.version}"
    assert body["server_name"] == net.a.name
    assert body["old_verify_keys"] == {"ed25519:old1": {
        "key": encode_verify_key_base64(OLD_KEY), "expired_ts": OLD_KEY_EXPIRED}}
    verify_signed_json(body, net.a.name, decode_verify_key_base64(
        "ed25519", own.version, body["verify_keys"][key_id]["key"]))
    assert body["valid_until_ts"] > time.time() * 1000


async def test_notary_answers_for_a_countersigned_post_and_get(net: Net) -> None:
    own_b = net.b.hs.signing_key
    b_key = decode_verify_key_base64("ed25519", own_b.version,
                                     (await net.b.hs.keyring.key_responses("b.test", {}))[0]
                                     ["verify_keys"][f"ed25519:{own_b.version}"]["key"])
    own_a = net.a.hs.signing_key
    for method, path, body in (
            ("POST", "/_matrix/key/v2/query", {"server_keys": {net.a.name: {}}}),
            ("GET", f"/_matrix/key/v2/query/{net.a.name}", None)):
        status, answer = await _raw_request(net, net.b, method, path, {}, body)
        assert status == 200, answer
        [response] = answer["server_keys"]
        assert response["server_name"] == net.a.name
        a_key = decode_verify_key_base64(
            "ed25519", own_a.version, response["verify_keys"][f"ed25519:{own_a.version}"]["key"])
        verify_signed_json(response, net.a.name, a_key)
        verify_signed_json(response, "b.test", b_key)


async def test_keys_learnt_from_a_notary(net: Net) -> None:
    own = net.a.hs.signing_key
    key = await net.d.hs.keyring.get_key(net.a.name, f"{own.alg}:{own.version}",
                                         int(time.time() * 1000))
    assert key is not None
    [stored] = [k for k in await net.d.hs.stores.server_keys.keys_for_server(net.a.name)
                if k.key_id == f"{own.alg}:{own.version}"]
    assert stored.from_server == "b.test"


async def test_notary_bad_request(net: Net) -> None:
    status, answer = await _raw_request(net, net.b, "POST", "/_matrix/key/v2/query", {},
                                        {"server_keys": ["x"]})
    assert status == 400 and answer["errcode"] == "M_BAD_JSON"


async def test_version_is_unauthenticated(net: Net) -> None:
    status, answer = await _raw_request(net, net.b, "GET", "/_matrix/federation/v1/version", {})
    assert status == 200
    assert answer["server"]["name"] == "Myelin" and answer["server"]["version"]


# -- event signatures ------------------------------------------------------------

def _event(sender: str, **extra: Any) -> dict[str, Any]:
    return {"type": "m.room.message", "room_id": "!r:b.test", "sender": sender,
            "content": {"body": "hi"}, "depth": 3, "prev_events": [], "auth_events": [],
            "origin_server_ts": int(time.time() * 1000), **extra}


async def test_event_signatures_verified_with_fetched_keys(net: Net) -> None:
    own = net.a.hs.signing_key
    key = SigningKey(bytes(own), own.version, own.alg)
    v11 = KNOWN_ROOM_VERSIONS["11"]
    event = sign_event(_event(f"@u:{net.a.name}"), net.a.name, key, v11)
    await net.b.hs.keyring.verify_event_signatures(event, v11)
    forged = copy.deepcopy(event)
    forged["sender"] = "@u:b.test"  # now B's signature is required, and absent
    with pytest.raises(SignatureError):
        await net.b.hs.keyring.verify_event_signatures(forged, v11)
    tampered = copy.deepcopy(event)
    tampered["depth"] = 4  # the redacted form changes: the signature breaks
    with pytest.raises(SignatureError):
        await net.b.hs.keyring.verify_event_signatures(tampered, v11)
    # v1: the event id's server must sign too.
    v1 = KNOWN_ROOM_VERSIONS["1"]
    old = sign_event(_event(f"@u:{net.a.name}", event_id="$x:b.test"), net.a.name, key, v1)
    with pytest.raises(SignatureError):
        await net.b.hs.keyring.verify_event_signatures(old, v1)
    ours = sign_event(_event(f"@u:{net.a.name}", event_id=f"$x:{net.a.name}"), net.a.name,
                      key, v1)
    await net.b.hs.keyring.verify_event_signatures(ours, v1)


async def test_an_old_key_verifies_events_from_before_it_expired(net: Net) -> None:
    v11, v4 = KNOWN_ROOM_VERSIONS["11"], KNOWN_ROOM_VERSIONS["4"]
    sender = f"@u:{net.a.name}"
    before = sign_event(_event(sender, origin_server_ts=OLD_KEY_EXPIRED - 60_000), net.a.name,
                        OLD_KEY, v11)
    await net.b.hs.keyring.verify_event_signatures(before, v11)
    after = sign_event(_event(sender, origin_server_ts=OLD_KEY_EXPIRED + 60_000), net.a.name,
                       OLD_KEY, v11)
    with pytest.raises(SignatureError):
        await net.b.hs.keyring.verify_event_signatures(after, v11)
    # Room versions before 5 do not enforce key validity.
    old_room = sign_event(_event(sender, origin_server_ts=OLD_KEY_EXPIRED + 60_000), net.a.name,
                          OLD_KEY, v4)
    await net.b.hs.keyring.verify_event_signatures(old_room, v4)


async def test_spec_signing_vectors_verify_with_a_stored_key(net: Net) -> None:
    from myelin.storage.stores.server_keys import StoredServerKey

    vectors = SPEC_VECTORS
    key = vectors["signing_key"]
    await net.b.hs.stores.server_keys.store_keys([StoredServerKey(
        "domain", key["key_id"], key["derived_public_key_unpadded_base64"], 2**62, False,
        0, "domain")])
    keyring = Keyring(net.b.hs)  # reads "domain"'s key from the database
    for vector in vectors["json_signing"]:
        await keyring.verify_json("domain", vector["expected"], valid_at_ts=0)
        with pytest.raises(SignatureError):
            await keyring.verify_json("domain", {**vector["expected"], "extra": 1},
                                      valid_at_ts=0)
    for vector in vectors["event_signing"]:
        await keyring.verify_event_signatures(vector["expected"], KNOWN_ROOM_VERSIONS["10"])
