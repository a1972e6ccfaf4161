"""A user's push rules and their overrides of server defaults (the `push_rules` stream).

Every change writes a row to ``push_rules_stream`` in the same transaction,
so ``/sync`` can tell whether a user's rules changed between two tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from myelin.storage.engines import Database, Transaction
from myelin.storage.id_generators import StreamIdGenerator
from myelin.storage.stream_rows import PushRulesRow


@dataclass
class StoredRule:
    kind: str
    rule_id: str
    conditions: list[Any]
    actions: list[Any]
    pattern: str | None
    enabled: bool


@dataclass
class DefaultOverride:
    enabled: bool | None
    actions: list[Any] | None


class RuleNotFound(Exception):
    """A ``before``/``after`` anchor, or the rule itself, does not exist."""


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class PushRuleStore:
    def __init__(self, db: Database, id_gen: StreamIdGenerator) -> None:
        self.db = db
        self.id_gen = id_gen

    # -- reads -------------------------------------------------------------
    async def get_user_rules(self, user_id: str) -> list[StoredRule]:
        """All user-defined rules, most important first within each kind."""
        rows = await self.db.fetchall(
            "SELECT kind, rule_id, conditions, actions, pattern, enabled FROM push_rules"
            " WHERE user_id = ? ORDER BY kind, priority_order, rule_id", user_id)
        return [StoredRule(r[0], r[1], orjson.loads(r[2]), orjson.loads(r[3]), r[4],
                           bool(r[5])) for r in rows]

    async def get_default_overrides(self, user_id: str,
                                    ) -> dict[tuple[str, str], DefaultOverride]:
        rows = await self.db.fetchall(
            "SELECT kind, rule_id, enabled, actions FROM push_rules_default_overrides"
            " WHERE user_id = ?", user_id)
        return {(r[0], r[1]): DefaultOverride(None if r[2] is None else bool(r[2]),
                                              None if r[3] is None else orjson.loads(r[3]))
                for r in rows}

    async def get_user_rules_many(self, user_ids: Sequence[str],
                                  ) -> dict[str, list[StoredRule]]:
        """:meth:`get_user_rules` for many users in one query per 200."""
        out: dict[str, list[StoredRule]] = {u: [] for u in user_ids}
        for start in range(0, len(user_ids), 200):
            chunk = list(user_ids[start:start + 200])
            rows = await self.db.fetchall(
                "SELECT user_id, kind, rule_id, conditions, actions, pattern, enabled"
                f" FROM push_rules WHERE user_id IN ({','.join('?' * len(chunk))})"
                " ORDER BY user_id, kind, priority_order, rule_id", *chunk)
            for r in rows:
                out[r[0]].append(StoredRule(r[1], r[2], orjson.loads(r[3]), orjson.loads(r[4]),
                                            r[5], bool(r[6])))
        return out

    async def get_default_overrides_many(self, user_ids: Sequence[str],
                                         ) -> dict[str, dict[tuple[str, str], DefaultOverride]]:
        out: dict[str, dict[tuple[str, str], DefaultOverride]] = {u: {} for u in user_ids}
        for start in range(0, len(user_ids), 200):
            chunk = list(user_ids[start:start + 200])
            rows = await self.db.fetchall(
                "SELECT user_id, kind, rule_id, enabled, actions"
                " FROM push_rules_default_overrides"
                f" WHERE user_id IN ({','.join('?' * len(chunk))})", *chunk)
            for r in rows:
                out[r[0]][(r[1], r[2])] = DefaultOverride(
                    None if r[3] is None else bool(r[3]),
                    None if r[4] is None else orjson.loads(r[4]))
        return out

    async def changed_between(self, user_id: str, from_id: int, to_id: int) -> bool:
        row = await self.db.fetchone(
            "SELECT 1 FROM push_rules_stream WHERE user_id = ? AND stream_id > ?"
            " AND stream_id <= ? LIMIT 1", user_id, from_id, to_id)
        return row is not None

    # -- writes ------------------------------------------------------------
    async def _record(self, ptxn: Any, user_id: str, rule_id: str, op: str) -> int:
        position: int = await ptxn.next_position()
        await ptxn.txn.execute(
            "INSERT INTO push_rules_stream (stream_id, user_id, rule_id, op) VALUES (?, ?, ?, ?)",
            position, user_id, rule_id, op)
        ptxn.add_row(position, PushRulesRow(user_id))
        return position

    @staticmethod
    async def _ordered_ids(txn: Transaction, user_id: str, kind: str) -> list[str]:
        rows = await txn.fetchall(
            "SELECT rule_id FROM push_rules WHERE user_id = ? AND kind = ?"
            " ORDER BY priority_order, rule_id", user_id, kind)
        return [r[0] for r in rows]

    async def put_rule(self, user_id: str, kind: str, rule_id: str, *, conditions: list[Any],
                       actions: list[Any], pattern: str | None, before: str | None,
                       after: str | None) -> int:
        """Create or replace a user rule, placed per ``before``/``after``.

        A new rule without either goes first (most important); an existing rule
        without either keeps its place. Raises RuleNotFound for a missing anchor.
        """
        async with self.id_gen.transaction() as ptxn:
            txn = ptxn.txn
            if self.db.engine == "postgres":
                # Serialise reorderings of one user's rules.
                await txn.execute("SELECT pg_advisory_xact_lock(hashtext(?))",
                                  f"push_rules:{user_id}")
            order = await self._ordered_ids(txn, user_id, kind)
            exists = rule_id in order
            if before is not None or after is not None or not exists:
                if exists:
                    order.remove(rule_id)
                if before is not None:
                    if before not in order:
                        raise RuleNotFound(before)
                    order.insert(order.index(before), rule_id)
                elif after is not None:
                    if after not in order:
                        raise RuleNotFound(after)
                    order.insert(order.index(after) + 1, rule_id)
                else:
                    order.insert(0, rule_id)
            await txn.execute(
                "INSERT INTO push_rules (user_id, kind, rule_id, priority_order, conditions,"
                " actions, pattern, enabled) VALUES (?, ?, ?, ?, ?, ?, ?, 1)"
                " ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET"
                " conditions = excluded.conditions, actions = excluded.actions,"
                " pattern = excluded.pattern",
                user_id, kind, rule_id, order.index(rule_id), _dumps(conditions),
                _dumps(actions), pattern)
            await txn.executemany(
                "UPDATE push_rules SET priority_order = ? WHERE user_id = ? AND kind = ?"
                " AND rule_id = ?",
                [(i, user_id, kind, rid) for i, rid in enumerate(order)])
            return await self._record(ptxn, user_id, rule_id, "put")

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> int:
        async with self.id_gen.transaction() as ptxn:
            deleted = await ptxn.txn.execute(
                "DELETE FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?",
                user_id, kind, rule_id)
            if not deleted:
                raise RuleNotFound(rule_id)
            return await self._record(ptxn, user_id, rule_id, "delete")

    async def set_user_rule_field(self, user_id: str, kind: str, rule_id: str, *,
                                  enabled: bool | None = None,
                                  actions: list[Any] | None = None) -> int:
        async with self.id_gen.transaction() as ptxn:
            if enabled is not None:
                changed = await ptxn.txn.execute(
                    "UPDATE push_rules SET enabled = ? WHERE user_id = ? AND kind = ?"
                    " AND rule_id = ?", int(enabled), user_id, kind, rule_id)
            else:
                changed = await ptxn.txn.execute(
                    "UPDATE push_rules SET actions = ? WHERE user_id = ? AND kind = ?"
                    " AND rule_id = ?", _dumps(actions), user_id, kind, rule_id)
            if not changed:
                raise RuleNotFound(rule_id)
            return await self._record(ptxn, user_id, rule_id,
                                      "enabled" if enabled is not None else "actions")

    async def set_default_override(self, user_id: str, kind: str, rule_id: str, *,
                                   enabled: bool | None = None,
                                   actions: list[Any] | None = None) -> int:
        async with self.id_gen.transaction() as ptxn:
            if enabled is not None:
                await ptxn.txn.execute(
                    "INSERT INTO push_rules_default_overrides (user_id, kind, rule_id, enabled)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (user_id, kind, rule_id)"
                    " DO UPDATE SET enabled = excluded.enabled",
                    user_id, kind, rule_id, int(enabled))
            else:
                await ptxn.txn.execute(
                    "INSERT INTO push_rules_default_overrides (user_id, kind, rule_id, actions)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (user_id, kind, rule_id)"
                    " DO UPDATE SET actions = excluded.actions",
                    user_id, kind, rule_id, _dumps(actions))
            return await self._record(ptxn, user_id, rule_id,
                                      "enabled" if enabled is not None else "actions")
