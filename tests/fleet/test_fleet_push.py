"""Push in a fleet: two pusher instances share the users by a stable hash;
every notification reaches the gateway exactly once, whichever worker the
pusher was set on and whichever persister wrote the event."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from myelin.app.roles import shard_index
from tests.support.fleet import Fleet, User
from tests.support.postgres import PostgresServer
from tests.support.push_gateway import PushGateway

PUSHERS = ["generic_worker1", "generic_worker2"]


@pytest.fixture(scope="module")
def gateway() -> Iterator[PushGateway]:
    gw = PushGateway()
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def fleet(postgres_server: PostgresServer) -> Iterator[Fleet]:
    running = Fleet(postgres_server, extra_shared={"pusher_instances": PUSHERS,
                                                   "ip_range_blocklist": []})
    try:
        running.start()
        yield running
    finally:
        running.stop()
        errors = running.all_errors()
        if errors:
            print(f"ERROR lines in the fleet's logs ({running.workdir}):\n{errors}")
        else:
            running.cleanup()


def user_pushed_by(fleet: Fleet, instance: str) -> User:
    for _ in range(50):
        user = User.register(fleet, "phone")
        if PUSHERS[shard_index(user.user_id, len(PUSHERS))] == instance:
            return user
    raise AssertionError(f"no user hashed to {instance}")


def test_each_pusher_instance_delivers_its_users_once(fleet: Fleet,
                                                      gateway: PushGateway) -> None:
    alice = User.register(fleet, "alice")
    bobs = [user_pushed_by(fleet, name) for name in PUSHERS]
    rooms = []
    for index, bob in enumerate(bobs):
        room = alice.create_room(invite=[bob])
        bob.join(room)
        rooms.append(room)
        # Set on the instance that does NOT push for bob: the change has to
        # reach the other one.
        other = PUSHERS[1 - index]
        bob.via(other).ok("POST", "/pushers/set", {
            "kind": "http", "app_id": "org.example.app", "pushkey": f"key-{bob.user_id}",
            "app_display_name": "Example", "device_display_name": "Phone", "lang": "en",
            "data": {"url": gateway.url}})
    sent: dict[str, list[str]] = {bob.user_id: [] for bob in bobs}
    for i in range(4):
        for bob, room in zip(bobs, rooms, strict=True):
            sent[bob.user_id].append(alice.send(room, f"message {i}"))
    for bob in bobs:
        pushkey = f"key-{bob.user_id}"
        gateway.wait_event(pushkey, sent[bob.user_id][-1], timeout=60)
        assert gateway.events(pushkey) == sent[bob.user_id]
