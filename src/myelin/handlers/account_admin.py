"""Account administration from the client API: whois, lock and suspend.

A lock answers every request of the account but logout with 401
``M_USER_LOCKED`` (soft logout: tokens stay); a suspension answers 403
``M_USER_SUSPENDED`` on what ``domain.check_not_suspended`` guards (joining,
knocking, inviting, sending, creating rooms, changing the profile) while
reading, leaving and logging out go on. Both live on the user row; each
change drops the user's cached requesters in every process (``user_tokens``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError, Requester, forbidden, not_found

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

FLAGS = ("locked", "suspended")


class AccountAdminHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.accounts

    async def whois(self, requester: Requester, user_id: str) -> dict[str, Any]:
        """Devices → sessions → connections (ip, last_seen, user_agent): for
        admins, or the user about themself."""
        if not requester.is_admin and requester.user_id != user_id:
            raise forbidden("You are not a server admin")
        if not self.hs.is_mine(user_id):
            raise MatrixError(400, "M_INVALID_PARAM", "Can only whois a local user")
        devices: dict[str, Any] = {}
        for device_id, last_seen, ip, user_agent in await self.store.devices_last_seen(user_id):
            connections = []
            if last_seen is not None and ip:
                connections.append({"ip": ip, "last_seen": last_seen,
                                    "user_agent": user_agent or ""})
            devices[device_id] = {"sessions": [{"connections": connections}]}
        return {"user_id": user_id, "devices": devices}

    async def get_flag(self, requester: Requester, user_id: str, flag: str) -> bool:
        user = await self._target(requester, user_id)
        return bool(getattr(user, flag))

    async def set_flag(self, requester: Requester, user_id: str, flag: str, value: Any) -> bool:
        if not isinstance(value, bool):
            # Authorisation before anything else, even the body (no enumeration).
            self._require_admin(requester)
            raise MatrixError(400, "M_BAD_JSON", f"{flag} must be a boolean")
        await self._target(requester, user_id)
        if user_id == requester.user_id:
            raise forbidden(f"You cannot change your own {flag} status")
        await self.store.set_user_flag(user_id, flag, value)
        await self.hs.auth.invalidate_user(user_id)
        return value

    def _require_admin(self, requester: Requester) -> None:
        if not requester.is_admin:
            raise forbidden("You are not a server admin")

    async def _target(self, requester: Requester, user_id: str) -> Any:
        """The user an admin acts on: checked admin first, so a non-admin
        learns nothing about who exists."""
        self._require_admin(requester)
        if not self.hs.is_mine(user_id):
            raise MatrixError(400, "M_INVALID_PARAM", "Not a user of this server")
        user = await self.store.get_user(user_id)
        if user is None or user.deactivated:
            raise not_found("No such user")
        if user.admin and user_id != requester.user_id:
            raise forbidden("The target user is a server admin")
        return user
