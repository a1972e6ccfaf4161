"""The federation sender over the real federation client: signed HTTPS
transactions to a recording remote server on loopback (TLS from the session's
CA, ``localhost:<port>``), which goes down and comes back.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from signedjson.key import get_verify_key

from myelin.app.homeserver import HomeServer
from myelin.config import load_config_from_dict
from myelin.domain import Requester
from myelin.storage.engines import open_database
from tests.federation.sender_support import LoopbackRemote, eventually
from tests.support.federation import federation_settings, local_ca

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVER = "sender.test"


class Env:
    def __init__(self, hs: HomeServer, remote: LoopbackRemote) -> None:
        self.hs = hs
        self.remote = remote

    async def room_with_remote(self) -> tuple[Requester, str]:
        user_id = await self.hs.registration.register_user("alice", None)
        alice = Requester(user_id, "DEV", "token")
        room_id, _ = await self.hs.room_creation.create_room(alice, {"preset": "public_chat"})
        bob = f"@bob:{self.remote.server_name}"
        await self.hs.event_creation.send(bob, room_id, "m.room.member",
                                          {"membership": "join"}, state_key=bob)
        return alice, room_id

    async def say(self, who: Requester, room_id: str, body: str) -> None:
        await self.hs.event_creation.send(who.user_id, room_id, "m.room.message",
                                          {"msgtype": "m.text", "body": body})

    def bodies(self) -> list[str]:
        return [p["content"]["body"] for p in self.remote.pdus()
                if p["type"] == "m.room.message"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    ca = local_ca()
    path = os.path.join(str(tmp_path_factory.mktemp("loopback")), "hs.db")
    config = load_config_from_dict({
        "server_name": SERVER,
        "database": {"name": "sqlite3", "args": {"database": path}},
        "federation": {"destination_min_retry_interval": "300ms"},
        "listeners": [],
        **federation_settings(ca),
    })
    hs = HomeServer(config, await open_database(config.database))
    verify_key = get_verify_key(hs.signing_key)

    def key_of(origin: str) -> Any:
        assert origin == SERVER
        return verify_key

    remote = LoopbackRemote(ca, key_of)
    await remote.start()
    await hs.start()
    try:
        yield Env(hs, remote)
    finally:
        await hs.stop()
        await hs.db.close()
        await remote.stop()


async def test_messages_reach_the_remote_as_signed_transactions_and_catch_up(
        env: Env) -> None:
    alice, room_id = await env.room_with_remote()
    await env.say(alice, room_id, "over https")
    await eventually(lambda: "over https" in env.bodies(), what="the transaction")
    assert env.remote.refused == []
    (txn,) = [r for r in env.remote.received if r.pdus]
    assert txn.body["origin"] == SERVER
    # The remote goes away: the sender backs off, then catches up when it is back.
    await env.remote.stop()
    for i in range(3):
        await env.say(alice, room_id, f"while away {i}")
    store = env.hs.stores.federation_sender

    async def backing_off() -> bool:
        state = await store.get_destination(env.remote.server_name)
        return state is not None and state.retry_interval > 0

    await eventually(backing_off, what="a backoff")
    await env.remote.start()
    await eventually(lambda: "while away 2" in env.bodies(), what="the catch-up")
    assert env.bodies() == ["over https", "while away 2"]
    await env.say(alice, room_id, "back to normal")
    await eventually(lambda: "back to normal" in env.bodies())
    assert env.remote.refused == []
    ids = [r.txn_id for r in env.remote.received]
    assert len(ids) == len(set(ids))
