"""Send-to-device messages: queued per device, delivered once by /sync."""

from __future__ import annotations

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
        await hs.stores.to_device.add_messages(p["sender"], p["sender_device"], p["txn_id"],
                                               rows)
        return {}


class ToDeviceHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def send(self, sender: str, sender_device: str, event_type: str, txn_id: str,
                   messages: dict[str, Any]) -> None:
        rows: list[tuple[str, str, dict[str, Any]]] = []
        for user_id, by_device in messages.items():
            if not isinstance(by_device, dict):
                raise MatrixError(400, "M_BAD_JSON", "messages must map users to devices")
            if not self.hs.is_mine(user_id):
                continue  # federation is not there yet; remote users get nothing
            for device_id, content in by_device.items():
                if not isinstance(content, dict):
                    raise MatrixError(400, "M_BAD_JSON", "message content must be an object")
                message = {"type": event_type, "sender": sender, "content": content}
                if device_id == "*":
                    devices = await self.hs.stores.accounts.get_devices(user_id)
                    rows.extend((user_id, d.device_id, message) for d in devices)
                else:
                    rows.append((user_id, device_id, message))
        await self.hs.replication.call(SendToDevice, {
            "sender": sender, "sender_device": sender_device, "txn_id": txn_id,
            "rows": [list(r) for r in rows]})
