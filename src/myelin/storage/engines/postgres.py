"""PostgreSQL engine on an asyncpg connection pool.

Statements are written with ``?`` placeholders; they are rewritten to asyncpg's
``$1..$n`` once and cached. asyncpg prepares and caches statements per
connection, which is most of its speed.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from myelin.storage.engines.base import Database, Row, Transaction


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
        return cls(pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._pool.acquire() as conn, conn.transaction():
            txn = PostgresTransaction(conn)
            yield txn
            await txn.flush()

    async def fetchall(self, sql: str, *args: Any) -> list[Row]:
        return list(await self._pool.fetch(to_postgres(sql), *args))

    async def execute(self, sql: str, *args: Any) -> int:
        return _rowcount(await self._pool.execute(to_postgres(sql), *args))

    async def close(self) -> None:
        await self._pool.close()
