"""End-to-end encryption through a real client library: matrix-nio, on both engines.

The key APIs are driven through nio's own requests and response parsers
(upload, query, claim, changes). With ``matrix-nio[e2e]`` (vodozemac) installed,
nio then does real Olm/Megolm: Alice sends a message to an encrypted room,
which shares a Megolm session with Bob's device over Olm (claiming one of his
one-time keys), and Bob decrypts it.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    KeysClaimResponse,
    KeysQueryResponse,
    KeysUploadResponse,
    RoomCreateResponse,
    SyncResponse,
)
from nio.api import Api
from nio.crypto import ENCRYPTION_ENABLED as NIO_HAS_E2E

from tests.clients.nio_support import encrypted_exchange, logged_in_pair, ok
from tests.support.server import ServerProcess

# MYELIN_TEST_NIO_PLAIN=1 runs the key API test as a client without Olm would.
ENCRYPTION_ENABLED = NIO_HAS_E2E and not os.environ.get("MYELIN_TEST_NIO_PLAIN")



@pytest.fixture
async def clients(server: ServerProcess, tmp_path: os.PathLike[str],
                  ) -> AsyncIterator[tuple[AsyncClient, AsyncClient]]:
    config = AsyncClientConfig(encryption_enabled=ENCRYPTION_ENABLED, store_sync_tokens=False)
    async with logged_in_pair(server, config=config, store_dir=str(tmp_path)) as pair:
        yield pair


def _device_keys(client: AsyncClient, n: int) -> dict[str, Any]:
    return {"user_id": client.user_id, "device_id": client.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"curve25519:{client.device_id}": f"curve{n}",
                     f"ed25519:{client.device_id}": f"ed{n}"},
            "signatures": {}}


async def _raw(client: AsyncClient, method: str, path: str, body: Any = None) -> Any:
    """A request nio has no method for; its JSON answer."""
    response = await client.send(method, f"/_matrix/client/v3{path}",
                                 None if body is None else json.dumps(body),
                                 headers={"Authorization": f"Bearer {client.access_token}"})
    assert response.status == 200, await response.text()
    return await response.json()


async def test_nio_key_apis(server: ServerProcess,
                            clients: tuple[AsyncClient, AsyncClient]) -> None:
    alice, bob = clients
    room = ok(await alice.room_create(invite=[bob.user_id]), RoomCreateResponse).room_id
    ok(await bob.join(room), JoinResponse)
    since = ok(await alice.sync(timeout=0), SyncResponse).next_batch

    if ENCRYPTION_ENABLED:
        # nio's Olm account makes and signs the keys; /sync tells it what to upload.
        ok(await bob.sync(timeout=0), SyncResponse)
        assert bob.should_upload_keys
        uploaded = ok(await bob.keys_upload(), KeysUploadResponse)
        assert uploaded.signed_curve25519_count > 0
        otk_count = uploaded.signed_curve25519_count
    else:
        body = {"device_keys": _device_keys(bob, 1),
                "one_time_keys": {f"signed_curve25519:K{i}": {"key": f"k{i}"}
                                  for i in range(3)}}
        counts = await _raw(bob, "POST", "/keys/upload", body)
        otk_count = counts["one_time_key_counts"]["signed_curve25519"]
        assert otk_count == 3

    # Alice hears of Bob's device in /sync and through /keys/changes.
    sync = ok(await alice.sync(timeout=0, since=since), SyncResponse)
    assert bob.user_id in sync.device_list.changed
    changes = await _raw(alice, "GET", f"/keys/changes?from={since}&to={sync.next_batch}")
    assert bob.user_id in changes["changed"]

    # Query through nio's own request and response parser.
    # (nio's keys_query() only asks about members of encrypted rooms; this one is not.)
    method, path, data = Api.keys_query(alice.access_token, {bob.user_id})
    query = ok(await alice._send(KeysQueryResponse, method, path, data), KeysQueryResponse)
    device = query.device_keys[bob.user_id][bob.device_id]
    assert device["unsigned"]["device_display_name"] == "bob's nio"

    # Claim one one-time key through nio's request and parser: exactly once.
    claims = {bob.user_id: [bob.device_id]}
    method, path, data = Api.keys_claim(alice.access_token, claims)
    claimed = ok(await alice._send(KeysClaimResponse, method, path, data), KeysClaimResponse)
    keys = claimed.one_time_keys[bob.user_id][bob.device_id]
    assert len(keys) == 1 and next(iter(keys)).startswith("signed_curve25519:")
    second = ok(await alice._send(KeysClaimResponse, method, path, data), KeysClaimResponse)
    assert second.one_time_keys[bob.user_id][bob.device_id].keys() != keys.keys()
    assert (await bob.sync(timeout=0)).device_key_count.signed_curve25519 == otk_count - 2


@pytest.mark.skipif(not ENCRYPTION_ENABLED,
                    reason="needs matrix-nio[e2e] (vodozemac); MYELIN_TEST_NIO_PLAIN unset")
async def test_nio_encrypted_message(server: ServerProcess,
                                     clients: tuple[AsyncClient, AsyncClient]) -> None:
    alice, bob = clients
    _, _, sync, bob_otks = await encrypted_exchange(alice, bob, "a secret for bob")
    # One of Bob's one-time keys went into Alice's Olm session with him.
    assert sync.device_key_count.signed_curve25519 == bob_otks - 1
