"""Both database engines behind the one interface: migrations, transactions, SQL."""

from __future__ import annotations

import asyncio

import pytest

from myelin.storage.engines import Database
from myelin.storage.engines.postgres import to_postgres
from myelin.storage.migrations import migration_scripts, run_migrations


class Boom(Exception):
    pass


async def make_table(db: Database) -> None:
    async with db.transaction() as txn:
        await txn.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v BIGINT, note TEXT)")


# -- migrations -----------------------------------------------------------------------

async def test_migrations_applied_once(db: Database) -> None:
    names = [row[0] for row in await db.fetchall(
        "SELECT name FROM schema_migrations ORDER BY name")]
    expected = sorted(name for name, _ in migration_scripts(db.engine))
    assert names == expected
    assert names[0].startswith("001_")
    assert await run_migrations(db) == []
    assert await run_migrations(db) == []
    count = await db.fetchval("SELECT COUNT(*) FROM schema_migrations")
    assert count == len(expected)


async def test_migrations_concurrently_are_safe(db: Database) -> None:
    results = await asyncio.gather(run_migrations(db), run_migrations(db), run_migrations(db))
    assert results == [[], [], []]


async def test_engine_specific_scripts_only_on_their_engine(db: Database) -> None:
    other = "sqlite" if db.engine == "postgres" else "postgres"
    mine = {name for name, _ in migration_scripts(db.engine)}
    assert not any(name.endswith(f".{other}.sql") for name in mine)
    # a shared script sorts before its engine-specific companion
    ordered = [name for name, _ in migration_scripts(db.engine)]
    for name in ordered:
        if name.endswith(f".{db.engine}.sql"):
            shared = name.replace(f".{db.engine}.sql", ".sql")
            if shared in ordered:
                assert ordered.index(shared) < ordered.index(name)


async def test_schema_has_account_tables(db: Database) -> None:
    for table in ("users", "devices", "access_tokens", "profiles", "ui_auth_sessions"):
        assert await db.fetchval(f"SELECT COUNT(*) FROM {table}") == 0


# -- transactions ---------------------------------------------------------------------

async def test_commit(db: Database) -> None:
    await make_table(db)
    async with db.transaction() as txn:
        await txn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", "a", 1)
        await txn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", "b", 2)
        # a transaction sees its own writes
        assert await txn.fetchval("SELECT SUM(v) FROM kv") == 3
    rows = await db.fetchall("SELECT k, v FROM kv ORDER BY k")
    assert [tuple(r) for r in rows] == [("a", 1), ("b", 2)]


async def test_rollback_on_exception_leaves_nothing(db: Database) -> None:
    await make_table(db)
    with pytest.raises(Boom):
        async with db.transaction() as txn:
            await txn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", "a", 1)
            await txn.execute("UPDATE kv SET v = 2 WHERE k = ?", "a")
            raise Boom
    assert await db.fetchval("SELECT COUNT(*) FROM kv") == 0
    # and the engine is usable afterwards
    await db.execute("INSERT INTO kv (k, v) VALUES (?, ?)", "b", 5)
    assert await db.fetchval("SELECT v FROM kv WHERE k = ?", "b") == 5


async def test_rollback_on_sql_error(db: Database) -> None:
    await make_table(db)
    await db.execute("INSERT INTO kv (k, v) VALUES (?, ?)", "taken", 0)
    with pytest.raises(Exception) as info:
        async with db.transaction() as txn:
            await txn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", "new", 1)
            await txn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", "taken", 2)
    assert "unique" in str(info.value).lower()
    rows = await db.fetchall("SELECT k, v FROM kv")
    assert [tuple(r) for r in rows] == [("taken", 0)]
    async with db.transaction() as txn:
        await txn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", "after", 3)
    assert await db.fetchval("SELECT COUNT(*) FROM kv") == 2


async def test_rollback_on_cancellation(db: Database) -> None:
    await make_table(db)
    started = asyncio.Event()

    async def work() -> None:
        async with db.transaction() as txn:
            await txn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", "a", 1)
            started.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(work())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await db.fetchval("SELECT COUNT(*) FROM kv") == 0
    await db.execute("INSERT INTO kv (k, v) VALUES (?, ?)", "b", 1)
    assert await db.fetchval("SELECT COUNT(*) FROM kv") == 1


async def test_uncommitted_writes_invisible_outside(db: Database) -> None:
    await make_table(db)
    async with db.transaction() as txn:
        await txn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", "a", 1)
        assert await db.fetchval("SELECT COUNT(*) FROM kv") == 0
    assert await db.fetchval("SELECT COUNT(*) FROM kv") == 1


