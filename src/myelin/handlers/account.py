"""Account lifecycle beyond registration: logins' user ids, passwords,
logging out, and deactivation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from myelin.domain import Requester
from myelin.handlers.auth import hash_password

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer


class AccountLifecycleHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def login_user_id(self, user_id: str) -> str:
        """The stored spelling of ``user_id`` when it differs only in case
        from exactly one account (``@Alice:hs`` logs in as ``@alice:hs``)."""
        candidates = await self.hs.stores.accounts.find_user_case_insensitive(user_id)
        if user_id not in candidates and len(candidates) == 1:
            return candidates[0]
        return user_id

    async def change_password(self, requester: Requester, new_password: str,
                              logout_devices: bool) -> None:
        """Set a new password; unless told not to, log out every other device."""
        store = self.hs.stores.accounts
        password_hash = await hash_password(new_password)
        async with self.hs.db.transaction() as txn:
            await store.set_password_hash(txn, requester.user_id, password_hash)
            if logout_devices:
                await self.hs.pushers.on_password_changed(txn, requester)
        if logout_devices:
            others = [d.device_id for d in await store.get_devices(requester.user_id)
                      if d.device_id != requester.device_id]
            await self.hs.devices.delete_devices(requester.user_id, others)

    async def logout(self, requester: Requester) -> None:
        """End the requester's session: its device, or a device-less token."""
        if requester.device_id:
            await self.hs.devices.delete_devices(requester.user_id, [requester.device_id])
            return
        async with self.hs.db.transaction() as txn:
            await self.hs.stores.accounts.delete_token(txn, requester.access_token)
            await self.hs.pushers.on_token_deleted(txn, requester.access_token)
        await self.hs.auth.invalidate_tokens([requester.access_token])

    async def logout_all(self, user_id: str, *, deactivate: bool = False) -> None:
        """Delete every device of ``user_id`` and every token left over (and,
        with ``deactivate``, forbid logins from now on, in the same transaction)."""
        store = self.hs.stores.accounts
        devices = [d.device_id for d in await store.get_devices(user_id)]
        await self.hs.devices.delete_devices(user_id, devices)
        async with self.hs.db.transaction() as txn:
            for token, _ in await store.tokens_of_user(txn, user_id):
                await store.delete_token(txn, token)
            await self.hs.pushers.on_logged_out_everywhere(txn, user_id)
            if deactivate:
                await store.mark_deactivated(txn, user_id)
        await self.hs.auth.invalidate_user(user_id)

    async def deactivate(self, user_id: str) -> None:
        """Log out everywhere, forbid logins, and leave every room."""
        await self.logout_all(user_id, deactivate=True)
        await self.hs.stores.threepids.remove_all_threepids(user_id)
        leave_all = getattr(self.hs, "leave_all_rooms", None)
        if leave_all is not None:
            await leave_all(user_id)
