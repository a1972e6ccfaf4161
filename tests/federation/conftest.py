"""Server pairs for the federation tests: each module starts its pair once.

* ``myelin_pair``: two Myelin monoliths on SQLite;
* ``synapse_pair``: a Myelin monolith and a real Synapse (skipped, with the
  reason, only when no Python with matrix-synapse exists: see
  :mod:`tests.support.synapse_peer`);
* ``fleet_pair``: a Myelin fleet (PostgreSQL, Redis, two federation senders,
  federation served by the generic workers through nginx) and a monolith.

Every server sits behind its own nginx with TLS from the session's CA.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

# The scenarios' asserts are in helper modules: have pytest explain them too.
pytest.register_assert_rewrite("tests.federation.scenarios", "tests.support.fed_client")

from tests.support.federation import (  # noqa: E402
    FleetPeer,
    MyelinPeer,
    launch_fleet_peer,
    launch_myelin_peer,
    local_ca,
)
from tests.support.postgres import PostgresServer  # noqa: E402
from tests.support.synapse_peer import (  # noqa: E402
    SynapsePeer,
    launch_synapse_peer,
    synapse_python,
)


@pytest.fixture(scope="module")
def myelin_pair() -> Iterator[tuple[MyelinPeer, MyelinPeer]]:
    started: list[MyelinPeer] = []
    try:
        for _ in range(2):
            started.append(launch_myelin_peer(ca=local_ca()))
        yield started[0], started[1]
    finally:
        for peer in started:
            peer.close()


@pytest.fixture(scope="module")
def synapse_pair() -> Iterator[tuple[MyelinPeer, SynapsePeer]]:
    python, why = synapse_python()
    if python is None:
        pytest.skip(why)
    started: list[Any] = []
    try:
        started.append(launch_myelin_peer(ca=local_ca()))
        started.append(launch_synapse_peer(ca=local_ca()))
        yield started[0], started[1]
    finally:
        for peer in started:
            peer.close()


@pytest.fixture(scope="module")
def fleet_pair(postgres_server: PostgresServer) -> Iterator[tuple[FleetPeer, MyelinPeer]]:
    fleet: FleetPeer | None = None
    mono: MyelinPeer | None = None
    try:
        fleet = launch_fleet_peer(postgres_server, ca=local_ca())
        mono = launch_myelin_peer(ca=local_ca())
        yield fleet, mono
    finally:
        if mono is not None:
            mono.close()
        if fleet is not None:
            fleet.close()
