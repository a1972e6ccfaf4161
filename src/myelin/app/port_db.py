"""``myelin port-db``: move a stopped SQLite server's data into PostgreSQL.

The target gets its schema from Myelin's own migrations, then every table
of the SQLite file is copied in batches, in key order (keyset pagination on
the rowid, or on the primary key of a WITHOUT ROWID table), so a batch costs
the same at the end of a big table as at its start. Each batch and the note
of how far it got (``port_db_progress``) commit in one PostgreSQL
transaction: an interrupted port resumes exactly where it stopped, and is
the only case in which a non-empty target is accepted.

The table list comes from the SQLite schema itself, so tables that later
migrations add are ported without this module knowing them. A virtual table
(an FTS5 full-text index) is copied when PostgreSQL has a table of that
name with its columns (PostgreSQL then derives its own search vectors, e.g.
in a generated column); otherwise it is reported, since that index must be
rebuilt on PostgreSQL. FTS5's shadow tables are SQLite internals, never copied.
Afterwards the PostgreSQL sequences behind stream positions and ids are set
past everything copied (and past the positions recorded in
``stream_positions``), so sync tokens handed out on SQLite keep their
meaning, and a row count per table checks the copy.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import asyncpg

from myelin.config import ConfigError, DatabaseConfig, load_config
from myelin.replication.stream_defs import STREAM_CLASSES
from myelin.storage.engines import open_database
from myelin.storage.migrations import migration_scripts

PROGRESS_TABLE = "port_db_progress"

# Sequences that are not a stream's: (table, column) whose maximum they must pass.
ID_SEQUENCES: dict[str, tuple[str, str]] = {
    "state_group_id_seq": ("state_groups", "id"),
}

# Exit status of an interrupted port (128 + SIGINT, as a shell reports it).
INTERRUPTED = 130


class PortError(Exception):
    """The port cannot go on; ``str()`` says why and what to do."""


@dataclass
class SourceTable:
    name: str
    columns: list[str]
    # Keyset columns: ["rowid"] for ordinary tables, the primary key otherwise.
    key: list[str]
    rows: int = 0


@dataclass
class Progress:
    last_key: list[Any] | None = None
    copied: int = 0
    done: bool = False


# -- the progress bar --------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressBar:
    """One table's progress: a line rewritten in place on a terminal, plain
    lines (at the start, every few seconds, at the end) in a log."""

    WIDTH = 24

    def __init__(self, table: str, total: int, done: int, out: TextIO,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.table = table
        self.total = total
        self.start_done = done
        self.done = done
        self.out = out
        self.tty = out.isatty()
        self._clock = clock
        self._started = clock()
        self._last_print = 0.0
        self._print(force=True)

    def line(self) -> str:
        elapsed = max(self._clock() - self._started, 1e-6)
        rate = (self.done - self.start_done) / elapsed
        fraction = self.done / self.total if self.total else 1.0
        left = self.total - self.done
        eta = _duration(left / rate) if rate > 0 else "?"
        text = (f"{self.table}: {self.done}/{self.total} rows ({fraction:.0%}), "
                f"{rate:.0f} rows/s, ETA {eta}")
        if self.tty:
            filled = int(self.WIDTH * fraction)
            text = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {text}"
        return text

    def update(self, done: int) -> None:
        self.done = done
        self._print()

    def finish(self, note: str = "done") -> None:
        self._print(force=True, end=f" {note}\n")

    def _print(self, force: bool = False, end: str | None = None) -> None:
        now = self._clock()
        every = 0.1 if self.tty else 5.0
        if not force and now - self._last_print < every:
            return
        self._last_print = now
        if self.tty:
            self.out.write("\r\x1b[K" + self.line() + (end or ""))
        else:
            self.out.write(self.line() + (end.rstrip("\n") if end else "") + "\n")
        self.out.flush()


# -- reading the source ------------------------------------------------------------------


def open_source(path: str) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")
    except sqlite3.Error as e:
        raise PortError(f"cannot read the SQLite database {path}: {e}") from None
    return conn


def source_tables(conn: sqlite3.Connection) -> tuple[list[SourceTable], list[SourceTable]]:
    """The tables to copy, and the virtual tables (full-text indexes) apart:
    their shadow tables are SQLite's internals and never copied."""
    listed = conn.execute("PRAGMA table_list").fetchall()
    tables: list[SourceTable] = []
    virtual: list[SourceTable] = []
    # (schema, name, type, ncol, without rowid, strict)
    for schema, name, kind, _ncol, without_rowid, _strict in listed:
        if schema != "main" or kind not in ("table", "virtual") or name.startswith("sqlite_"):
            continue
        if name in ("schema_migrations", PROGRESS_TABLE):
            continue
        info = conn.execute(f'PRAGMA table_info("{name}")').fetchall()
        columns = [r[1] for r in info]
        key = ([r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
               if without_rowid else ["rowid"])
        rows = int(conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0])
        (virtual if kind == "virtual" else tables).append(SourceTable(name, columns, key, rows))
    tables.sort(key=lambda t: t.name)
    virtual.sort(key=lambda t: t.name)
    return tables, virtual


