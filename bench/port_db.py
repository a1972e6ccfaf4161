#!/usr/bin/env python3
"""How fast ``myelin port-db`` moves a SQLite server to PostgreSQL.

Fills a SQLite server through the client API (users, one room each for
pairs of them, messages), stops it, and ports it into a fresh database of a
throwaway PostgreSQL (tests/support/postgres.py); reports the rows copied,
the wall time of the port and rows per second.

    .venv/bin/python bench/port_db.py --messages 5000 --batch-size 1000
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.support.postgres import create_database, start_postgres  # noqa: E402
from tests.support.server import launch_server  # noqa: E402

V3 = "/_matrix/client/v3"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    pg = start_postgres()
    server = launch_server("sqlite", None)
    try:
        users = [server.register(f"u{i}") for i in range(args.users)]
        rooms = []
        for a, b in zip(users[::2], users[1::2], strict=False):
            _, out = server.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                    token=a["access_token"])
            server.request("POST", V3 + f"/join/{quote(out['room_id'])}", {},
                           token=b["access_token"])
            rooms.append((a["access_token"], out["room_id"]))

        def send(i: int) -> None:
            token, room = rooms[i % len(rooms)]
            server.request("PUT", V3 + f"/rooms/{quote(room)}/send/m.room.message/b{i}",
                           {"msgtype": "m.text", "body": f"message {i}"}, token=token)

        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(send, range(args.messages)))
        print(f"filled: {args.messages} messages in {time.monotonic() - started:.1f} s")
        server.stop()
        path = os.path.join(server.workdir, "hs.db")
        conn = sqlite3.connect(path)
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        rows = sum(conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables)
        conn.close()
        name = f"bench_port_{os.getpid()}"
        create_database(pg, name)
        with open(server.config_path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
        config["database"] = {"name": "psycopg2", "args": {
            "user": pg.user, "host": pg.host, "port": pg.port, "database": name}}
        config_path = os.path.join(server.workdir, "pg.yaml")
        with open(config_path, "w", encoding="utf-8") as f:
            yaml.safe_dump(config, f)
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "myelin", "port-db", "--sqlite-database",
                               path, "--config-path", config_path, "--batch-size",
                               str(args.batch_size)], capture_output=True, text=True,
                              check=False)
        elapsed = time.monotonic() - started
        if done.returncode != 0:
            print(done.stdout, done.stderr)
            return 1
        print(f"ported: {rows} rows in {len(tables)} tables in {elapsed:.1f} s "
              f"({rows / elapsed:.0f} rows/s, batch size {args.batch_size}; "
              "includes start-up and migrations)")
        return 0
    finally:
        server.stop()
        pg.stop()


if __name__ == "__main__":
    sys.exit(main())
