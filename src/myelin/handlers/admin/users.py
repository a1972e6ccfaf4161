"""The admin API's user management: listing, querying, creating and editing
accounts, deactivation (with erasure), passwords, admin rights, devices,
logging in as a user, shadow bans and rate-limit overrides.

Everything here trusts its caller to have checked that the requester is a
server admin (the servlets do, before parsing anything)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from myelin.config import RateLimit
from myelin.domain import MatrixError, Requester, invalid_param, not_found
from myelin.handlers.auth import generate_access_token, hash_password
from myelin.storage.stores.admin import AdminUser

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

USER_ORDER = ("name", "is_guest", "admin", "user_type", "deactivated", "shadow_banned",
              "displayname", "avatar_url", "creation_ts", "last_seen_ts", "locked")


def bad_json(message: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", message)


class AdminUsersHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.admin
        self.accounts = hs.stores.accounts
        # Per-process memo of the admin's per-user settings the send path
        # reads on every message; dropped in every process on a change.
        self._ratelimits: dict[str, RateLimit | None] = {}
        self._shadow_banned: dict[str, bool] = {}
        hs.caches.register_invalidator("admin_ratelimit", self._drop(self._ratelimits))
        hs.caches.register_invalidator("admin_shadow_banned", self._drop(self._shadow_banned))

    @staticmethod
    def _drop(memo: dict[str, Any]) -> Any:
        def apply(keys: list[Any] | None) -> None:
            if keys is None:
                memo.clear()
            for key in keys or ():
                memo.pop(key, None)
        return apply

    async def check_message_rate(self, user_id: str) -> None:
        """rc_message for ``user_id``, or the admin's override (0/0 = unlimited)."""
        if user_id not in self._ratelimits:
            override = await self.store.get_ratelimit(user_id)
            self._ratelimits[user_id] = (None if override is None
                                         else RateLimit(float(override[0]), override[1]))
        self.hs.ratelimiters.message.check(user_id, limit=self._ratelimits[user_id])

    async def is_shadow_banned(self, user_id: str) -> bool:
        if user_id not in self._shadow_banned:
            self._shadow_banned[user_id] = await self.store.is_shadow_banned(user_id)
        return self._shadow_banned[user_id]

    @staticmethod
    def fake_event_id() -> str:
        """What a shadow-banned sender is told it sent (nothing was)."""
        return "$" + secrets.token_urlsafe(32)

    def check_local(self, user_id: str) -> None:
        if not user_id.startswith("@") or ":" not in user_id:
            raise invalid_param(f"Invalid user ID {user_id!r}")
        if not self.hs.is_mine(user_id):
            raise MatrixError(400, "M_INVALID_PARAM", "Can only look up local users")

    async def existing(self, user_id: str) -> AdminUser:
        self.check_local(user_id)
        user = await self.store.get_user(user_id)
        if user is None:
            raise not_found("User not found")
        return user

    # -- listing ----------------------------------------------------------------
    async def list_users(self, *, start: int, limit: int, guests: bool, deactivated: bool,
                         name: str | None, user_id: str | None, admins: bool | None,
                         order_by: str, forwards: bool, locked: bool = True,
                         not_user_types: list[str] | None = None) -> dict[str, Any]:
        users = await self.store.all_users()
        if not locked:
            users = [u for u in users if not u.locked]
        if not_user_types:
            # "" stands for normal users (no user type), as in Synapse.
            users = [u for u in users if (u.user_type or "") not in not_user_types]
        if not guests:
            users = [u for u in users if not u.is_guest]
        if not deactivated:
            users = [u for u in users if not u.deactivated]
        if admins is not None:
            users = [u for u in users if u.admin == admins]
        if user_id:
            users = [u for u in users if user_id.lower() in u.name.lower()]
        if name:
            needle = name.lower()
            users = [u for u in users if needle in u.name.lower()
                     or needle in (u.displayname or "").lower()]

        def key(u: AdminUser) -> tuple[Any, ...]:
            value = getattr(u, order_by)
            # NULLs sort first ascending, as in Synapse's SQL; ties by user id.
            return (value is not None, value if value is not None else 0, u.name)

        users.sort(key=key, reverse=not forwards)
        page = users[start:start + limit]
        body: dict[str, Any] = {"users": [u.to_json() for u in page], "total": len(users)}
        if start + len(page) < len(users):
            body["next_token"] = str(start + len(page))
        return body

    async def query(self, user_id: str) -> dict[str, Any]:
        user = await self.existing(user_id)
        out = user.to_json()
        out["threepids"] = [
            {"medium": t.medium, "address": t.address, "added_at": t.added_at,
             "validated_at": t.validated_at}
            for t in await self.hs.stores.threepids.get_threepids(user_id)]
        out["external_ids"] = []
        out["consent_version"] = None
        out["consent_ts"] = None
        out["consent_server_notice_sent"] = None
        return out

    # -- create / modify -------------------------------------------------------------
    async def upsert(self, requester: Requester, user_id: str,
                     body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """PUT /v2/users/{userId}: 201 and the new user, or 200 and the edited one."""
        self.check_local(user_id)
        self._check_body(body)
        user = await self.store.get_user(user_id)
        created = user is None
        if user is None:
            localpart = user_id[1:].split(":", 1)[0]
            password = body.get("password")
            await self.hs.registration.register_user(
                localpart, password, admin=bool(body.get("admin", False)),
                display_name=body.get("displayname"))
        else:
            if "password" in body:
                await self.set_password(user_id, body["password"],
                                        bool(body.get("logout_devices", True)))
            if "admin" in body:
                await self.set_admin(requester, user_id, body["admin"])
            if "displayname" in body:
                await self.accounts.set_profile_field(user_id, "displayname",
                                                      body["displayname"] or None)
        if "avatar_url" in body:
            await self.accounts.set_profile_field(user_id, "avatar_url", body["avatar_url"])
        if "user_type" in body:
            await self.store.set_user_field(user_id, "user_type", body["user_type"])
        if "threepids" in body:
            await self._replace_threepids(user_id, body["threepids"])
        if "locked" in body:
            await self.accounts.set_user_flag(user_id, "locked", bool(body["locked"]))
            await self.hs.auth.invalidate_user(user_id)
        if not created and "deactivated" in body:
            if body["deactivated"] and not user.deactivated:  # type: ignore[union-attr]
                await self.deactivate(user_id, erase=False)
            elif not body["deactivated"] and user.deactivated:  # type: ignore[union-attr]
                await self.store.set_user_field(user_id, "deactivated", False)
                await self.hs.auth.invalidate_user(user_id)
        return (201 if created else 200), await self.query(user_id)

    @staticmethod
    def _check_body(body: dict[str, Any]) -> None:
        for key in ("admin", "deactivated", "locked", "logout_devices"):
            if key in body and not isinstance(body[key], bool):
                raise bad_json(f"'{key}' parameter is not of type boolean")
        for key in ("password", "displayname", "avatar_url"):
            if key in body and body[key] is not None and not isinstance(body[key], str):
                raise bad_json(f"Invalid {key}")
        if "password" in body and (body["password"] is None or len(body["password"]) > 512):
            raise bad_json("Invalid password")
        if "user_type" in body and body["user_type"] not in (None, "support", "bot"):
            raise bad_json("Invalid user type")
        threepids = body.get("threepids")
        if threepids is not None:
            if not isinstance(threepids, list) or not all(
                    isinstance(t, dict) and isinstance(t.get("medium"), str)
                    and isinstance(t.get("address"), str) for t in threepids):
                raise bad_json("threepids must be a list of {medium, address}")

    async def _replace_threepids(self, user_id: str, threepids: list[dict[str, Any]]) -> None:
        store = self.hs.stores.threepids
        # Refuse addresses another user holds before removing anything.
        for t in threepids:
            owner = await store.user_by_threepid(t["medium"], t["address"])
            if owner is not None and owner != user_id:
                raise MatrixError(409, "M_THREEPID_IN_USE", "Threepid already in use")
        await store.remove_all_threepids(user_id)
        for t in threepids:
            await store.add_threepid(user_id, t["medium"], t["address"])

    async def set_password(self, user_id: str, password: str, logout_devices: bool) -> None:
        if not isinstance(password, str) or len(password) > 512:
            raise bad_json("Invalid password")
        self.hs.auth.check_password_policy(password)
        password_hash = await hash_password(password)
        async with self.hs.db.transaction() as txn:
            await self.accounts.set_password_hash(txn, user_id, password_hash)
        if logout_devices:
            await self.hs.account_lifecycle.logout_all(user_id)

    async def set_admin(self, requester: Requester, user_id: str, admin: Any) -> None:
        if not isinstance(admin, bool):
            raise MatrixError(400, "M_MISSING_PARAM", "Missing key 'admin'")
        if user_id == requester.user_id and not admin:
            raise MatrixError(400, "M_UNKNOWN", "You may not demote yourself.")
        await self.store.set_user_field(user_id, "admin", admin)
        await self.hs.auth.invalidate_user(user_id)

    async def deactivate(self, user_id: str, *, erase: bool) -> None:
        await self.hs.account_lifecycle.deactivate(user_id)
        if erase:
            await self.accounts.set_profile_field(user_id, "displayname", None)
            await self.accounts.set_profile_field(user_id, "avatar_url", None)

    # -- devices -----------------------------------------------------------------
    async def devices(self, user_id: str) -> dict[str, Any]:
        await self.existing(user_id)
        devices = [await self._device_json(user_id, d.device_id)
                   for d in await self.accounts.get_devices(user_id)]
        return {"devices": [d for d in devices if d is not None], "total": len(devices)}

    async def _device_json(self, user_id: str, device_id: str) -> dict[str, Any] | None:
        record = await self.accounts.get_device(user_id, device_id)
        if record is None:
            return None
        agents = {d: ua for d, _seen, _ip, ua in await self.accounts.devices_last_seen(user_id)}
        return {"device_id": device_id, "display_name": record.display_name,
                "last_seen_ip": record.last_seen_ip, "last_seen_ts": record.last_seen_ts,
                "last_seen_user_agent": agents.get(device_id), "user_id": user_id}

    async def create_device(self, user_id: str, device_id: Any) -> None:
        """A device without a token, as appservices or bridges pre-create them."""
        await self.existing(user_id)
        if not isinstance(device_id, str) or not device_id:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing param 'device_id'")
        async with self.hs.db.transaction() as txn:
            created = await self.accounts.upsert_device(txn, user_id, device_id, None)
        if created:
            await self.hs.devices.notify_device_change(user_id, device_id)

    async def device(self, user_id: str, device_id: str) -> dict[str, Any]:
        await self.existing(user_id)
        out = await self._device_json(user_id, device_id)
        if out is None:
            raise not_found("No device found")
        return out

    async def rename_device(self, user_id: str, device_id: str, body: dict[str, Any]) -> None:
        await self.device(user_id, device_id)
        name = body.get("display_name")
        if name is not None and not isinstance(name, str):
            raise bad_json("display_name must be a string")
        await self.hs.devices.rename_device(user_id, device_id, name)

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        await self.existing(user_id)
        await self.hs.devices.delete_devices(user_id, device_ids)

    # -- login as ------------------------------------------------------------------
    async def login_as(self, requester: Requester, user_id: str,
                       valid_until_ms: int | None) -> str:
        """A device-less ("puppet") access token for ``user_id``: it does not
        show among the user's devices and logging it out touches none."""
        user = await self.existing(user_id)
        if user_id == requester.user_id:
            raise MatrixError(400, "M_UNKNOWN", "Cannot use admin API to login as self")
        if user.deactivated:
            raise MatrixError(400, "M_UNKNOWN", "Cannot log in as a deactivated user")
        token = generate_access_token(user_id[1:].split(":", 1)[0])
        async with self.hs.db.transaction() as txn:
            await self.accounts.add_access_token(txn, token, user_id, None, valid_until_ms)
        return token

    # -- shadow ban, rate limits ----------------------------------------------------------
    async def shadow_ban(self, user_id: str, banned: bool) -> None:
        await self.existing(user_id)
        await self.store.set_user_field(user_id, "shadow_banned", banned)
        await self.hs.invalidate_cache("admin_shadow_banned", [user_id])

    async def get_ratelimit(self, user_id: str) -> dict[str, Any]:
        await self.existing(user_id)
        override = await self.store.get_ratelimit(user_id)
        if override is None:
            return {}
        return {"messages_per_second": override[0], "burst_count": override[1]}

    async def set_ratelimit(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        await self.existing(user_id)
        values = []
        for key in ("messages_per_second", "burst_count"):
            value = body.get(key, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise invalid_param(f"{key!r} parameter must be a positive integer.")
            values.append(value)
        await self.store.set_ratelimit(user_id, values[0], values[1])
        await self.hs.invalidate_cache("admin_ratelimit", [user_id])
        return {"messages_per_second": values[0], "burst_count": values[1]}

    async def delete_ratelimit(self, user_id: str) -> None:
        await self.existing(user_id)
        await self.store.delete_ratelimit(user_id)
        await self.hs.invalidate_cache("admin_ratelimit", [user_id])
