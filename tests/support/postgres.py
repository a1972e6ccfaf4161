"""Start a throwaway PostgreSQL server from Debian's postgresql-15 binaries.

The server binaries live off PATH (``/usr/lib/postgresql/<ver>/bin``). initdb
refuses to run as root, so when the tests run as root the cluster is owned by
the ``postgres`` system user (or ``nobody``) and commands run via ``runuser``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass


def find_pg_bin() -> str | None:
    env = os.environ.get("MYELIN_PG_BIN")
    if env:
        return env
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if candidates:
        return os.path.dirname(candidates[0])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    datadir: str
    _run_as: list[str]
    _bin: str

    def dsn_args(self, database: str) -> dict[str, object]:
        return {"user": self.user, "host": self.host, "port": self.port, "database": database}

    def stop(self) -> None:
        subprocess.run([*self._run_as, f"{self._bin}/pg_ctl", "-D", self.datadir, "-m",
                        "immediate", "stop"], capture_output=True, check=False)
        shutil.rmtree(os.path.dirname(self.datadir), ignore_errors=True)


def start_postgres() -> PostgresServer:
    pg_bin = find_pg_bin()
    if pg_bin is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql-15)")
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:
        for name in ("postgres", "nobody"):
            try:
                owner = pwd.getpwnam(name)
                break
            except KeyError:
                continue
        if owner is None:
            raise RuntimeError("running as root and no postgres/nobody user to own the cluster")
        run_as = ["runuser", "-u", owner.pw_name, "--"]
    base = tempfile.mkdtemp(prefix="myelin-pg-")
    datadir = os.path.join(base, "data")
    sockdir = os.path.join(base, "sock")
    os.makedirs(sockdir)
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
        os.chown(sockdir, owner.pw_uid, owner.pw_gid)
    user = "myelin"
    subprocess.run([*run_as, f"{pg_bin}/initdb", "-D", datadir, "-U", user, "-A", "trust",
                    "-E", "UTF8", "--no-locale"], check=True, capture_output=True)
    port = free_port()
    opts = (f"-p {port} -k {sockdir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
    subprocess.run([*run_as, f"{pg_bin}/pg_ctl", "-D", datadir, "-o", opts, "-l",
                    os.path.join(base, "log"), "-w", "start"], check=True, capture_output=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    return PostgresServer("127.0.0.1", port, user, datadir, run_as, pg_bin)


def create_database(server: PostgresServer, name: str) -> None:
    import asyncio

    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(user=server.user, host=server.host, port=server.port,
                                     database="postgres")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
