"""Devices of local users: listing, renaming, deleting, and announcing changes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from myelin.domain import not_found
from myelin.replication.http import ReplicationEndpoint
from myelin.storage.stores.accounts import DeviceRecord

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer


class DeviceListChanged(ReplicationEndpoint):
    NAME = "device_list_changed"
    STREAM = "device_lists"

    @staticmethod
    async def handle(hs: HomeServer, p: dict[str, Any]) -> Any:
        await hs.stores.device_lists.record_change(p["user_id"], p["device_id"])
        return {}


class DeviceHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.accounts

    async def get_devices(self, user_id: str) -> list[DeviceRecord]:
        return await self.store.get_devices(user_id)

    async def get_device(self, user_id: str, device_id: str) -> DeviceRecord | None:
        return await self.store.get_device(user_id, device_id)

    async def rename_device(self, user_id: str, device_id: str,
                            display_name: str | None) -> None:
        """Set (or clear) a device's display name; M_NOT_FOUND for no such device."""
        if not await self.store.update_device_display_name(user_id, device_id, display_name):
            raise not_found("No device found")
        await self.notify_device_change(user_id, device_id)

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        async with self.hs.db.transaction() as txn:
            tokens = await self.store.delete_devices(txn, user_id, device_ids)
            await self.hs.pushers.on_devices_deleted(txn, user_id, device_ids)
        await self.hs.auth.invalidate_tokens(tokens)
        for device_id in device_ids:
            await self.hs.stores.to_device.delete_device_inbox(user_id, device_id)
            await self.hs.e2e_keys.delete_device_keys(user_id, device_id)
        for device_id in device_ids:
            await self.notify_device_change(user_id, device_id)

    async def notify_device_change(self, user_id: str, device_id: str) -> None:
        """Record that ``user_id``'s device list changed (the device_lists stream)."""
        # Everyone sharing a room with this user learns of the change in /sync
        # (the device_lists rows wake them, see HomeServer._follow_streams).
        await self.hs.replication.call(DeviceListChanged,
                                       {"user_id": user_id, "device_id": device_id})
