"""`myelin port-db`: a SQLite server moved to PostgreSQL keeps its users whole.

One SQLite server is filled by real clients and stopped; it is ported (once
interrupted with SIGINT and resumed), started on PostgreSQL, and its users
carry on: old access tokens, passwords, one-time key counts, and syncs
continued from tokens the SQLite server gave out.
"""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from myelin.app.port_db import ProgressBar
from tests.support.postgres import PostgresServer, create_database
from tests.support.server import ServerProcess, launch_server

V3 = "/_matrix/client/v3"
MEDIA = b"minutes of the meeting, kept as a file\n"


@dataclass
class Source:
    server: ServerProcess
    sqlite_path: str
    alice: dict[str, Any]
    bob: dict[str, Any]
    room_id: str
    bob_since: str
    after_since: list[str]
    otk_count: int
    media_id: str
    rows: dict[str, int]


def _ok(server: ServerProcess, method: str, path: str, body: Any = None,
        token: str | None = None) -> Any:
    status, out = server.request(method, V3 + path, body, token=token)
    assert status == 200, (method, path, status, out)
    return out


def _send(server: ServerProcess, token: str, room_id: str, text: str) -> str:
    txn = f"t{time.monotonic_ns()}"
    out = _ok(server, "PUT", f"/rooms/{quote(room_id)}/send/m.room.message/{txn}",
              {"msgtype": "m.text", "body": text}, token)
    return str(out["event_id"])


def _sqlite_counts(path: str) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        # Tables and full-text (virtual) tables; not FTS5's shadow tables.
        names = [r[1] for r in conn.execute("PRAGMA table_list")
                 if r[0] == "main" and r[2] in ("table", "virtual")
                 and not r[1].startswith("sqlite_")]
        return {n: int(conn.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0])
                for n in names}
    finally:
        conn.close()


@pytest.fixture(scope="module")
def source() -> Iterator[Source]:
    server = launch_server("sqlite", None)
    try:
        alice = server.register("alice", password="alice's password")
        bob = server.register("bob", password="bob's password")
        a, b = alice["access_token"], bob["access_token"]
        room_id = _ok(server, "POST", "/createRoom", {"preset": "public_chat"}, a)["room_id"]
        _ok(server, "POST", f"/join/{quote(room_id)}", {}, b)
        for i in range(60):
            _send(server, a, room_id, f"before {i}")
        keys = {f"signed_curve25519:K{i}": {"key": f"k{i}", "signatures": {}} for i in range(7)}
        uploaded = _ok(server, "POST", "/keys/upload", {"one_time_keys": keys}, a)
        otk = int(uploaded["one_time_key_counts"]["signed_curve25519"])
        status, media = server.request("POST", "/_matrix/media/v3/upload?filename=notes.txt",
                                       raw=MEDIA, token=a,
                                       headers={"Content-Type": "text/plain"})
        assert status == 200, media
        media_id = str(media["content_uri"]).rsplit("/", 1)[1]
        # Reports get ids from a sequence on PostgreSQL: the port must move it on.
        first_event = _send(server, a, room_id, "reported")
        _ok(server, "POST", f"/rooms/{quote(room_id)}/report/{quote(first_event)}",
            {"reason": "spam", "score": -100}, b)
        bob_since = _ok(server, "GET", "/sync?timeout=0", None, b)["next_batch"]
        after = [_send(server, a, room_id, f"after {i}") for i in range(3)]
        server.stop()
        path = os.path.join(server.workdir, "hs.db")
        yield Source(server, path, alice, bob, room_id, bob_since, after, otk, media_id,
                     _sqlite_counts(path))
    finally:
        server.stop()


