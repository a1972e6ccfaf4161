"""Redacting events: who may, and sending the ``m.room.redaction`` event."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from myelin.domain import Requester, invalid_param, not_found
from myelin.handlers.events import SentEvent

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer


class RedactionHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def redact(self, requester: Requester, room_id: str, event_id: str,
                     content: dict[str, Any], txn_key: tuple[str, str, str] | None,
                     ) -> SentEvent:
        store = self.hs.stores.events
        target = await store.get_event(event_id)
        if target is None:
            raise not_found("Event not found")
        if target.event.room_id != room_id:
            # A redaction only ever applies within its own room.
            raise invalid_param("Cannot redact an event of another room")
        creation = self.hs.event_creation

        body = {k: v for k, v in content.items() if k != "redacts"}
        return await creation.send(requester.user_id, room_id, "m.room.redaction", body,
                                   redacts=event_id, txn_key=txn_key,
                                   precheck={"kind": "may_redact",
                                             "user_id": requester.user_id,
                                             "target_sender": target.event.sender})
