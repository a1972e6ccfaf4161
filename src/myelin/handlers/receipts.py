"""Read receipts and read markers."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError, forbidden, not_found
from myelin.replication.http import ReplicationEndpoint
from myelin.storage.stores.receipts import MAIN_THREAD, Receipt

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

RECEIPT_TYPES = ("m.read", "m.read.private")


class WriteReceipt(ReplicationEndpoint):
    NAME = "receipt"
    STREAM = "receipts"
    SHARD_BY = "room_id"

    @staticmethod
    async def handle(hs: HomeServer, p: dict[str, Any]) -> Any:
        await hs.stores.receipts.upsert(p["room_id"], p["receipt_type"], p["user_id"],
                                        p["thread_id"], p["event_id"], p["position"], p["data"])
        return {}


class ReceiptHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def _event_in_room(self, user_id: str, room_id: str, event_id: str) -> int:
        store = self.hs.stores.events
        membership = await self.hs.stores.memberships.get_membership(room_id, user_id)
        if membership is None or membership.membership != "join":
            raise forbidden(f"User {user_id} not in room {room_id}")
        stored = await store.get_event(event_id)
        if stored is None or stored.event.room_id != room_id:
            raise not_found("Event not found")
        return stored.stream_ordering

    async def send_receipt(self, user_id: str, room_id: str, receipt_type: str, event_id: str,
                           thread_id: str | None) -> None:
        if receipt_type == "m.fully_read":
            await self.set_fully_read(user_id, room_id, event_id)
            return
        if receipt_type not in RECEIPT_TYPES:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown receipt type {receipt_type}")
        if thread_id is not None and (not isinstance(thread_id, str) or not thread_id):
            raise MatrixError(400, "M_INVALID_PARAM", "thread_id must be a non-empty string")
        position = await self._event_in_room(user_id, room_id, event_id)
        data: dict[str, Any] = {"ts": int(time.time() * 1000)}
        if thread_id is not None:
            data["thread_id"] = thread_id
        await self.hs.replication.call(WriteReceipt, {
            "room_id": room_id, "receipt_type": receipt_type, "user_id": user_id,
            "thread_id": thread_id or MAIN_THREAD, "event_id": event_id, "position": position,
            "data": data})

    async def set_fully_read(self, user_id: str, room_id: str, event_id: str) -> None:
        await self._event_in_room(user_id, room_id, event_id)
        await self.hs.account_data.put(user_id, room_id, "m.fully_read", {"event_id": event_id})

    @staticmethod
    def to_edu(receipts: Sequence[Receipt], for_user: str) -> dict[str, Any] | None:
        """The ``m.receipt`` ephemeral event for one room, as ``for_user`` may see it."""
        content: dict[str, dict[str, dict[str, Any]]] = {}
        for receipt in receipts:
            if receipt.receipt_type == "m.read.private" and receipt.user_id != for_user:
                continue
            content.setdefault(receipt.event_id, {}).setdefault(
                receipt.receipt_type, {})[receipt.user_id] = receipt.data
        if not content:
            return None
        return {"type": "m.receipt", "content": content}
