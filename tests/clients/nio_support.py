"""Helpers for tests that drive the server with matrix-nio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    KeysQueryResponse,
    KeysUploadResponse,
    LoginResponse,
    MegolmEvent,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from tests.support.server import ServerProcess

PASSWORD = "correct horse"


@asynccontextmanager
async def logged_in_pair(server: ServerProcess, *, config: AsyncClientConfig | None = None,
                         store_dir: str | None = None,
                         ) -> AsyncIterator[tuple[AsyncClient, AsyncClient]]:
    """alice and bob, registered and logged in with nio; closed afterwards."""
    import os

    made: list[AsyncClient] = []
    try:
        for name in ("alice", "bob"):
            server.register(name, PASSWORD)
            kwargs: dict[str, Any] = {}
            if config is not None:
                kwargs["config"] = config
            if store_dir is not None:
                store = os.path.join(store_dir, name)
                os.makedirs(store)
                kwargs["store_path"] = store
            client = AsyncClient(server.base_url, f"@{name}:{server.server_name}", **kwargs)
            made.append(client)
            login = await client.login(PASSWORD, device_name=f"{name}'s nio")
            assert isinstance(login, LoginResponse), login
        yield made[0], made[1]
    finally:
        for client in made:
            await client.close()


def ok(response: Any, kind: type) -> Any:
    """Assert nio parsed a success response of ``kind``; return it."""
    assert isinstance(response, kind), response
    return response


ENCRYPTION = {"type": "m.room.encryption", "state_key": "",
              "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


async def encrypted_exchange(alice: AsyncClient, bob: AsyncClient, body: str,
                             ) -> tuple[str, RoomMessageText, SyncResponse, int]:
    """Both upload keys; Alice makes an encrypted room, Bob joins, Alice sends
    ``body``. Returns the room, the event as Bob decrypted it, Bob's last sync
    and how many one-time keys Bob had uploaded. Fails if Bob gets it undecryptable."""
    for client in (alice, bob):
        ok(await client.sync(timeout=0), SyncResponse)
        assert client.should_upload_keys
        uploaded = ok(await client.keys_upload(), KeysUploadResponse)
    bob_otks = uploaded.signed_curve25519_count
    room = ok(await alice.room_create(invite=[bob.user_id], initial_state=[ENCRYPTION]),
              RoomCreateResponse).room_id
    ok(await bob.sync(timeout=0), SyncResponse)
    ok(await bob.join(room), JoinResponse)
    ok(await alice.sync(timeout=0), SyncResponse)
    assert alice.rooms[room].encrypted
    if alice.should_query_keys:
        ok(await alice.keys_query(), KeysQueryResponse)
    assert bob.device_id in alice.device_store[bob.user_id]
    sent = ok(await alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": body},
                                    ignore_unverified_devices=True), RoomSendResponse)
    decrypted: list[RoomMessageText] = []
    undecryptable: list[MegolmEvent] = []
    for _ in range(10):
        sync = ok(await bob.sync(timeout=2000), SyncResponse)
        joined = sync.rooms.join.get(room)
        for event in joined.timeline.events if joined else []:
            if isinstance(event, RoomMessageText) and event.event_id == sent.event_id:
                decrypted.append(event)
            elif isinstance(event, MegolmEvent):
                undecryptable.append(event)
        if decrypted or undecryptable:
            break
    assert not undecryptable, undecryptable
    assert [e.body for e in decrypted] == [body]
    assert decrypted[0].decrypted and decrypted[0].sender == alice.user_id
    return room, decrypted[0], sync, bob_otks
