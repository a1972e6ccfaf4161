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
from myelin.storage.engines.postgres import PostgresTransaction

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


class SchemaTooNewError(ValueError):
    """The database has migrations applied that this code does not know."""


async def run_migrations(db: Database) -> list[str]:
    """Apply every migration not yet applied; returns the names applied now.

    On PostgreSQL the advisory lock is taken first, before anything is read:
    a process that starts while another is migrating waits for it on the lock
    and then sees its migrations as done. A database that has migrations this
    code does not know was upgraded by a newer Myelin; it is refused, not
    touched."""
    applied_now: list[str] = []
    scripts = migration_scripts(db.engine)
    async with db.transaction() as txn:
        if isinstance(txn, PostgresTransaction):
            if not await txn.try_advisory_xact_lock(_ADVISORY_LOCK_ID):
                logger.info("another process is applying schema migrations; waiting for it")
                await txn.advisory_xact_lock(_ADVISORY_LOCK_ID)
        await txn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name TEXT PRIMARY KEY, applied_ts BIGINT NOT NULL)"
        )
        done = {row[0] for row in await txn.fetchall("SELECT name FROM schema_migrations")}
        _refuse_newer_schema(done, {name for name, _ in scripts})
        for name, script in scripts:
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


def _refuse_newer_schema(applied: set[str], known: set[str]) -> None:
    unknown = sorted(applied - known)
    if not unknown:
        return
    newest_known = max(known, default="(none)")
    raise SchemaTooNewError(
        f"the database schema is newer than this code: it has migration"
        f"{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} applied, and this Myelin "
        f"knows migrations up to {newest_known} only; run the newer Myelin version that "
        "migrated it (every process of a fleet must run the same version)")


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
