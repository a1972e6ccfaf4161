"""Shared fixtures: both database engines, a real PostgreSQL, real server processes.

Tests that take ``engine`` run once per engine ("sqlite", "postgres"). The
PostgreSQL server is started once per session from Debian's binaries.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator

import pytest

from myelin.config import DatabaseConfig
from myelin.storage.engines import Database, open_database
from tests.support.postgres import PostgresServer, create_database, start_postgres
from tests.support.server import ServerProcess, launch_server

ENGINES = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pg(engine: str, request: pytest.FixtureRequest) -> PostgresServer | None:
    if engine != "postgres":
        return None
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server


_counter = 0


@pytest.fixture
async def db(engine: str, pg: PostgresServer | None, tmp_path: os.PathLike[str],
             ) -> AsyncIterator[Database]:
    """A fresh, migrated database on the engine under test."""
    global _counter
    if engine == "sqlite":
        config = DatabaseConfig(engine="sqlite", path=os.path.join(str(tmp_path), "test.db"))
    else:
        assert pg is not None
        _counter += 1
        name = f"unit_{os.getpid()}_{_counter}"
        # create_database runs its own event loop: keep it off this one.
        await asyncio.to_thread(create_database, pg, name)
        config = DatabaseConfig(engine="postgres", user=pg.user, host=pg.host, port=pg.port,
                                database=name, cp_min=1, cp_max=5)
    database = await open_database(config)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def server(engine: str, pg: PostgresServer | None) -> Iterator[ServerProcess]:
    """A running homeserver process on the engine under test."""
    proc = launch_server(engine, pg)
    try:
        yield proc
    finally:
        code = proc.stop()
        if code not in (0, None):
            print(proc.log())
        shutil.rmtree(proc.workdir, ignore_errors=True)


@pytest.fixture(scope="module", params=ENGINES)
def hs(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """One server per engine shared by a whole test module (tests use fresh users)."""
    pg = request.getfixturevalue("postgres_server") if request.param == "postgres" else None
    proc = launch_server(request.param, pg)
    try:
        yield proc
    finally:
        died = proc.proc is not None and proc.proc.poll() is not None
        code = proc.stop()
        if died or code not in (0, None):
            print(f"server exited (code {code}) during the module:\n{proc.log()}")
        shutil.rmtree(proc.workdir, ignore_errors=True)
