"""Remote events into a fleet: ``/send`` and ``/messages`` are served by
generic workers (nginx routes federation and clients there), while every PDU
is checked, placed and persisted on its room's event persister over HTTP
replication, which also fetches missing events and backfills.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.federation.test_dag import bodies, joined_room, txn
from tests.support.fake_remote import FakeRemote
from tests.support.fed_client import FedUser
from tests.support.federation import FleetPeer, launch_fleet_peer, local_ca
from tests.support.postgres import PostgresServer


@pytest.fixture(scope="module")
def fleet(postgres_server: PostgresServer) -> Iterator[FleetPeer]:
    peer = launch_fleet_peer(postgres_server, ca=local_ca())
    try:
        yield peer
    finally:
        peer.close()


@pytest.fixture(scope="module")
def remote() -> Iterator[FakeRemote]:
    fake = FakeRemote(local_ca())
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def test_remote_events_reach_a_fleet_user_with_gaps_filled_and_history_backfilled(
        fleet: FleetPeer, remote: FakeRemote) -> None:
    alice = FedUser.make(fleet, "alice")
    room = joined_room(alice, remote, fleet)
    alice.catch_up()
    bob = remote.user("bob")
    _, old1 = room.message(bob, "old 1")
    old2_id, old2 = room.message(bob, "old 2")
    _, withheld = room.message(bob, "withheld")
    live_id, live = room.message(bob, "live")
    remote.missing_events = [withheld]
    remote.state_ids[old2_id] = (list(room.state.values()), [])
    status, body = remote.send(fleet, txn(), [live])
    assert (status, body) == (200, {"pdus": {live_id: {}}})
    alice.wait_bodies(room.room_id, ["withheld", "live"])
    assert remote.asked("/get_missing_events/")
    remote.backfill_pdus = [old2, old1]
    history = bodies(alice, room.room_id)
    assert remote.asked("/backfill/")
    assert history.index("old 1") < history.index("old 2")
    assert history.index("withheld") < history.index("live")
