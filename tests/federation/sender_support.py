"""A recording remote for the federation sender's tests.

``RecordingRemote`` stands where ``hs.federation_client`` stands: it records
every transaction PUT to each destination and can be told a destination is
down (it then raises as an unreachable server does).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class Unreachable(Exception):
    """What a down destination raises (fed-keys' FederationUnreachable stands here)."""


@dataclass
class Received:
    destination: str
    txn_id: str
    body: dict[str, Any]

    @property
    def pdus(self) -> list[dict[str, Any]]:
        return list(self.body.get("pdus", []))

    @property
    def edus(self) -> list[dict[str, Any]]:
        return list(self.body.get("edus", []))


class RecordingRemote:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.down: set[str] = set()
        self.attempts: dict[str, list[float]] = {}
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}

    async def put_json(self, destination: str, path: str, body: Any, *,
                       args: Any = None, timeout: float = 60.0) -> Any:  # noqa: ASYNC109
        assert path.startswith("/_matrix/federation/v1/send/"), path
        self.attempts.setdefault(destination, []).append(time.monotonic())
        self.in_flight[destination] = self.in_flight.get(destination, 0) + 1
        self.max_in_flight[destination] = max(self.max_in_flight.get(destination, 0),
                                              self.in_flight[destination])
        try:
            await asyncio.sleep(0.01)  # a real round trip: others may queue meanwhile
            if destination in self.down:
                raise Unreachable(f"{destination} is down")
            self.received.append(Received(destination, path.rsplit("/", 1)[1], body))
            return {"pdus": {}}
        finally:
            self.in_flight[destination] -= 1

    async def close(self) -> None:
        """As the real client's: the HomeServer closes it when it stops."""

    def to(self, destination: str) -> list[Received]:
        return [r for r in self.received if r.destination == destination]

    def pdus_to(self, destination: str) -> list[dict[str, Any]]:
        return [p for r in self.to(destination) for p in r.pdus]

    def edus_to(self, destination: str, edu_type: str | None = None) -> list[dict[str, Any]]:
        return [e for r in self.to(destination) for e in r.edus
                if edu_type is None or e["edu_type"] == edu_type]


async def eventually(check: Callable[[], Any], timeout: float = 15.0,  # noqa: ASYNC109
                     what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy (its value), or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
