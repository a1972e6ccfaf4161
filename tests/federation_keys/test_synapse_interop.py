"""Myelin's signing, key server and request authentication against a real Synapse.

A Synapse (tests/support/synapse_peer.py, behind nginx with the session CA)
and one in-process Myelin named ``localhost:<port>`` with a TLS listener from
the same CA, serving its key server and a stand-in ``/query/profile`` that
authenticates the request and answers who asked. Synapse checks our X-Matrix
signatures with the key it fetches from us; we check Synapse's with the key
our keyring fetches from it.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from myelin.app.homeserver import HomeServer
from myelin.app.servlets import routes_for_resources
from myelin.config import load_config_from_dict
from myelin.federation.auth import authenticate_request
from myelin.federation.client import FederationError
from myelin.http.request import Request
from myelin.http.routing import PathPattern, RouteTable
from myelin.http.server import Listener, server_ssl_context
from myelin.storage.engines import open_database
from tests.federation_keys.test_trust import RecordingDispatcher
from tests.support.federation import local_ca
from tests.support.postgres import free_port
from tests.support.server import http
from tests.support.synapse_peer import SynapsePeer, launch_synapse_peer, synapse_python

pytestmark = pytest.mark.asyncio(loop_scope="module")

stand_in = RouteTable("federation")


@stand_in.get(PathPattern("/_matrix/federation", ("v1",), "/query/profile"))
async def profile(request: Request) -> dict[str, Any]:
    origin = await authenticate_request(request)
    return {"displayname": f"asked by {origin}"}


class Pair:
    def __init__(self, synapse: SynapsePeer, hs: HomeServer, name: str,
                 dispatcher: RecordingDispatcher) -> None:
        self.synapse = synapse
        self.hs = hs
        self.name = name
        self.dispatcher = dispatcher


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair() -> AsyncIterator[Pair]:
    python, why = synapse_python()
    if python is None:
        pytest.skip(why)
    ca = local_ca()
    synapse = launch_synapse_peer(ca)
    workdir = tempfile.mkdtemp(prefix="myelin-interop-")
    port = free_port()
    name = f"localhost:{port}"
    config = load_config_from_dict({
        "server_name": name,
        "database": {"name": "sqlite3", "args": {"database": os.path.join(workdir, "hs.db")}},
        "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "tls": True,
                       "resources": [{"names": ["federation"]}]}],
        "tls_certificate_path": ca.cert_pem, "tls_private_key_path": ca.key_pem,
        "federation_custom_ca_list": [ca.ca_pem], "federation_ip_range_blocklist": [],
        "trusted_key_servers": []})
    hs = HomeServer(config, await open_database(config.database))
    try:
        await hs.start()
        routes = [*stand_in.routes, *routes_for_resources({"keys"})]
        dispatcher = RecordingDispatcher(hs, routes)
        listener = Listener(config.listeners[0], dispatcher,
                            server_ssl_context(ca.cert_pem, ca.key_pem))
        await listener.start()
        hs.listeners.append(listener)
        yield Pair(synapse, hs, name, dispatcher)
    finally:
        await hs.stop()
        for listener in hs.listeners:
            await listener.stop()
        await hs.db.close()
        synapse.close()


async def test_synapse_accepts_our_signed_requests(pair: Pair) -> None:
    login = pair.synapse.register("alice")
    user_id = login["user_id"]
    status, _ = http("PUT", pair.synapse.url(
        f"/_matrix/client/v3/profile/{urllib.parse.quote(user_id)}/displayname"),
        {"displayname": "Alice at Synapse"}, token=login["access_token"])
    assert status == 200
    client = pair.hs.federation_client
    answer = await client.get_json(pair.synapse.server_name,
                                   "/_matrix/federation/v1/query/profile",
                                   {"user_id": user_id, "field": "displayname"})
    assert answer == {"displayname": "Alice at Synapse"}
    # Synapse fetched our key to check the signature.
    assert "/_matrix/key/v2/server" in pair.dispatcher.paths
    with pytest.raises(FederationError) as e:
        await client.get_json(pair.synapse.server_name, "/_matrix/federation/v1/query/profile",
                              {"user_id": f"@nobody:{pair.synapse.server_name}"})
    assert e.value.code == 404


async def test_we_authenticate_synapse_requests(pair: Pair) -> None:
    login = pair.synapse.register("bob")
    # In a thread: Synapse calls back into this process's event loop.
    status, body = await asyncio.to_thread(http, "GET", pair.synapse.url(
        f"/_matrix/client/v3/profile/{urllib.parse.quote('@someone:' + pair.name)}"),
        token=login["access_token"])
    assert status == 200, body
    assert body["displayname"] == f"asked by {pair.synapse.server_name}"
    # Our keyring fetched Synapse's key (and keeps it).
    stored = await pair.hs.stores.server_keys.keys_for_server(pair.synapse.server_name)
    assert stored and stored[0].from_server == pair.synapse.server_name


async def test_synapse_key_server_answers_our_keyring(pair: Pair) -> None:
    import time

    answer = await pair.hs.federation_client.get_json(
        pair.synapse.server_name, "/_matrix/key/v2/server")
    key_id = next(iter(answer["verify_keys"]))
    assert await pair.hs.keyring.get_key(pair.synapse.server_name, key_id,
                                         int(time.time() * 1000)) is not None
