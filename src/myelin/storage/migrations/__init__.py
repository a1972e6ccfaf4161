"""Versioned schema migrations, run at start-up on both engines.

Files are ``NNN_name.sql`` (for both engines) optionally followed by
``NNN_name.postgres.sql`` / ``NNN_name.sqlite.sql`` for what only one engine
needs (sequences, pragmas). Applied migrations are recorded by name in
``schema_migrations``, so running them again is a no-op; on PostgreSQL an
advisory lock stops several processes of a fleet migrating at once.
"""

from __future__ import annotations

import logging
import re
from importlib import resources

from myelin.storage.engines.base import Database

logger = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)(?:\.(postgres|sqlite))?\.sql$")
_ADVISORY_LOCK_ID = 0x6D79656C  # "myel"


def _split_statements(script: str) -> list[str]:
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def migration_scripts(engine: str) -> list[tuple[str, str]]:
    """(name, sql) for every migration that applies to ``engine``, in order."""
    files = {}
    for entry in resources.files(__package__).iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if not m:
            continue
        if m.group(3) and m.group(3) != engine:
            continue
        files[entry.name] = entry.read_text(encoding="utf-8")
    return sorted(files.items(), key=lambda kv: (kv[0][:3], kv[0].count(".") > 1, kv[0]))


async def run_migrations(db: Database) -> list[str]:
    """Apply every migration not yet applied; returns the names applied now."""
    applied_now: list[str] = []
    async with db.transaction() as txn:
        if db.engine == "postgres":
            await txn.execute(f"SELECT pg_advisory_xact_lock({_ADVISORY_LOCK_ID})")
        await txn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name TEXT PRIMARY KEY, applied_ts BIGINT NOT NULL)"
        )
        done = {row[0] for row in await txn.fetchall("SELECT name FROM schema_migrations")}
        for name, script in migration_scripts(db.engine):
            if name in done:
                continue
            logger.info("applying schema migration %s", name)
            for statement in _split_statements(script):
                await txn.execute(statement)
            await txn.execute(
                "INSERT INTO schema_migrations (name, applied_ts) VALUES (?, ?)",
                name, _now_ms(),
            )
            applied_now.append(name)
    return applied_now


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
