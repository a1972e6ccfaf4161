"""Memberships of local users in rooms this server is not in.

An invite from another server, a knock we sent, or the leave that rejects
either: each is one event of a room whose state and history we do not hold.
It is stored as an outlier (loadable by id, in no timeline, no state group,
no forward extremity) with a position on the events stream, so the user's
membership row moves and /sync sees the change. The room gets its `rooms`
row (version only) so the event can be loaded.
"""

from __future__ import annotations

import orjson

from myelin.events.event import Event
from myelin.storage.engines import Database, Transaction
from myelin.storage.id_generators import PositionTransaction
from myelin.storage.stores.events import MembershipStore
from myelin.storage.stream_rows import EventsRow


class RemoteMembershipStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    async def ensure_room(txn: Transaction, room_id: str, version: str, creator: str | None,
                          created_ts: int) -> None:
        """The `rooms` row of a room first heard of over federation."""
        await txn.execute(
            "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts)"
            " VALUES (?, ?, ?, 0, ?) ON CONFLICT (room_id) DO NOTHING",
            room_id, version, creator, created_ts)

    async def store_out_of_room_membership(self, ptxn: PositionTransaction, event: Event, *,
                                           creator: str | None, instance_name: str) -> int:
        """Write one membership event of a room we are not in; returns its position.
        ``creator``: as the room's stripped state tells, if it does."""
        txn = ptxn.txn
        await self.ensure_room(txn, event.room_id, event.room_version.identifier, creator,
                               event.origin_server_ts)
        position = await ptxn.next_position()
        pdu_json = orjson.dumps(event.get_pdu_json()).decode()
        await txn.execute(
            "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
            " depth, origin_server_ts, membership, replaces_state, instance_name, json, outlier)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, 1)",
            position, event.event_id, event.room_id, event.type, event.state_key, event.sender,
            event.depth, event.origin_server_ts, event.membership, instance_name, pdu_json)
        MembershipStore.write_membership(txn, event, position)
        ptxn.add_row(position, EventsRow(
            event.event_id, event.room_id, event.type, event.state_key, event.sender,
            event.membership, json=pdu_json, room_version=event.room_version.identifier))
        return position
