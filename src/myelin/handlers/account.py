"""Account lifecycle beyond registration: deactivation."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer


class AccountLifecycleHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def deactivate(self, user_id: str) -> None:
        """Log out everywhere, forbid logins, and leave every room."""
        store = self.hs.stores.accounts
        devices = [d.device_id for d in await store.get_devices(user_id)]
        await self.hs.devices.delete_devices(user_id, devices)
        async with self.hs.db.transaction() as txn:
            for token, _ in await store.tokens_of_user(txn, user_id):
                await store.delete_token(txn, token)
            await store.mark_deactivated(txn, user_id)
        await self.hs.auth.invalidate_user(user_id)
        leave_all = getattr(self.hs, "leave_all_rooms", None)
        if leave_all is not None:
            await leave_all(user_id)