def _pg_config(source: Source, pg: PostgresServer, name: str) -> str:
    create_database(pg, name)
    with open(source.server.config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    config["database"] = {"name": "psycopg2", "args": {
        "user": pg.user, "host": pg.host, "port": pg.port, "database": name,
        "cp_min": 1, "cp_max": 5}}
    path = os.path.join(source.server.workdir, f"{name}.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    return path


def _port_cmd(source: Source, config_path: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "myelin", "port-db", "--sqlite-database", source.sqlite_path,
            "--config-path", config_path, *extra]


def _pg_counts(pg: PostgresServer, name: str, tables: list[str]) -> dict[str, int]:
    import asyncio

    import asyncpg

    async def count() -> dict[str, int]:
        conn = await asyncpg.connect(user=pg.user, host=pg.host, port=pg.port, database=name)
        try:
            out = {}
            for t in tables:
                exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", t)
                out[t] = int(await conn.fetchval(f'SELECT COUNT(*) FROM "{t}"')) if exists else 0
            return out
        finally:
            await conn.close()

    return asyncio.run(count())


@dataclass
class Ported:
    config_path: str
    database: str
    interrupted: subprocess.CompletedProcess[str]
    counts_after_interrupt: dict[str, int]
    resumed: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def ported(source: Source, postgres_server: PostgresServer) -> Ported:
    name = f"ported_{os.getpid()}"
    config_path = _pg_config(source, postgres_server, name)
    # Batches of one row, so the port is still running when SIGINT arrives.
    proc = subprocess.Popen(_port_cmd(source, config_path, "--batch-size", "1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if " done" in line:  # the first table is complete: interrupt the next ones
            proc.send_signal(signal.SIGINT)
            break
    rest_out, err = proc.communicate(timeout=60)
    interrupted = subprocess.CompletedProcess(proc.args, proc.returncode,
                                              "".join(seen) + rest_out, err)
    counts = _pg_counts(postgres_server, name, list(source.rows))
    resumed = subprocess.run(_port_cmd(source, config_path), capture_output=True, text=True,
                             timeout=300)
    return Ported(config_path, name, interrupted, counts, resumed)


def test_interrupted_port_stops_says_how_to_resume_and_finishes_on_rerun(
        source: Source, ported: Ported, postgres_server: PostgresServer) -> None:
    first = ported.interrupted
    assert first.returncode != 0, first
    assert "To resume, run again" in first.stderr
    assert "port-db --sqlite-database" in first.stderr
    # It really stopped part-way: some table is not (fully) there yet.
    copied = {t: n for t, n in ported.counts_after_interrupt.items() if t != "schema_migrations"}
    assert any(copied[t] < source.rows[t] for t in copied), copied
    second = ported.resumed
    assert second.returncode == 0, (second.stdout, second.stderr)
    assert "resuming the port" in second.stdout
    assert "row counts match" in second.stdout
    # Every table, the same rows as the SQLite file.
    tables = [t for t in source.rows if t != "schema_migrations"]
    assert _pg_counts(postgres_server, ported.database, tables) == {
        t: source.rows[t] for t in tables}
    # A progress line per table with done/total and a rate.
    assert f"events: {source.rows['events']}/{source.rows['events']} rows (100%)" in second.stdout


def test_ported_server_keeps_users_tokens_keys_and_syncs(
        source: Source, ported: Ported) -> None:
    assert ported.resumed.returncode == 0, ported.resumed.stderr
    server = ServerProcess(base_url=source.server.base_url, config_path=ported.config_path,
                           shared_secret=source.server.shared_secret,
                           workdir=source.server.workdir, engine="postgres",
                           log_path=os.path.join(source.server.workdir, "pg-server.log"))
    server.start()
    try:
        a, b = source.alice["access_token"], source.bob["access_token"]
        # Existing access tokens still work.
        assert _ok(server, "GET", "/account/whoami", None, a)["user_id"] == \
            source.alice["user_id"]
        # Passwords still log in.
        login = _ok(server, "POST", "/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"},
            "password": "bob's password"})
        assert login["user_id"] == source.bob["user_id"]
        status, _ = server.request("POST", V3 + "/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"},
            "password": "wrong"})
        assert status == 403
        # One-time keys are still counted.
        counts = _ok(server, "POST", "/keys/upload", {}, a)["one_time_key_counts"]
        assert counts.get("signed_curve25519") == source.otk_count
        # Bob's sync continues from the SQLite token: exactly the 3 later messages.
        out = _ok(server, "GET", f"/sync?timeout=0&since={source.bob_since}", None, b)
        timeline = out["rooms"]["join"][source.room_id]["timeline"]
        ids = [e["event_id"] for e in timeline["events"] if e["type"] == "m.room.message"]
        assert ids == source.after_since
        # ... and goes on from there on PostgreSQL: a new message, nothing repeated.
        new_id = _send(server, a, source.room_id, "on postgres")
        out2 = _ok(server, "GET", f"/sync?timeout=0&since={out['next_batch']}", None, b)
        ids2 = [e["event_id"] for e in
                out2["rooms"]["join"][source.room_id]["timeline"]["events"]]
        assert ids2 == [new_id]
        # A new report takes the next id, not one the SQLite server gave out.
        _ok(server, "POST", f"/rooms/{quote(source.room_id)}/report/{quote(new_id)}",
            {"reason": "more spam", "score": -50}, b)
        # Media uploaded on SQLite still downloads (the files stay in the media store).
        status, body = server.request(
            "GET", f"/_matrix/client/v1/media/download/{source.server.server_name}/"
                   f"{source.media_id}", token=b)
        assert (status, body) == (200, MEDIA.decode()), (status, body)
        # The whole history is readable.
        history = _ok(server, "GET", f"/rooms/{quote(source.room_id)}/messages?dir=b&limit=100",
                      None, b)
        bodies = [e["content"].get("body") for e in history["chunk"]
                  if e["type"] == "m.room.message"]
        assert bodies[:5] == ["on postgres", "after 2", "after 1", "after 0", "reported"]
        assert len(bodies) == 65
        # The search indexes came along: PostgreSQL derived its vectors from them.
        found = _ok(server, "POST", "/search", {"search_categories": {"room_events": {
            "search_term": "before 59"}}}, b)["search_categories"]["room_events"]
        assert [r["result"]["content"]["body"] for r in found["results"]] == ["before 59"]
        users = _ok(server, "POST", "/user_directory/search", {"search_term": "bob"}, a)
        assert source.bob["user_id"] in {r["user_id"] for r in users["results"]}
    finally:
        server.stop()


