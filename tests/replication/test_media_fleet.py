"""The seed's media layout in one process: main with `enable_media_repo:
false` and two media workers (listeners with the `media` resource, one
shared media store), on one in-memory bus and one PostgreSQL.

Main does not serve media; either worker serves what the other stored, and
a download waiting on one worker is answered when the content is PUT on the
other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from myelin.app.homeserver import HomeServer
from myelin.app.process import start_listeners
from myelin.config import load_config_from_dict
from myelin.replication.bus import InMemoryBus
from myelin.storage.engines import open_database
from tests.support.postgres import PostgresServer, create_database, free_port

SERVER = "media.test"


def _config(pg: PostgresServer, database: str, media_dir: str, ports: dict[str, int],
            worker: str | None) -> Any:
    data: dict[str, Any] = {
        "server_name": SERVER,
        "database": {"name": "psycopg2", "args": {"user": pg.user, "host": pg.host,
                                                   "port": pg.port, "database": database,
                                                   "cp_min": 1, "cp_max": 4}},
        "redis": {"enabled": True},  # the bus is handed over in-memory below
        "instance_map": {"main": {"host": "127.0.0.1", "port": ports["replication"]}},
        "listeners": [{"port": ports["main"], "bind_addresses": ["127.0.0.1"],
                       "resources": [{"names": ["client"]}]},
                      {"port": ports["replication"], "bind_addresses": ["127.0.0.1"],
                       "resources": [{"names": ["replication"]}]}],
        "enable_media_repo": False,
        "media_instance_running_background_jobs": "media1",
        "media_store_path": media_dir,
    }
    if worker is not None:
        data |= {"worker_app": "synapse.app.generic_worker", "worker_name": worker,
                 "worker_listeners": [{"port": ports[worker], "bind_addresses": ["127.0.0.1"],
                                       "resources": [{"names": ["media"]}]}]}
    return load_config_from_dict(data)


@contextlib.asynccontextmanager
async def _fleet(pg: PostgresServer) -> AsyncIterator[tuple[list[HomeServer], dict[str, int]]]:
    name = f"mediafleet_{os.getpid()}_{free_port()}"
    await asyncio.to_thread(create_database, pg, name)
    media_dir = tempfile.mkdtemp(prefix="myelin-media-")
    ports = {p: free_port() for p in ("main", "replication", "media1", "media2")}
    bus = InMemoryBus()
    servers: list[HomeServer] = []
    try:
        for worker in (None, "media1", "media2"):
            config = _config(pg, name, media_dir, ports, worker)
            hs = HomeServer(config, await open_database(config.database), bus=bus)
            servers.append(hs)
            await hs.start()
            await start_listeners(hs)
        yield servers, ports
    finally:
        for hs in servers:
            await hs.stop()
            for listener in hs.listeners:
                await listener.stop()
            await hs.db.close()


async def test_media_workers_share_the_repository(postgres_server: PostgresServer) -> None:
    async with _fleet(postgres_server) as (servers, ports), aiohttp.ClientSession() as http:
        main, media1, media2 = servers
        assert not media2.roles.runs("media")  # only the named instance runs the job
        assert media1.roles.runs("media") and not main.roles.runs("media")
        user_id = await main.registration.register_user("alice", None)
        _, token = await main.auth.issue_session(user_id, None, None)
        auth = {"Authorization": f"Bearer {token}"}

        def url(process: str, path: str) -> str:
            return f"http://127.0.0.1:{ports[process]}{path}"

        # Main does not serve media at all.
        async with http.post(url("main", "/_matrix/media/v3/upload"), data=b"x",
                             headers=auth) as resp:
            assert resp.status == 404 and (await resp.json())["errcode"] == "M_UNRECOGNIZED"

        # Stored by one worker, served by the other.
        async with http.post(url("media1", "/_matrix/media/v3/upload?filename=a.txt"),
                             data=b"shared bytes",
                             headers={**auth, "Content-Type": "text/plain"}) as resp:
            assert resp.status == 200, await resp.text()
            media_id = (await resp.json())["content_uri"].rsplit("/", 1)[1]
        async with http.get(url("media2", f"/_matrix/client/v1/media/download/{SERVER}/"
                                          f"{media_id}"), headers=auth) as resp:
            assert resp.status == 200 and await resp.read() == b"shared bytes"
            assert resp.headers["Content-Disposition"] == 'inline; filename="a.txt"'

        # A download waiting on media2 for content PUT through media1.
        async with http.post(url("media2", "/_matrix/media/v1/create"), headers=auth) as resp:
            pending = (await resp.json())["content_uri"].rsplit("/", 1)[1]

        async def wait_for_it() -> bytes:
            async with http.get(url("media2", f"/_matrix/client/v1/media/download/{SERVER}/"
                                              f"{pending}?timeout_ms=30000"),
                                headers=auth) as resp:
                assert resp.status == 200
                return await resp.read()

        waiting = asyncio.create_task(wait_for_it())
        await asyncio.sleep(0.3)
        assert not waiting.done()
        async with http.put(url("media1", f"/_matrix/media/v3/upload/{SERVER}/{pending}"),
                            data=b"late", headers=auth) as resp:
            assert resp.status == 200
        assert await asyncio.wait_for(waiting, 20) == b"late"
