"""Helpers for tests that drive the server with matrix-nio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from nio import AsyncClient, AsyncClientConfig, LoginResponse

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