def test_refuses_a_postgres_database_that_already_holds_data(
        source: Source, postgres_server: PostgresServer) -> None:
    name = f"busy_{os.getpid()}"
    config_path = _pg_config(source, postgres_server, name)
    # A server that ran on the database has written to it.
    server = ServerProcess(base_url=source.server.base_url, config_path=config_path,
                           shared_secret=source.server.shared_secret,
                           workdir=source.server.workdir, engine="postgres",
                           log_path=os.path.join(source.server.workdir, "busy.log"))
    server.start()
    server.register("carol")
    server.stop()
    before = _pg_counts(postgres_server, name, list(source.rows))
    result = subprocess.run(_port_cmd(source, config_path), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert "already holds data" in result.stderr
    assert _pg_counts(postgres_server, name, list(source.rows)) == before


def test_full_text_tables_are_copied_where_postgres_has_them_and_reported_otherwise(
        source: Source, postgres_server: PostgresServer) -> None:
    import asyncio

    import asyncpg

    # A copy of the SQLite file with two FTS5 indexes, as a search feature keeps them.
    copy_path = os.path.join(source.server.workdir, "with-fts.db")
    src, dst = sqlite3.connect(source.sqlite_path), sqlite3.connect(copy_path)
    src.backup(dst)
    src.close()
    dst.execute("CREATE VIRTUAL TABLE port_fts USING fts5(body, room_id UNINDEXED)")
    dst.executemany("INSERT INTO port_fts (body, room_id) VALUES (?, ?)",
                    [("hello brave world", "!a"), ("goodbye", "!a"), ("hello again", "!b")])
    dst.execute("CREATE VIRTUAL TABLE orphan_fts USING fts5(x)")
    dst.execute("INSERT INTO orphan_fts (x) VALUES ('nobody ports me')")
    dst.commit()
    dst.close()
    name = f"fts_{os.getpid()}"
    config_path = _pg_config(source, postgres_server, name)
    pg = postgres_server

    async def prepare() -> None:
        conn = await asyncpg.connect(user=pg.user, host=pg.host, port=pg.port, database=name)
        try:
            await conn.execute(
                "CREATE TABLE port_fts (body TEXT, room_id TEXT, vector tsvector"
                " GENERATED ALWAYS AS (to_tsvector('simple', body)) STORED)")
        finally:
            await conn.close()

    async def search(word: str) -> list[str]:
        conn = await asyncpg.connect(user=pg.user, host=pg.host, port=pg.port, database=name)
        try:
            rows = await conn.fetch("SELECT body FROM port_fts WHERE vector @@ to_tsquery("
                                    "'simple', $1) ORDER BY body", word)
            return [r[0] for r in rows]
        finally:
            await conn.close()

    asyncio.run(prepare())
    result = subprocess.run(
        [sys.executable, "-m", "myelin", "port-db", "--sqlite-database", copy_path,
         "--config-path", config_path], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert asyncio.run(search("hello")) == ["hello again", "hello brave world"]
    assert "orphan_fts" in result.stdout and "must be rebuilt" in result.stdout
    assert "port_fts_data" not in result.stdout  # FTS5's own shadow tables stay behind


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_one_line_rewritten_with_rate_and_eta() -> None:
    now = [0.0]
    out = _Terminal()
    bar = ProgressBar("events", 1000, 0, out, clock=lambda: now[0])
    now[0] = 2.0
    bar.update(400)
    now[0] = 4.0
    bar.update(1000)
    bar.finish()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith(" done\n")
    assert "\r\x1b[K[#########...............] events: 400/1000 rows (40%), 200 rows/s, " \
           "ETA 0:00:03" in text


def test_progress_in_a_log_is_plain_lines_every_few_seconds() -> None:
    now = [0.0]
    out = io.StringIO()
    bar = ProgressBar("users", 100, 20, out, clock=lambda: now[0])  # resumed at 20
    for i in range(21, 101):
        now[0] += 0.1
        bar.update(i)
    bar.finish()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert lines[0] == "users: 20/100 rows (20%), 0 rows/s, ETA ?"
    assert len(lines) == 3  # the start, one at 5 s, the end
    assert lines[-1] == "users: 100/100 rows (100%), 10 rows/s, ETA 0:00:00 done"


def test_a_finished_port_run_again_checks_itself_and_refuses_a_changed_source(
        source: Source, postgres_server: PostgresServer) -> None:
    copy_path = os.path.join(source.server.workdir, "changing.db")
    src, dst = sqlite3.connect(source.sqlite_path), sqlite3.connect(copy_path)
    src.backup(dst)
    src.close()
    dst.close()
    config_path = _pg_config(source, postgres_server, f"again_{os.getpid()}")

    def port() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "myelin", "port-db", "--sqlite-database", copy_path,
             "--config-path", config_path], capture_output=True, text=True, timeout=300)

    first = port()
    assert first.returncode == 0, first.stderr
    again = port()
    assert again.returncode == 0, again.stderr
    assert "already finished" in again.stdout and "row counts match" in again.stdout
    # The SQLite server ran again after the port: its rows are no longer what was copied.
    conn = sqlite3.connect(copy_path)
    conn.execute("INSERT INTO instance_names (instance_id, instance_name) VALUES (99, 'late')")
    conn.commit()
    conn.close()
    changed = port()
    assert changed.returncode == 1
    assert "has changed since this port began" in changed.stderr
