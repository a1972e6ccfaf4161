"""Creating accounts: the client ``/register`` flow and shared-secret admin registration."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError, Requester, forbidden
from myelin.handlers.auth import check_password, hash_password
from myelin.handlers.uia import (
    DUMMY,
    EMAIL_IDENTITY,
    REGISTRATION_TOKEN,
    has_pinned_content,
)

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

# Localparts of newly registered users: the spec's historical-safe grammar.
# fullmatch, not match with "$": "$" also matches before a final newline.
_LOCALPART = re.compile(r"[a-z0-9._=\-/+]+")
NONCE_LIFETIME_S = 60.0


class RegistrationHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.accounts
        self._nonces: dict[str, float] = {}

    def check_username(self, localpart: str) -> str:
        if not localpart:
            raise MatrixError(400, "M_INVALID_USERNAME", "User ID cannot be empty")
        if not _LOCALPART.fullmatch(localpart):
            raise MatrixError(400, "M_INVALID_USERNAME",
                              "User ID can only contain characters a-z, 0-9, or '=_-./+'")
        user_id = f"@{localpart}:{self.hs.server_name}"
        # An application service's namespace often starts with "_": say why.
        self.hs.appservices.check_user_allowed(user_id)  # M_EXCLUSIVE
        if localpart.startswith("_"):
            raise MatrixError(400, "M_INVALID_USERNAME", "User ID may not begin with '_'")
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
                            display_name: str | None = None, is_guest: bool = False,
                            password_hash: str | None = None,
                            appservice_id: str | None = None) -> str:
        user_id = (self._check_appservice_localpart(localpart) if appservice_id
                   else self.check_username(localpart))
        if password:
            password_hash = await hash_password(password)
        async with self.hs.db.transaction() as txn:
            created = await self.store.create_user(txn, user_id, password_hash, admin=admin,
                                                   is_guest=is_guest,
                                                   appservice_id=appservice_id)
        if not created:
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.")
        if display_name:
            await self.store.set_profile_field(user_id, "displayname", display_name)
        return user_id

    def _check_appservice_localpart(self, localpart: str) -> str:
        # A service's puppets may start with "_" (that prefix is kept for them).
        if not localpart or not _LOCALPART.fullmatch(localpart):
            raise MatrixError(400, "M_INVALID_USERNAME",
                              "User ID can only contain characters a-z, 0-9, or '=_-./+'")
        return f"@{localpart}:{self.hs.server_name}"

    async def register_appservice_user(self, requester: Requester,
                                       body: dict[str, Any]) -> dict[str, Any]:
        """``/register`` with ``type: m.login.application_service``: no
        user-interactive auth, any localpart of the service's user namespace."""
        username = body.get("username")
        if not isinstance(username, str) or not username:
            raise MatrixError(400, "M_INVALID_USERNAME", "username is required")
        localpart = username.lower()
        self._check_appservice_localpart(localpart)
        await self.hs.appservices.register_as(requester, localpart)
        device_id = body.get("device_id")
        display_name = body.get("initial_device_display_name")
        if device_id is not None and not isinstance(device_id, str):
            raise MatrixError(400, "M_INVALID_PARAM", "device_id must be a string")
        if display_name is not None and not isinstance(display_name, str):
            raise MatrixError(400, "M_INVALID_PARAM",
                              "initial_device_display_name must be a string")
        user_id = await self.register_user(localpart, None,
                                           appservice_id=requester.appservice_id)
        response: dict[str, Any] = {"user_id": user_id, "home_server": self.hs.server_name}
        if not body.get("inhibit_login"):
            response.update(await self.hs.auth.issue_tokens(
                user_id, device_id, display_name,
                refreshable=body.get("refresh_token") is True))
        return response

    # -- the client /register flow -----------------------------------------
    def flows(self) -> list[list[str]]:
        email = [EMAIL_IDENTITY] if self.hs.email_validation is not None else []
        if self.hs.config.registration_requires_token:
            return [[REGISTRATION_TOKEN]]
        return [[DUMMY]] + ([email] if email else [])

    async def register_with_uia(self, body: dict[str, Any], uri: str,
                                client_ip: str) -> dict[str, Any]:
        """``POST /register`` (kind ``user``): user-interactive auth, then the
        account and (unless ``inhibit_login``) a session.

        The first request's parameters are kept in the UIA session, so later
        stages may send only ``auth``; a session that already registered its
        user answers the same user again (a retried final stage creates no
        second account)."""
        hs = self.hs
        uia = hs.uia
        existing = await uia.load(body)
        stored = existing.params.get("registration") if existing else None
        if stored is not None and not has_pinned_content(body) and "password" not in body:
            params = dict(stored)
        else:
            params = await self._registration_params(body, stored)
        registered = existing.params.get("registered_user_id") if existing else None
        guest: Requester | None = None
        if params.get("guest_access_token") and registered is None:
            guest = await self._guest_to_upgrade(params)
        elif params.get("username") and registered is None:
            # Check the username before the auth dance, so the client learns early.
            await self.check_available(params["username"])
        session = await uia.authenticate(
            flows=self.flows(), body=body, uri=uri, method="POST",
            description="register an account", requester=None,
            params={"registration": params})
        user_id = session.params.get("registered_user_id")
        if user_id is None:
            hs.ratelimiters.registration.check(client_ip)
            user_id = await self._create(params, guest)
            token = session.params.get("registration_token")
            if isinstance(token, str):
                await hs.stores.registration_tokens.complete_use(token)
            session.params["registered_user_id"] = user_id
            await uia.save(session)
            threepid = session.params.get("threepid")
            if isinstance(threepid, dict):
                # The address the email stage proved becomes the account's.
                await hs.threepids.add_validated(user_id, threepid["medium"],
                                                 threepid["address"])
        response: dict[str, Any] = {"user_id": user_id, "home_server": hs.server_name}
        if not params.get("inhibit_login"):
            response.update(await hs.auth.issue_tokens(
                user_id, params.get("device_id"), params.get("initial_device_display_name"),
                refreshable=bool(params.get("refresh_token"))))
        return response

    async def _registration_params(self, body: dict[str, Any],
                                   stored: dict[str, Any] | None) -> dict[str, Any]:
        """The parameters of a /register body, type-checked; the password is
        kept only as its bcrypt hash."""
        username = body.get("username")
        password = body.get("password")
        if username is not None and not isinstance(username, str):
            raise MatrixError(400, "M_INVALID_USERNAME", "username must be a string")
        if password is not None and not isinstance(password, str):
            raise MatrixError(400, "M_INVALID_PARAM", "password must be a string")
        device_id = body.get("device_id")
        display_name = body.get("initial_device_display_name")
        if device_id is not None and not isinstance(device_id, str):
            raise MatrixError(400, "M_INVALID_PARAM", "device_id must be a string")
        if display_name is not None and not isinstance(display_name, str):
            raise MatrixError(400, "M_INVALID_PARAM",
                              "initial_device_display_name must be a string")
        guest_token = body.get("guest_access_token")
        if guest_token is not None and not isinstance(guest_token, str):
            raise MatrixError(400, "M_INVALID_PARAM", "guest_access_token must be a string")
        refresh = body.get("refresh_token", False)
        if not isinstance(refresh, bool):
            raise MatrixError(400, "M_INVALID_PARAM", "refresh_token must be a boolean")
        password_hash = None
        if password:
            self.hs.auth.check_password_policy(password)
            previous = (stored or {}).get("password_hash")
            # The same password again (a later stage) keeps the hash we have.
            if previous and await check_password(password, previous):
                password_hash = previous
            else:
                password_hash = await hash_password(password)
        localpart = username.lower() if username else None
        if localpart is not None:
            self.check_username(localpart)
        return {"username": localpart, "password_hash": password_hash, "device_id": device_id,
                "initial_device_display_name": display_name,
                "inhibit_login": bool(body.get("inhibit_login", False)),
                "guest_access_token": guest_token, "refresh_token": refresh}

    async def _guest_to_upgrade(self, params: dict[str, Any]) -> Requester:
        """The guest a ``guest_access_token`` names; its localpart must be the username."""
        guest = await self.hs.auth.requester_for_token(params["guest_access_token"])
        if not guest.is_guest:
            raise forbidden("guest_access_token is not a guest's token")
        if params.get("username") is None:
            params["username"] = guest.localpart
        if params["username"] != guest.localpart:
            raise forbidden("Cannot register taken user ID without valid guest credentials")
        return guest

    async def _create(self, params: dict[str, Any], guest: Requester | None) -> str:
        if guest is not None:
            async with self.hs.db.transaction() as txn:
                upgraded = await self.store.upgrade_guest(txn, guest.user_id,
                                                          params.get("password_hash"))
            if not upgraded:
                raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.")
            # Cached requesters still say "guest": drop them everywhere.
            await self.hs.auth.invalidate_user(guest.user_id)
            return guest.user_id
        localpart = params.get("username") or await self.generate_localpart()
        return await self.register_user(localpart, None,
                                        password_hash=params.get("password_hash"))

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