async def test_concurrent_transactions_do_not_lose_updates(db: Database) -> None:
    await make_table(db)
    await db.execute("INSERT INTO kv (k, v) VALUES (?, ?)", "counter", 0)

    async def bump() -> None:
        async with db.transaction() as txn:
            await txn.execute("UPDATE kv SET v = v + 1 WHERE k = ?", "counter")

    await asyncio.gather(*(bump() for _ in range(25)))
    assert await db.fetchval("SELECT v FROM kv WHERE k = ?", "counter") == 25


# -- statements and placeholders ------------------------------------------------------

async def test_placeholders(db: Database) -> None:
    await make_table(db)
    await db.execute("INSERT INTO kv (k, v, note) VALUES (?, ?, ?)", "q?", 2**62, "what? why?")
    await db.execute("INSERT INTO kv (k, v, note) VALUES (?, ?, ?)", "none", None, None)
    await db.execute("INSERT INTO kv (k, v, note) VALUES (?, ?, ?)", "ünï", -7, "🙂 '; DROP")
    row = await db.fetchone("SELECT k, v, note FROM kv WHERE k = ? AND v = ?", "q?", 2**62)
    assert row is not None and tuple(row) == ("q?", 2**62, "what? why?")
    assert await db.fetchval("SELECT note FROM kv WHERE k = ?", "ünï") == "🙂 '; DROP"
    assert await db.fetchval("SELECT COUNT(*) FROM kv WHERE v IS NULL") == 1
    assert await db.fetchval("SELECT k FROM kv WHERE v > ? AND v < ?", -10, 0) == "ünï"
    # the same placeholder position used with different values
    keys = await db.fetchall("SELECT k FROM kv WHERE k IN (?, ?) ORDER BY k", "none", "q?")
    assert [r[0] for r in keys] == ["none", "q?"]


async def test_execute_returns_rowcount(db: Database) -> None:
    await make_table(db)
    async with db.transaction() as txn:
        await txn.executemany("INSERT INTO kv (k, v) VALUES (?, ?)",
                              [(f"k{i}", i) for i in range(10)])
        await txn.executemany("INSERT INTO kv (k, v) VALUES (?, ?)", [])
        assert await txn.execute("UPDATE kv SET v = v * 10 WHERE v >= ?", 5) == 5
    assert await db.execute("DELETE FROM kv WHERE v < ?", 3) == 3
    assert await db.execute("DELETE FROM kv WHERE k = ?", "nope") == 0
    assert await db.fetchval("SELECT SUM(v) FROM kv") == 3 + 4 + 10 * (5 + 6 + 7 + 8 + 9)


async def test_on_conflict_and_returning(db: Database) -> None:
    await make_table(db)
    for value in (1, 2):
        await db.execute("INSERT INTO kv (k, v) VALUES (?, ?)"
                         " ON CONFLICT (k) DO UPDATE SET v = excluded.v", "a", value)
    assert await db.fetchval("SELECT v FROM kv WHERE k = ?", "a") == 2
    async with db.transaction() as txn:
        row = await txn.fetchone("INSERT INTO kv (k, v) VALUES (?, ?) RETURNING v", "b", 9)
    assert row is not None and row[0] == 9


async def test_fetchval_and_fetchone(db: Database) -> None:
    await make_table(db)
    assert await db.fetchone("SELECT k FROM kv WHERE k = ?", "missing") is None
    assert await db.fetchval("SELECT k FROM kv WHERE k = ?", "missing") is None
    assert await db.fetchall("SELECT k FROM kv") == []
    await db.execute("INSERT INTO kv (k, v) VALUES (?, ?)", "a", 1)
    await db.execute("INSERT INTO kv (k, v) VALUES (?, ?)", "b", 2)
    row = await db.fetchone("SELECT k, v FROM kv ORDER BY k")
    assert row is not None
    assert row[0] == "a" and row[1] == 1  # the first row
    assert len(row) == 2
    assert await db.fetchval("SELECT v FROM kv ORDER BY k DESC") == 2
    assert await db.fetchval("SELECT COUNT(*) FROM kv") == 2
    async with db.transaction() as txn:
        assert await txn.fetchval("SELECT v FROM kv WHERE k = ?", "b") == 2
        assert await txn.fetchone("SELECT v FROM kv WHERE k = ?", "zzz") is None
        assert await txn.fetchval("SELECT v FROM kv WHERE k = ?", "zzz") is None
        rows = await txn.fetchall("SELECT k FROM kv ORDER BY k")
        assert [r[0] for r in rows] == ["a", "b"]


async def test_engine_name(db: Database, engine: str) -> None:
    assert db.engine == engine


def test_to_postgres_rewrites_placeholders() -> None:
    assert to_postgres("SELECT 1") == "SELECT 1"
    assert to_postgres("SELECT * FROM t WHERE a = ? AND b IN (?, ?)") == \
        "SELECT * FROM t WHERE a = $1 AND b IN ($2, $3)"
    assert to_postgres("INSERT INTO t VALUES (?)") == "INSERT INTO t VALUES ($1)"
