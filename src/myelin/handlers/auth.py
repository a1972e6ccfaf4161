"""Authentication: access tokens, passwords and user-interactive auth.

Access tokens look like ``syt_<localpart b64>_<random>_<crc>``: the prefix
lets a reverse proxy hash requests of one user onto one worker (the seed's
nginx maps ``syt_(?<username>.*?)_``), the random part carries 160 bits, and
the CRC lets us reject typos without a database round trip.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import string
import time
import zlib
from typing import TYPE_CHECKING, Any

import bcrypt
from aiohttp import web

from myelin.domain import MatrixError, Requester, forbidden
from myelin.storage.caches import Cache, CacheRegistry
from myelin.storage.stores.accounts import now_ms

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

_TOKEN_ALPHABET = string.ascii_letters + string.digits
DEVICE_SEEN_INTERVAL_S = 60.0
_BASE62 = string.digits + string.ascii_letters


def _base62(number: int, width: int) -> str:
    out = []
    while number:
        number, rem = divmod(number, 62)
        out.append(_BASE62[rem])
    return "".join(reversed(out)).rjust(width, "0")


def generate_access_token(localpart: str) -> str:
    b64 = base64.urlsafe_b64encode(localpart.encode()).decode().rstrip("=")
    random_part = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(20))
    base = f"syt_{b64}_{random_part}"
    return f"{base}_{_base62(zlib.crc32(base.encode()), 6)}"


def token_checksum_ok(token: str) -> bool:
    base, _, crc = token.rpartition("_")
    if not token.startswith("syt_") or not base:
        return True  # not one of ours (e.g. an appservice token): check the database
    return _base62(zlib.crc32(base.encode()), 6) == crc


def generate_device_id() -> str:
    return "".join(secrets.choice(string.ascii_uppercase) for _ in range(10))


async def hash_password(password: str) -> str:
    # bcrypt is deliberately slow: run it off the event loop.
    def work() -> str:
        return bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt(rounds=12)).decode()

    return await asyncio.get_running_loop().run_in_executor(None, work)


async def check_password(password: str, password_hash: str | None) -> bool:
    if not password_hash:
        return False

    def work() -> bool:
        try:
            return bcrypt.checkpw(password.encode()[:72], password_hash.encode())
        except ValueError:
            return False

    return await asyncio.get_running_loop().run_in_executor(None, work)


class AuthHandler:
    """Resolves access tokens to requesters, with a per-process cache."""

    CACHE_SIZE = 50_000

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.accounts
        # token -> requester; logouts anywhere arrive as `caches` rows.
        self._token_cache: Cache[str, Requester] = hs.caches.register(
            "access_tokens", self.CACHE_SIZE)
        self._device_seen: dict[tuple[str, str], float] = {}
        self._background: set[asyncio.Task[None]] = set()

    @staticmethod
    def extract_token(raw: web.BaseRequest) -> str | None:
        header = raw.headers.get("Authorization")
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise MatrixError(401, "M_MISSING_TOKEN", "Invalid Authorization header")
            return value.strip()
        return raw.query.get("access_token")

    async def authenticate(self, raw: web.BaseRequest) -> Requester:
        token = self.extract_token(raw)
        if not token:
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
        requester = await self.requester_for_token(token)
        if requester.device_id is not None:
            self._note_device_seen(requester.user_id, requester.device_id, raw)
        return requester

    def _note_device_seen(self, user_id: str, device_id: str, raw: web.BaseRequest) -> None:
        """Keep the device list's last_seen_ts/ip roughly current without a
        write per request: at most one per device per ``DEVICE_SEEN_INTERVAL_S``."""
        now = time.monotonic()
        key = (user_id, device_id)
        if now - self._device_seen.get(key, -DEVICE_SEEN_INTERVAL_S) < DEVICE_SEEN_INTERVAL_S:
            return
        self._device_seen[key] = now
        if len(self._device_seen) > self.CACHE_SIZE:
            self._device_seen.clear()
        ip = raw.remote or ""
        forwarded = raw.headers.get("X-Forwarded-For")
        if forwarded and self.hs.trust_forwarded_for(raw):
            ip = forwarded.split(",")[0].strip()
        task = asyncio.get_running_loop().create_task(self.store.record_device_seen(
            user_id, device_id, ip, raw.headers.get("User-Agent")))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def requester_for_token(self, token: str) -> Requester:
        cached: Requester | None = self._token_cache.get(token)
        if cached is not None:
            return cached
        generation = self._token_cache.generation
        unknown = MatrixError(401, "M_UNKNOWN_TOKEN", "Unrecognised access token",
                              soft_logout=False)
        if not token_checksum_ok(token):
            raise unknown
        record = await self.store.get_token(token)
        if record is None:
            raise unknown
        if record.valid_until_ms is not None and record.valid_until_ms < now_ms():
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Access token has expired",
                              soft_logout=True)
        user = await self.store.get_user(record.user_id)
        if user is None or user.deactivated:
            raise unknown
        requester = Requester(user.user_id, record.device_id, token, user.admin, user.is_guest)
        if record.valid_until_ms is None:
            self._token_cache.put_if(generation, token, requester)
        return requester

    def follow_caches(self, caches: CacheRegistry) -> None:
        caches.register_invalidator("user_tokens", self._drop_users_tokens)

    def _drop_users_tokens(self, user_ids: list[Any] | None) -> None:
        users = set(user_ids or ())
        self._token_cache.invalidate_where(
            lambda _, requester: user_ids is None or requester.user_id in users)

    async def invalidate_tokens(self, tokens: list[str]) -> None:
        """Forget these tokens in every process (they were deleted)."""
        if tokens:
            await self.hs.invalidate_cache("access_tokens", list(tokens))

    async def invalidate_user(self, user_id: str) -> None:
        """Forget every token of ``user_id`` in every process."""
        await self.hs.invalidate_cache("user_tokens", [user_id])

    # -- passwords -------------------------------------------------------
    async def validate_login(self, user_id: str, password: str) -> bool:
        user = await self.store.get_user(user_id)
        if user is None or user.deactivated:
            return False
        return await check_password(password, user.password_hash)

    def check_password_policy(self, password: str) -> None:
        minimum = self.hs.config.password_min_length
        if minimum and len(password) < minimum:
            raise MatrixError(400, "M_PASSWORD_TOO_SHORT",
                              f"Password must be at least {minimum} characters")

    async def issue_session(self, user_id: str, device_id: str | None,
                            display_name: str | None) -> tuple[str, str]:
        """Create (or reuse) a device and a fresh access token for it."""
        device_id = device_id or generate_device_id()
        token = generate_access_token(user_id[1:].split(":", 1)[0])
        lifetime = self.hs.config.session_lifetime_ms
        valid_until = now_ms() + lifetime if lifetime else None
        async with self.hs.db.transaction() as txn:
            new_device = await self.store.upsert_device(txn, user_id, device_id, display_name)
            await self.store.add_access_token(txn, token, user_id, device_id, valid_until)
        if new_device:
            await self.hs.devices.notify_device_change(user_id, device_id)
        return device_id, token

    # -- user-interactive auth ------------------------------------------
    async def check_user_interactive_auth(self, requester: Requester, body: dict[str, Any],
                                          uri: str, method: str, description: str) -> None:
        """Require the user to prove their password again (``m.login.password``).

        The first call answers 401 with the flows and a session; the client
        retries with ``auth``.
        """
        flows = [{"stages": ["m.login.password"]}]
        auth = body.get("auth")
        if not isinstance(auth, dict):
            new_session = secrets.token_urlsafe(18)
            await self.store.create_uia_session(new_session, uri, method,
                                                {"user_id": requester.user_id})
            raise MatrixError(401, "M_UNAUTHORIZED", f"Authentication needed to {description}",
                              flows=flows, params={}, session=new_session, completed=[])
        session = auth.get("session")
        if auth.get("type") != "m.login.password":
            raise MatrixError(401, "M_UNRECOGNIZED", "Unsupported auth type", flows=flows,
                              params={}, session=session, completed=[])
        identifier = auth.get("identifier") or {}
        user = identifier.get("user") if isinstance(identifier, dict) else None
        user = user or auth.get("user") or requester.user_id
        user_id = self.hs.qualify_user_id(str(user))
        password = auth.get("password")
        if user_id != requester.user_id or not isinstance(password, str) or \
                not await self.validate_login(user_id, password):
            raise MatrixError(401, "M_FORBIDDEN", "Invalid password", flows=flows, params={},
                              session=session, completed=[])
        if isinstance(session, str):
            await self.store.delete_uia_session(session)

    def require_admin(self, requester: Requester) -> None:
        if not requester.is_admin:
            raise forbidden("You are not a server admin")