def contentless(conn: sqlite3.Connection, table: str) -> bool:
    """An FTS5 table that keeps no copy of its text (``content=''``): its
    columns read back as NULL, so there is nothing to copy."""
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    text = (sql[0] if sql else "") or ""
    return bool(re.search(r"content\s*=\s*(''|\"\")", text, re.IGNORECASE))


def check_source_schema(conn: sqlite3.Connection) -> None:
    """The SQLite file must be migrated to exactly this version's schema."""
    try:
        applied = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
    except sqlite3.Error:
        raise PortError("this SQLite file is not a Myelin database "
                        "(it has no schema_migrations table)") from None
    known = {name for name, _ in migration_scripts("sqlite")}
    if applied - known:
        raise PortError("the SQLite database was migrated by a newer Myelin "
                        f"({', '.join(sorted(applied - known))}); port it with that version")
    if known - applied:
        raise PortError("the SQLite database is older than this Myelin (missing "
                        f"{', '.join(sorted(known - applied))}): start the server once with "
                        "this version so it migrates, stop it, then port")


def read_batch(conn: sqlite3.Connection, table: SourceTable, after: list[Any] | None,
               limit: int) -> list[tuple[Any, ...]]:
    """Up to ``limit`` rows after key ``after``: the key columns first, then the row."""
    key_sql = ", ".join(f'"{k}"' if k != "rowid" else "rowid" for k in table.key)
    cols = ", ".join(f'"{c}"' for c in table.columns)
    where, args = "", []
    if after is not None:
        where = f" WHERE ({key_sql}) > ({', '.join('?' * len(after))})"
        args = list(after)
    sql = f'SELECT {key_sql}, {cols} FROM "{table.name}"{where} ORDER BY {key_sql} LIMIT ?'
    return conn.execute(sql, [*args, limit]).fetchall()


# -- writing the target ------------------------------------------------------------------


def _converter(pg_type: str) -> Callable[[Any], Any]:
    """SQLite is loosely typed; asyncpg's binary COPY wants each column's type."""
    def to_bool(v: Any) -> Any:
        return v if v is None else bool(int(v)) if not isinstance(v, str) else v.lower() in (
            "1", "t", "true")

    def to_int(v: Any) -> Any:
        return v if v is None or isinstance(v, int) else int(v)

    def to_float(v: Any) -> Any:
        return v if v is None else float(v)

    def to_text(v: Any) -> Any:
        if v is None or isinstance(v, str):
            return v
        if isinstance(v, bytes):
            return v.decode("utf-8", errors="replace")
        return str(v)

    def to_bytes(v: Any) -> Any:
        return v.encode() if isinstance(v, str) else v

    if pg_type == "boolean":
        return to_bool
    if pg_type in ("smallint", "integer", "bigint"):
        return to_int
    if pg_type in ("real", "double precision", "numeric"):
        return to_float
    if pg_type == "bytea":
        return to_bytes
    if pg_type in ("text", "character varying", "character", "json", "jsonb"):
        return to_text
    return lambda v: v


