"""A bridge on npm's ``matrix-appservice`` (the HTTP layer of
``matrix-appservice-bridge``) with matrix-js-sdk clients for its puppets
(tests/js/scenarios/appservice.mjs), against a real server."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest

from tests.clients.jsclient import run_js
from tests.support.appservice_bridge import AS_TOKEN, HS_TOKEN, PUPPET_PREFIX, write_registration
from tests.support.postgres import free_port
from tests.support.server import SERVER_NAME, ServerProcess, launch_server


@pytest.fixture(scope="module")
def bridged() -> Iterator[tuple[ServerProcess, int]]:
    workdir = tempfile.mkdtemp(prefix="myelin-js-as-")
    port = free_port()
    hs = launch_server("sqlite", None,
                       {"app_service_config_files": [write_registration(workdir, port)]})
    try:
        yield hs, port
    finally:
        code = hs.stop()
        if code not in (0, None):
            print(hs.log())
        shutil.rmtree(hs.workdir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


def test_js_bridge_creates_puppets_and_receives_the_room_in_order(
        bridged: tuple[ServerProcess, int]) -> None:
    hs, port = bridged
    alice = hs.register("jsalice")
    r = run_js("appservice", baseUrl=hs.base_url, port=port, asToken=AS_TOKEN,
               hsToken=HS_TOKEN, serverName=SERVER_NAME, userId=alice["user_id"],
               accessToken=alice["access_token"], puppetPrefix=PUPPET_PREFIX)
    ghost = r["ghost"]
    # The invite of an unknown puppet was a user query, which created it.
    assert r["queried"] == [ghost]
    events = r["roomEvents"]
    # Its invite and join, then every message, in order, each once.
    members = [(e["state_key"], e["membership"]) for e in events if e["type"] == "m.room.member"]
    assert members == [(ghost, "invite"), (ghost, "join")]
    messages = [e for e in events if e["type"] == "m.room.message"]
    assert [e["event_id"] for e in messages] == r["sent"]
    assert [e["sender"] for e in messages] == [alice["user_id"], ghost] * 3
    assert [e["body"] for e in messages] == [f"{who} {i}" for i in range(3)
                                             for who in ("alice", "puppet")]
