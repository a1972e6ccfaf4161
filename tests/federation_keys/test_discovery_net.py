"""Server discovery against real servers on loopback: a DNS server answering
SRV queries (dnspython's resolver pointed at it) and an HTTPS server with a
``/.well-known/matrix/server`` (fetched by the federation client, TLS checked
against a CA made here)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import dns.message
import dns.rcode
import dns.rrset
import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from myelin.app.homeserver import HomeServer
from myelin.config import load_config_from_dict
from myelin.federation.discovery import DnsSrvResolver, ServerAddress, ServerDiscovery
from myelin.http.server import server_ssl_context
from myelin.storage.engines import open_database
from tests.federation_keys.tls import make_ca
from tests.support.postgres import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

SRV_RECORDS = {
    "_matrix-fed._tcp.deleg.test.": "10 5 8449 localhost.",
    "_matrix._tcp.old.test.": "10 5 8450 legacy.test.",
}


class FakeDns(asyncio.DatagramProtocol):
    """Answers SRV queries from SRV_RECORDS, NXDOMAIN otherwise."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.queries: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        name = query.question[0].name.to_text()
        self.queries.append(name)
        if name in SRV_RECORDS:
            response.answer.append(dns.rrset.from_text(name, 300, "IN", "SRV",
                                                       SRV_RECORDS[name]))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(response.to_wire(), addr)


class Env:
    def __init__(self, hs: HomeServer, dns_server: FakeDns, dns_port: int,
                 well_known: dict[str, Any], hits: list[str]) -> None:
        self.hs = hs
        self.dns = dns_server
        self.dns_port = dns_port
        self.well_known = well_known
        self.hits = hits

    def discovery(self) -> ServerDiscovery:
        client = self.hs.federation_client
        return ServerDiscovery(client._fetch_well_known,
                               DnsSrvResolver([("127.0.0.1", self.dns_port)]))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env() -> AsyncIterator[Env]:
    workdir = tempfile.mkdtemp(prefix="myelin-discovery-")
    ca = make_ca(os.path.join(workdir, "ca"))
    loop = asyncio.get_running_loop()
    dns_port = free_port()
    transport, dns_server = await loop.create_datagram_endpoint(
        FakeDns, local_addr=("127.0.0.1", dns_port))
    # The .well-known document of "localhost" (what the handler answers).
    well_known: dict[str, Any] = {"status": 200, "body": {"m.server": "deleg.test"},
                                  "headers": {"Cache-Control": "max-age=600"}}
    hits: list[str] = []

    async def redirect(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        raise web.HTTPFound(well_known.get("redirect", "/well-known-real"))

    async def real(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        return web.Response(status=well_known["status"], body=orjson.dumps(well_known["body"]),
                            headers=well_known["headers"], content_type="application/json")

    app = web.Application()
    app.router.add_get("/.well-known/matrix/server", redirect)
    app.router.add_get("/well-known-real", real)
    runner = web.AppRunner(app)
    await runner.setup()
    https_port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", https_port,
                       ssl_context=server_ssl_context(ca.cert, ca.key))
    await site.start()
    config = load_config_from_dict({
        "server_name": "me.test",
        "database": {"name": "sqlite3", "args": {"database": os.path.join(workdir, "hs.db")}},
        "listeners": [{"port": free_port()}],
        "federation_custom_ca_list": [ca.ca_cert], "federation_ip_range_blocklist": [],
        "trusted_key_servers": []})
    hs = HomeServer(config, await open_database(config.database))
    hs.federation_client.well_known_port = https_port
    try:
        yield Env(hs, dns_server, dns_port, well_known, hits)
    finally:
        await hs.federation_client.close()
        await hs.db.close()
        await runner.cleanup()
        transport.close()


async def test_srv_records_from_a_real_dns_server(env: Env) -> None:
    resolver = DnsSrvResolver([("127.0.0.1", env.dns_port)])
    records, ttl = await resolver.srv("_matrix-fed._tcp.deleg.test")
    assert records == [(10, 5, "localhost", 8449)] and ttl == 300
    assert (await resolver.srv("_matrix-fed._tcp.nothing.test"))[0] == []


async def test_well_known_fetched_over_tls_following_redirects_and_cached(env: Env) -> None:
    discovery = env.discovery()
    before = len(env.hits)
    assert await discovery.delegated_name("localhost") == "deleg.test"
    assert env.hits[before:] == ["/.well-known/matrix/server", "/well-known-real"]
    assert await discovery.delegated_name("localhost") == "deleg.test"
    assert len(env.hits) == before + 2  # cached (max-age=600)


async def test_delegation_then_srv_of_the_delegated_name(env: Env) -> None:
    # localhost → .well-known "deleg.test" → SRV _matrix-fed._tcp.deleg.test → localhost:8449;
    # Host header and certificate name stay the delegated name.
    assert await env.discovery().resolve("localhost") == [
        ServerAddress("localhost", 8449, "deleg.test", "deleg.test")]


async def test_deprecated_srv_when_well_known_fails(env: Env) -> None:
    env.well_known.update(status=500, body={})
    try:
        discovery = env.discovery()
        assert await discovery.delegated_name("localhost") is None
        env.well_known["body"] = {"m.server": "old.test"}
        env.well_known["status"] = 200
        # The failure is cached (backoff): no delegation yet.
        before = len(env.hits)
        assert await discovery.resolve("localhost") == [
            ServerAddress("localhost", 8448, "localhost", "localhost")]
        assert len(env.hits) == before
        # A fresh discovery sees the delegation, and old.test's _matrix._tcp record.
        assert await env.discovery().resolve("localhost") == [
            ServerAddress("legacy.test", 8450, "old.test", "old.test")]
        assert "_matrix-fed._tcp.old.test." in env.dns.queries
    finally:
        env.well_known.update(status=200, body={"m.server": "deleg.test"})


@pytest.mark.parametrize("target", ["http://localhost:{port}/well-known-real",
                                    "https://127.0.0.1:{port}/well-known-real",
                                    "/.well-known/matrix/server"])
async def test_unsafe_or_looping_redirects_are_not_followed(env: Env, target: str) -> None:
    port = env.hs.federation_client.well_known_port
    env.well_known["redirect"] = target.format(port=port)
    # 127.0.0.1 is allowed by this client; one that blocks loopback refuses the hop.
    client = env.hs.federation_client
    saved = client.ip_filter
    if "127.0.0.1" in target:
        client.ip_filter = type(saved)(
            [ipaddress.ip_network("127.0.0.0/8")], [])
    try:
        before = len(env.hits)
        assert await env.discovery().delegated_name("localhost") is None
        assert "/well-known-real" not in env.hits[before:]
    finally:
        client.ip_filter = saved
        del env.well_known["redirect"]