async def target_columns(conn: asyncpg.Connection) -> dict[str, dict[str, str]]:
    rows = await conn.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema()")
    out: dict[str, dict[str, str]] = {}
    for r in rows:
        out.setdefault(r["table_name"], {})[r["column_name"]] = r["data_type"]
    return out


async def target_has_data(conn: asyncpg.Connection) -> list[str]:
    """Tables of the target (other than the migrations' record) that hold rows."""
    names = [r[0] for r in await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
    full = []
    for name in sorted(names):
        if name == "schema_migrations":
            continue
        if await conn.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{name}")'):
            full.append(name)
    return full


async def read_progress(conn: asyncpg.Connection) -> dict[str, Progress] | None:
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", PROGRESS_TABLE)
    if not exists:
        return None
    out = {}
    for r in await conn.fetch(f"SELECT table_name, last_key, copied, done FROM {PROGRESS_TABLE}"):
        out[r[0]] = Progress(json.loads(r[1]) if r[1] is not None else None, r[2], r[3])
    return out


@dataclass
class PortResult:
    copied: dict[str, int] = field(default_factory=dict)
    skipped_virtual: list[str] = field(default_factory=list)
    interrupted: bool = False


class Porter:
    def __init__(self, source: sqlite3.Connection, target: asyncpg.Connection,
                 out: TextIO, batch_size: int) -> None:
        self.source = source
        self.target = target
        self.out = out
        self.batch_size = batch_size
        self.stop_requested = False

    def request_stop(self) -> None:
        if not self.stop_requested:
            self.stop_requested = True
            self.out.write("\ninterrupt: stopping after the current batch\n")
            self.out.flush()

    async def copy_table(self, table: SourceTable, columns: dict[str, str],
                         progress: Progress) -> bool:
        """Copy what is left of ``table``; False if stopped before the end."""
        missing = [c for c in table.columns if c not in columns]
        if missing:
            raise PortError(f"table {table.name} has columns the PostgreSQL schema lacks: "
                            f"{', '.join(missing)}")
        convert = [_converter(columns[c]) for c in table.columns]
        nkey = len(table.key)
        bar = ProgressBar(table.name, table.rows, progress.copied, self.out)
        while True:
            if self.stop_requested:
                bar.finish("interrupted")
                return False
            batch = await asyncio.to_thread(read_batch, self.source, table, progress.last_key,
                                            self.batch_size)
            if not batch:
                break
            records = [tuple(f(v) for f, v in zip(convert, row[nkey:], strict=True))
                       for row in batch]
            last_key = list(batch[-1][:nkey])
            async with self.target.transaction():
                await self.target.copy_records_to_table(table.name, records=records,
                                                        columns=table.columns)
                await self.target.execute(
                    f"UPDATE {PROGRESS_TABLE} SET last_key = $2, copied = copied + $3"
                    " WHERE table_name = $1", table.name, json.dumps(last_key), len(records))
            progress.last_key = last_key
            progress.copied += len(records)
            bar.update(progress.copied)
        await self.target.execute(f"UPDATE {PROGRESS_TABLE} SET done = TRUE WHERE table_name = $1",
                                  table.name)
        progress.done = True
        bar.finish()
        return True


async def set_sequences(target: asyncpg.Connection) -> dict[str, int]:
    """Move every sequence past the ids and stream positions copied."""
    sources: dict[str, list[str]] = {}
    for cls in STREAM_CLASSES:
        sources[f"{cls.NAME}_stream_seq"] = [
            f'SELECT MAX("{cls.TABLE_POSITION}") FROM "{cls.TABLE}"',
            f"SELECT MAX(position) FROM stream_positions WHERE stream_name = '{cls.NAME}'"]
    for seq, (table, column) in ID_SEQUENCES.items():
        sources[seq] = [f'SELECT MAX("{column}") FROM "{table}"']
    # Outliers and backfilled events count down from -1 (storage/stores/federation.py).
    sources["events_backfill_seq"] = [
        'SELECT -MIN("stream_ordering") FROM "events"',
        "SELECT MAX(position) FROM stream_high_water WHERE stream_name = 'events_backfill'"]
    # Sequences owned by a column (serial / identity) follow that column.
    for r in await target.fetch(
            "SELECT s.relname, t.relname, a.attname FROM pg_class s"
            " JOIN pg_depend d ON d.objid = s.oid AND d.deptype IN ('a', 'i')"
            " JOIN pg_class t ON t.oid = d.refobjid"
            " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid"
            " WHERE s.relkind = 'S'"):
        sources.setdefault(r[0], [f'SELECT MAX("{r[2]}") FROM "{r[1]}"'])
    existing = {r[0] for r in await target.fetch(
        "SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()")}
    unknown = sorted(existing - set(sources))
    if unknown:
        raise PortError(f"do not know which ids the sequence(s) {', '.join(unknown)} follow: "
                        "add them to ID_SEQUENCES in myelin/app/port_db.py")
    values = {}
    for seq in sorted(existing):
        value = 0
        for sql in sources[seq]:
            value = max(value, int(await target.fetchval(sql) or 0))
        if value > 0:
            await target.fetchval("SELECT setval($1, $2)", seq, value)
        values[seq] = value
    return values


async def port(sqlite_path: str, db: DatabaseConfig, out: TextIO, *,
               batch_size: int = 1000) -> PortResult:
    if db.engine != "postgres":
        raise PortError("the config's `database:` must be PostgreSQL (name: psycopg2): "
                        "it names the database to port into")
    source = open_source(sqlite_path)
    try:
        check_source_schema(source)
        tables, virtual = source_tables(source)
        target = await asyncpg.connect(user=db.user, password=db.password,
                                       database=db.database, host=db.host, port=db.port)
        try:
            return await _port(source, target, db, tables, virtual, out, batch_size)
        finally:
            await target.close()
    finally:
        source.close()


async def _port(source: sqlite3.Connection, target: asyncpg.Connection, db: DatabaseConfig,
                tables: list[SourceTable], virtual: list[SourceTable], out: TextIO,
                batch_size: int) -> PortResult:
    # Row counts of every table: what a resumed port must find unchanged.
    fingerprint: list[Any] = sorted([t.name, t.rows] for t in [*tables, *virtual])
    progress = await read_progress(target)
    if progress is None:
        full = await target_has_data(target)
        if full:
            raise PortError(
                f"the PostgreSQL database {db.database} already holds data (in "
                f"{', '.join(full[:5])}{'…' if len(full) > 5 else ''}) and is not a port "
                "this tool started: port into a new, empty database")
        # The schema comes from Myelin's own migrations (and checks the collation).
        schema_db = await open_database(db)
        await schema_db.close()
        async with target.transaction():
            await target.execute(
                f"CREATE TABLE {PROGRESS_TABLE} (table_name TEXT PRIMARY KEY, last_key TEXT,"
                " copied BIGINT NOT NULL DEFAULT 0, done BOOLEAN NOT NULL DEFAULT FALSE)")
            # The source as it was when the port began: a resumed port checks
            # that nobody wrote to it in between.
            await target.execute(
                f"INSERT INTO {PROGRESS_TABLE} (table_name, last_key) VALUES ('', $1)",
                json.dumps(fingerprint))
        progress = {"": Progress(fingerprint)}
        out.write(f"porting {len(tables)} tables into PostgreSQL database {db.database}\n")
    else:
        if progress[""].last_key != fingerprint:
            raise PortError(
                "the SQLite database has changed since this port began (was the server "
                "started again?): its rows no longer match what was copied. Drop and "
                f"recreate the PostgreSQL database {db.database}, then port again")
        done = sum(1 for name, p in progress.items() if name and p.done)
        out.write(f"resuming the port into {db.database}: {done} of {len(tables)} tables "
                  "already copied\n")
        if progress[""].done:
            out.write("the port had already finished; checking it again\n")
    # Only now is the PostgreSQL schema there to say which full-text tables it has.
    columns = await target_columns(target)
    skipped = []
    for vt in virtual:
        if (vt.name in columns and all(c in columns[vt.name] for c in vt.columns)
                and not contentless(source, vt.name)):
            tables.append(vt)
        else:
            skipped.append(vt.name)
    tables.sort(key=lambda t: t.name)
    for table in tables:
        if table.name not in progress:
            await target.execute(f"INSERT INTO {PROGRESS_TABLE} (table_name) VALUES ($1)",
                                 table.name)
            progress[table.name] = Progress()
    missing = [t.name for t in tables if t.name not in columns]
    if missing:
        raise PortError(f"the PostgreSQL schema has no table(s) {', '.join(missing)}")
    porter = Porter(source, target, out, batch_size)
    result = PortResult(skipped_virtual=skipped)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, porter.request_stop)
    loop.add_signal_handler(signal.SIGTERM, porter.request_stop)
    try:
        for table in tables:
            p = progress[table.name]
            if p.done:
                continue
            if not await porter.copy_table(table, columns[table.name], p):
                result.interrupted = True
                return result
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)
    sequences = await set_sequences(target)
    out.write("sequences set past the copied ids: "
              + ", ".join(f"{k}={v}" for k, v in sorted(sequences.items())) + "\n")
    bad = []
    for table in tables:
        count = int(await target.fetchval(f'SELECT COUNT(*) FROM "{table.name}"'))
        result.copied[table.name] = count
        if count != table.rows:
            bad.append(f"{table.name} (SQLite {table.rows}, PostgreSQL {count})")
    if bad:
        raise PortError("row counts differ after the copy: " + "; ".join(bad))
    await target.execute(f"UPDATE {PROGRESS_TABLE} SET done = TRUE WHERE table_name = ''")
    out.write(f"row counts match in all {len(tables)} tables "
              f"({sum(result.copied.values())} rows)\n")
    for name in skipped:
        out.write(f"warning: skipped the SQLite virtual table {name} (a full-text index "
                  "PostgreSQL has no table for): its search index must be rebuilt there\n")
    return result


