"""Application services' delivery state and their network room directories.

``appservice_state`` is how far a service's transactions reached in the
events stream and the last transaction id it acknowledged;
``appservice_txns`` holds the one transaction in flight, written before it
is sent: after a restart the same transaction (same id, same body) goes out
again, and its acknowledgement moves the position in the same transaction
that deletes it, so nothing is sent twice under two ids and nothing is
skipped. ``appservice_room_list`` is ``PUT /directory/list/appservice/...``.
"""

from __future__ import annotations

from dataclasses import dataclass

from myelin.storage.engines import Database


@dataclass(frozen=True)
class PendingTxn:
    txn_id: int
    events_position: int
    body: str


class AppServiceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_state(self, appservice_id: str) -> tuple[int, int] | None:
        """(events position, last acknowledged txn id), or None for a new service."""
        rows = await self.db.fetchall(
            "SELECT events_position, last_txn_id FROM appservice_state WHERE appservice_id = ?",
            appservice_id)
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    async def init_state(self, appservice_id: str, position: int) -> None:
        async with self.db.transaction("appservice_init_state") as txn:
            await txn.execute(
                "INSERT INTO appservice_state (appservice_id, events_position, last_txn_id)"
                " VALUES (?, ?, 0) ON CONFLICT (appservice_id) DO NOTHING",
                appservice_id, position)

    async def set_position(self, appservice_id: str, position: int) -> None:
        """Nothing of interest up to ``position``: move on without a transaction."""
        await self.db.execute(
            "UPDATE appservice_state SET events_position = ? WHERE appservice_id = ?",
            position, appservice_id)

    async def get_pending(self, appservice_id: str) -> PendingTxn | None:
        rows = await self.db.fetchall(
            "SELECT txn_id, events_position, body FROM appservice_txns"
            " WHERE appservice_id = ? ORDER BY txn_id LIMIT 1", appservice_id)
        if not rows:
            return None
        return PendingTxn(int(rows[0][0]), int(rows[0][1]), str(rows[0][2]))

    async def add_pending(self, appservice_id: str, txn_id: int, events_position: int,
                          body: str) -> None:
        async with self.db.transaction("appservice_add_txn") as txn:
            await txn.execute(
                "INSERT INTO appservice_txns (appservice_id, txn_id, events_position, body)"
                " VALUES (?, ?, ?, ?)", appservice_id, txn_id, events_position, body)

    async def complete(self, appservice_id: str, pending: PendingTxn) -> None:
        """The service acknowledged ``pending``: forget it and move on past it."""
        async with self.db.transaction("appservice_complete_txn") as txn:
            await txn.execute("DELETE FROM appservice_txns WHERE appservice_id = ? AND txn_id = ?",
                              appservice_id, pending.txn_id)
            await txn.execute(
                "UPDATE appservice_state SET events_position = ?, last_txn_id = ?"
                " WHERE appservice_id = ?", pending.events_position, pending.txn_id,
                appservice_id)

    # -- network room directories ------------------------------------------
    async def set_network_room(self, appservice_id: str, network_id: str, room_id: str,
                               public: bool) -> None:
        async with self.db.transaction("appservice_room_list") as txn:
            if public:
                await txn.execute(
                    "INSERT INTO appservice_room_list (appservice_id, network_id, room_id)"
                    " VALUES (?, ?, ?) ON CONFLICT DO NOTHING", appservice_id, network_id,
                    room_id)
            else:
                await txn.execute(
                    "DELETE FROM appservice_room_list WHERE appservice_id = ?"
                    " AND network_id = ? AND room_id = ?", appservice_id, network_id, room_id)

    async def network_rooms(self, appservice_id: str, network_id: str) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT room_id FROM appservice_room_list WHERE appservice_id = ? AND network_id = ?"
            " ORDER BY room_id", appservice_id, network_id)
        return [str(r[0]) for r in rows]

    async def all_network_rooms(self) -> list[str]:
        rows = await self.db.fetchall("SELECT DISTINCT room_id FROM appservice_room_list")
        return [str(r[0]) for r in rows]
