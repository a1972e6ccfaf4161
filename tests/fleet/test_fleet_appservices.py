"""Application services in a fleet: the background worker is the instance
``notify_appservices_from_worker`` names, so it alone sends transactions. A
mautrix bridge behind the fleet's nginx registers a puppet and sends as it
through the generic workers, and receives every event of the room once, in
order, whichever persister wrote it, and typing from the stream writer."""

from __future__ import annotations

import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterator

import pytest
from mautrix.types import RoomID

from tests.support.appservice_bridge import Bridge, puppet, write_registration
from tests.support.fleet import Fleet, User
from tests.support.postgres import PostgresServer, free_port

SENDER = "background_worker"


@pytest.fixture(scope="module")
def setup(postgres_server: PostgresServer) -> Iterator[tuple[Fleet, Bridge]]:
    workdir = tempfile.mkdtemp(prefix="myelin-fleet-as-")
    port = free_port()
    path = write_registration(workdir, port)
    running = Fleet(postgres_server, extra_shared={
        "app_service_config_files": [path], "notify_appservices_from_worker": SENDER})
    bridge: Bridge | None = None
    try:
        running.start()
        bridge = Bridge(running.base_url, port, workdir)
        bridge.start()
        yield running, bridge
    finally:
        if bridge is not None:
            bridge.close()
        running.stop()
        errors = running.all_errors()
        if errors:
            print(f"ERROR lines in the fleet's logs ({running.workdir}):\n{errors}")
        else:
            running.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def test_one_worker_delivers_every_room_event_once_in_order(
        setup: tuple[Fleet, Bridge]) -> None:
    fleet, bridge = setup
    alice = User.register(fleet, "alice")
    ghost = puppet("fleet_alice")
    bridge.run(bridge.intent(ghost).ensure_registered())
    # Several rooms, so both event persisters write some of the events.
    rooms = [alice.create_room() for _ in range(4)]
    expected: dict[str, list[str]] = {}
    for room in rooms:
        alice.ok("POST", f"/rooms/{urllib.parse.quote(room)}/invite", {"user_id": ghost})
        bridge.run(bridge.intent(ghost).ensure_joined(RoomID(room)))
        expected[room] = []
    for n in range(3):
        for room in rooms:
            expected[room].append(alice.send(room, f"alice {n}"))
            expected[room].append(str(bridge.run(
                bridge.intent(ghost).send_text(RoomID(room), f"ghost {n}"))))
    for room in rooms:
        got = bridge.wait_for(lambda room=room: len(bridge.room_events(room)) >= 6 and
                              bridge.room_events(room))
        assert [e["event_id"] for e in got] == expected[room]
    time.sleep(1.0)  # nothing else comes: no second instance sends them too
    for room in rooms:
        assert [e["event_id"] for e in bridge.room_events(room)] == expected[room]
    # Typing, written by the stream writer, reaches the bridge through the sender.
    room = rooms[0]
    alice.ok("PUT", f"/rooms/{urllib.parse.quote(room)}/typing/"
             f"{urllib.parse.quote(alice.user_id)}", {"typing": True, "timeout": 30000})
    assert bridge.wait_for(lambda: [e for e in bridge.ephemeral
                                    if e["type"] == "m.typing" and e.get("room_id") == room
                                    and alice.user_id in e["content"]["user_ids"]])
