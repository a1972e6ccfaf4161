"""Open the database a config describes and bring its schema up to date."""

from __future__ import annotations

from myelin.config import DatabaseConfig
from myelin.storage.engines.base import Database
from myelin.storage.engines.postgres import PostgresDatabase
from myelin.storage.engines.sqlite import SqliteDatabase


async def open_database(config: DatabaseConfig, *, migrate: bool = True) -> Database:
    db: Database
    if config.engine == "sqlite":
        sqlite = SqliteDatabase(config.path)
        await sqlite.open()
        db = sqlite
    else:
        db = await PostgresDatabase.connect(
            user=config.user, password=config.password, database=config.database,
            host=config.host, port=config.port, min_size=config.cp_min, max_size=config.cp_max,
        )
    if migrate:
        from myelin.storage.migrations import run_migrations

        try:
            await run_migrations(db)
        except BaseException:
            await db.close()
            raise
    return db
