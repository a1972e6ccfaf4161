"""PostgreSQL engine on an asyncpg connection pool.

Statements are written with ``?`` placeholders; they are rewritten to asyncpg's
``$1..$n`` once and cached. asyncpg prepares and caches statements per
connection, which is most of its speed.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg

from myelin.storage.engines.base import Database, Row, Transaction
from myelin.storage.engines.stats import caller_name


@functools.lru_cache(maxsize=4096)
def to_postgres(sql: str) -> str:
    """Rewrite ``?`` placeholders as ``$n`` (our SQL never has ``?`` in literals)."""
    parts = sql.split("?")
    if len(parts) == 1:
        return sql
    out = [parts[0]]
    for index, part in enumerate(parts[1:], start=1):
        out.append(f"${index}")
        out.append(part)
    return "".join(out)


def _rowcount(status: str) -> int:
    # asyncpg returns the command tag, e.g. "UPDATE 3" or "INSERT 0 1".
    try:
        return int(status.rsplit(" ", 1)[-1])
    except (ValueError, IndexError):
        return 0


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's reset query on release: Myelin keeps no session state
    (no session advisory locks, LISTEN or SET), and the reset is an extra
    round trip per statement, a quarter of the server's database time."""


class PostgresTransaction(Transaction):
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._pending: list[tuple[str, tuple[Any, ...]]] = []

    def defer(self, sql: str, *args: Any) -> None:
        self._pending.append((sql, args))

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        for sql, args in pending:
            await self._conn.execute(to_postgres(sql), *args)

    async def execute(self, sql: str, *args: Any) -> int:
        await self.flush()
        return _rowcount(await self._conn.execute(to_postgres(sql), *args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.flush()
        rows = list(rows)
        if rows:
            await self._conn.executemany(to_postgres(sql), rows)

    async def fetchall(self, sql: str, *args: Any) -> list[Row]:
        await self.flush()
        return list(await self._conn.fetch(to_postgres(sql), *args))

    async def try_advisory_xact_lock(self, key: int) -> bool:
        """Take the transaction-scoped advisory lock ``key`` if it is free."""
        await self.flush()
        return bool(await self._conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", key))

    async def advisory_xact_lock(self, key: int) -> None:
        """Wait for the transaction-scoped advisory lock ``key``, however long
        its holder takes (the pool's per-statement timeout does not apply)."""
        await self.flush()
        await self._conn.execute("SELECT pg_advisory_xact_lock($1)", key,
                                 timeout=_LOCK_WAIT_SECONDS)


class DatabaseCollationError(ValueError):
    """The database sorts text by a locale; Myelin needs byte order ('C')."""


# Collations that order text by bytes, as Myelin's indexes and comparisons assume.
_BYTE_ORDER_LOCALES = frozenset({"C", "C.UTF-8", "C.utf8", "POSIX"})

_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_$]*")

# Waiting on a lock another process holds while it migrates.
_LOCK_WAIT_SECONDS = 24 * 3600.0


def collation_problem(database: str, settings: dict[str, Any]) -> str | None:
    """Why the database ``settings`` (a pg_database row) is unusable, with the
    statement that creates a usable one; None if it is fine."""
    collate, ctype = settings.get("datcollate"), settings.get("datctype")
    provider = settings.get("datlocprovider", "c")  # PostgreSQL 15+
    if isinstance(provider, bytes):
        provider = provider.decode()
    if provider == "b":  # PostgreSQL 17's builtin provider: C or C.UTF-8 only
        provider = "c"
    bad = [f"{name}={value!r}" for name, value in (("LC_COLLATE", collate), ("LC_CTYPE", ctype))
           if value not in _BYTE_ORDER_LOCALES]
    if provider != "c":
        bad.append(f"locale provider {'ICU' if provider == 'i' else repr(provider)}"
                   f" ({settings.get('daticulocale') or settings.get('datlocale') or '?'})")
    if not bad:
        return None
    quoted = database if _PLAIN_NAME.fullmatch(database) else (
        '"' + database.replace('"', '""') + '"')
    provider_clause = " LOCALE_PROVIDER=libc" if provider != "c" else ""
    return (f"database {database} has {', '.join(bad)}, but Myelin needs the C collation "
            f"(text compared byte by byte); create a new database with CREATE DATABASE "
            f"{quoted} ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C'{provider_clause} "
            "TEMPLATE=template0; and move the data over (pg_dump, then psql into the new "
            "database)")


class PostgresDatabase(Database):
    engine = "postgres"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, *, user: str | None, password: str | None, database: str | None,
                      host: str | None, port: int, min_size: int, max_size: int,
                      ) -> PostgresDatabase:
        pool = await asyncpg.create_pool(
            user=user, password=password, database=database, host=host, port=port,
            min_size=min_size, max_size=max_size, command_timeout=60, reset=_keep_session,
        )
        try:
            row = await pool.fetchrow(
                "SELECT * FROM pg_database WHERE datname = current_database()")
            settings = dict(row.items()) if row is not None else {}
            problem = collation_problem(str(settings.get("datname", database)), settings)
            if problem is not None:
                raise DatabaseCollationError(problem)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    def transaction(self, name: str | None = None) -> AbstractAsyncContextManager[Transaction]:
        return self._transaction(name or caller_name())

    @asynccontextmanager
    async def _transaction(self, name: str) -> AsyncIterator[Transaction]:
        start = time.perf_counter()
        ok = False
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                txn = PostgresTransaction(conn)
                yield txn
                await txn.flush()
            ok = True
        finally:
            self.stats.observe(name, time.perf_counter() - start, ok)

    def pool_stats(self) -> dict[str, int]:
        size = self._pool.get_size()
        return {"size": size, "in_use": size - self._pool.get_idle_size(),
                "max": self._pool.get_max_size()}

    async def fetchall(self, sql: str, *args: Any) -> list[Row]:
        return list(await self._pool.fetch(to_postgres(sql), *args))

    async def execute(self, sql: str, *args: Any) -> int:
        return _rowcount(await self._pool.execute(to_postgres(sql), *args))

    async def close(self) -> None:
        await self._pool.close()