def warn_if_live(sqlite_path: str, out: TextIO) -> None:
    """A server that stopped cleanly has folded its write-ahead log back into
    the file; a log left over means it runs still (or crashed)."""
    wal = sqlite_path + "-wal"
    if os.path.exists(wal) and os.path.getsize(wal) > 0:
        out.write(f"warning: {wal} is not empty: the server is still running or did not "
                  "stop cleanly. Stop it before porting; what it writes meanwhile is not "
                  "copied\n")


def port_db_command(sqlite_path: str, config_paths: Sequence[str], batch_size: int,
                    out: TextIO = sys.stdout) -> int:
    try:
        config = load_config(list(config_paths))
    except ConfigError as e:
        print(f"myelin: {e}", file=sys.stderr)
        return 1
    warn_if_live(sqlite_path, out)
    try:
        result = asyncio.run(port(sqlite_path, config.database, out, batch_size=batch_size))
    except PortError as e:
        print(f"myelin: port-db: {e}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError, ValueError) as e:
        print(f"myelin: port-db: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    command = (f"myelin port-db --sqlite-database {sqlite_path} "
               + " ".join(f"--config-path {p}" for p in config_paths))
    if result.interrupted:
        print(f"port interrupted; nothing copied so far is lost. To resume, run again:\n"
              f"  {command}", file=sys.stderr)
        return INTERRUPTED
    out.write("port complete. Start Myelin with this config (its `database:` is the "
              "PostgreSQL one); keep the SQLite file until you have checked the server.\n")
    return 0
