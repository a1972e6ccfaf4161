"""Creating accounts: the client ``/register`` flow and shared-secret admin registration."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError, forbidden
from myelin.handlers.auth import hash_password

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

# Localparts of newly registered users: the spec's historical-safe grammar.
_LOCALPART = re.compile(r"^[a-z0-9._=\-/+]+$")
NONCE_LIFETIME_S = 60.0


class RegistrationHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.accounts
        self._nonces: dict[str, float] = {}

    def check_username(self, localpart: str) -> str:
        if not localpart:
            raise MatrixError(400, "M_INVALID_USERNAME", "User ID cannot be empty")
        if not _LOCALPART.match(localpart):
            raise MatrixError(400, "M_INVALID_USERNAME",
                              "User ID can only contain characters a-z, 0-9, or '=_-./+'")
        if localpart.startswith("_"):
            raise MatrixError(400, "M_INVALID_USERNAME", "User ID may not begin with '_'")
        user_id = f"@{localpart}:{self.hs.server_name}"
        if len(user_id) > 255:
            raise MatrixError(400, "M_INVALID_USERNAME", "User ID is too long")
        return user_id

    async def check_available(self, localpart: str) -> str:
        user_id = self.check_username(localpart)
        if await self.store.user_id_taken(user_id):
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.")
        return user_id

    async def generate_localpart(self) -> str:
        while True:
            candidate = str(secrets.randbelow(10**9) + 10**9)
            if not await self.store.user_id_taken(f"@{candidate}:{self.hs.server_name}"):
                return candidate

    async def register_user(self, localpart: str, password: str | None, *, admin: bool = False,
                            display_name: str | None = None, is_guest: bool = False) -> str:
        user_id = self.check_username(localpart)
        password_hash = await hash_password(password) if password else None
        async with self.hs.db.transaction() as txn:
            created = await self.store.create_user(txn, user_id, password_hash, admin=admin,
                                                   is_guest=is_guest)
        if not created:
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.")
        if display_name:
            await self.store.set_profile_field(user_id, "displayname", display_name)
        return user_id

    # -- shared-secret registration (Synapse's admin API) --------------------
    def new_nonce(self) -> str:
        now = time.monotonic()
        for nonce, created in list(self._nonces.items()):
            if now - created > NONCE_LIFETIME_S:
                del self._nonces[nonce]
        nonce = secrets.token_hex(32)
        self._nonces[nonce] = now
        return nonce

    async def register_with_shared_secret(self, body: dict[str, Any]) -> dict[str, Any]:
        secret = self.hs.config.registration_shared_secret
        if not secret:
            raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
        nonce = body.get("nonce")
        if not isinstance(nonce, str) or nonce not in self._nonces:
            raise MatrixError(400, "M_UNKNOWN", "unrecognised nonce")
        del self._nonces[nonce]
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not username or "\x00" in username:
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid username")
        if not isinstance(password, str) or not password or "\x00" in password:
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid password")
        admin = bool(body.get("admin", False))
        got_mac = body.get("mac")
        if not isinstance(got_mac, str):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid mac")
        want = hmac.new(secret.encode(), digestmod=hashlib.sha1)
        want.update(nonce.encode() + b"\x00" + username.encode() + b"\x00" + password.encode()
                    + b"\x00" + (b"admin" if admin else b"notadmin"))
        user_type = body.get("user_type")
        if user_type is not None:
            want.update(b"\x00" + str(user_type).encode())
        if not hmac.compare_digest(want.hexdigest(), got_mac):
            raise forbidden("HMAC incorrect")
        user_id = await self.register_user(username.lower(), password, admin=admin,
                                           display_name=body.get("displayname") or None)
        device_id, token = await self.hs.auth.issue_session(user_id, None, None)
        return {"user_id": user_id, "home_server": self.hs.server_name,
                "access_token": token, "device_id": device_id}
