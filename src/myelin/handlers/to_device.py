"""Send-to-device messages: queued per device, delivered once by /sync.

Messages for remote users go, one ``m.direct_to_device`` EDU per server, into
the federation outbox in the same transaction (so a retried client request
sends nothing twice), and the destination's federation sender is poked.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError
from myelin.replication.http import ReplicationEndpoint

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer


class SendToDevice(ReplicationEndpoint):
    NAME = "send_to_device"
    STREAM = "to_device"
    SHARD_BY = "sender"

    @staticmethod
    async def handle(hs: HomeServer, p: dict[str, Any]) -> Any:
        rows = [(user, device, message) for user, device, message in p["rows"]]
        remote = [(destination, content) for destination, content in p.get("remote", [])]
        await hs.stores.to_device.add_messages(p["sender"], p["sender_device"], p["txn_id"],
                                               rows, remote)
        return {}


class ToDeviceHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def send(self, sender: str, sender_device: str, event_type: str, txn_id: str,
                   messages: dict[str, Any]) -> None:
        rows: list[tuple[str, str, dict[str, Any]]] = []
        remote: dict[str, dict[str, Any]] = {}
        for user_id, by_device in messages.items():
            if not isinstance(by_device, dict):
                raise MatrixError(400, "M_BAD_JSON", "messages must map users to devices")
            for content in by_device.values():
                if not isinstance(content, dict):
                    raise MatrixError(400, "M_BAD_JSON", "message content must be an object")
            if not self.hs.is_mine(user_id):
                destination = user_id.split(":", 1)[1] if ":" in user_id else ""
                if destination:
                    remote.setdefault(destination, {})[user_id] = by_device
                continue
            for device_id, content in by_device.items():
                message = {"type": event_type, "sender": sender, "content": content}
                if device_id == "*":
                    devices = await self.hs.stores.accounts.get_devices(user_id)
                    rows.extend((user_id, d.device_id, message) for d in devices)
                else:
                    rows.append((user_id, device_id, message))
        edus = [[destination, {"sender": sender, "type": event_type,
                               "message_id": secrets.token_urlsafe(16), "messages": users}]
                for destination, users in sorted(remote.items())]
        await self.hs.replication.call(SendToDevice, {
            "sender": sender, "sender_device": sender_device, "txn_id": txn_id,
            "rows": [list(r) for r in rows], "remote": edus})
        if edus:
            self.hs.federation_sender.poke_outbox(remote)
