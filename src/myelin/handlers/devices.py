"""Devices of local users: listing, renaming, deleting, and announcing changes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from myelin.storage.stores.accounts import DeviceRecord

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer


class DeviceHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.accounts

    async def get_devices(self, user_id: str) -> list[DeviceRecord]:
        return await self.store.get_devices(user_id)

    async def get_device(self, user_id: str, device_id: str) -> DeviceRecord | None:
        return await self.store.get_device(user_id, device_id)

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        async with self.hs.db.transaction() as txn:
            tokens = await self.store.delete_devices(txn, user_id, device_ids)
        self.hs.auth.invalidate_tokens(tokens)
        for device_id in device_ids:
            await self.hs.stores.to_device.delete_device_inbox(user_id, device_id)
            await self.hs.e2e_keys.delete_device_keys(user_id, device_id)
        for device_id in device_ids:
            await self.notify_device_change(user_id, device_id)

    async def notify_device_change(self, user_id: str, device_id: str) -> None:
        """Record that ``user_id``'s device list changed (the device_lists stream)."""
        await self.hs.stores.device_lists.record_change(user_id, device_id)
        # Everyone sharing a room with this user learns of the change in /sync.
        rooms = await self.hs.stores.events.get_rooms_for_user(user_id)
        self.hs.notifier.notify(rooms=[m.room_id for m in rooms], users=[user_id])
