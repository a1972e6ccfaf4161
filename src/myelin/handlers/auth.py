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


def generate_refresh_token(localpart: str) -> str:
    """Like an access token, with its own prefix so the two never mix."""
    return "syr_" + generate_access_token(localpart)[4:]


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


def _expired() -> MatrixError:
    return MatrixError(401, "M_UNKNOWN_TOKEN", "Access token has expired", soft_logout=True)


def _locked() -> MatrixError:
    return MatrixError(401, "M_USER_LOCKED", "This account has been locked", soft_logout=True)


def locked_error() -> MatrixError:
    """What every request of a locked account but logout answers."""
    return _locked()


class AuthHandler:
    """Resolves access tokens to requesters, with a per-process cache."""

    CACHE_SIZE = 50_000

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.accounts
        # token -> (requester, valid until ms or None); logouts, refreshes,
        # locks and suspensions anywhere arrive as `caches` rows.
        self._token_cache: Cache[str, tuple[Requester, int | None]] = hs.caches.register(
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
        service = self.hs.appservices.by_token(token)
        if service is not None:
            # An application service acts as its sender or, with ?user_id=,
            # as a user of its namespace (and ?device_id=, one of its devices).
            return await self.hs.appservices.requester_for(
                service, raw.query.get("user_id"),
                raw.query.get("device_id") or raw.query.get("org.matrix.msc3202.device_id"))
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
        cached: tuple[Requester, int | None] | None = self._token_cache.get(token)
        if cached is not None:
            requester, valid_until = cached
            if valid_until is not None and valid_until < now_ms():
                raise _expired()
            return requester
        generation = self._token_cache.generation
        unknown = MatrixError(401, "M_UNKNOWN_TOKEN", "Unrecognised access token",
                              soft_logout=False)
        if not token_checksum_ok(token):
            raise unknown
        record = await self.store.get_token(token)
        if record is None:
            raise unknown
        if record.valid_until_ms is not None and record.valid_until_ms < now_ms():
            raise _expired()
        user = await self.store.get_user(record.user_id)
        if user is None or user.deactivated:
            raise unknown
        if record.refresh_token is not None and not record.used:
            # The first use of a refreshed pair revokes the refresh token before it.
            await self.store.mark_access_token_used(token, record.refresh_token)
        requester = Requester(user.user_id, record.device_id, token, user.admin, user.is_guest,
                              is_locked=user.locked, is_suspended=user.suspended)
        self._token_cache.put_if(generation, token, (requester, record.valid_until_ms))
        return requester

    def follow_caches(self, caches: CacheRegistry) -> None:
        caches.register_invalidator("user_tokens", self._drop_users_tokens)

    def _drop_users_tokens(self, user_ids: list[Any] | None) -> None:
        users = set(user_ids or ())
        self._token_cache.invalidate_where(
            lambda _, entry: user_ids is None or entry[0].user_id in users)

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
        session = await self.issue_tokens(user_id, device_id, display_name)
        return session["device_id"], session["access_token"]

    async def issue_tokens(self, user_id: str, device_id: str | None, display_name: str | None,
                           *, refreshable: bool = False) -> dict[str, Any]:
        """A device (created if new) and its tokens, as login answers them:
        ``device_id``, ``access_token`` and, when ``refreshable``,
        ``refresh_token`` and ``expires_in_ms``."""
        device_id = device_id or generate_device_id()
        localpart = user_id[1:].split(":", 1)[0]
        token = generate_access_token(localpart)
        config = self.hs.config
        lifetime = (config.refreshable_access_token_lifetime_ms if refreshable
                    else config.nonrefreshable_access_token_lifetime_ms)
        if config.session_lifetime_ms and (lifetime is None or
                                           lifetime > config.session_lifetime_ms):
            lifetime = config.session_lifetime_ms
        valid_until = now_ms() + lifetime if lifetime else None
        refresh_token = generate_refresh_token(localpart) if refreshable else None
        async with self.hs.db.transaction() as txn:
            new_device = await self.store.upsert_device(txn, user_id, device_id, display_name)
            if refresh_token is not None:
                await self.store.add_refresh_token(txn, refresh_token, user_id, device_id, None)
            await self.store.add_access_token(txn, token, user_id, device_id, valid_until,
                                              refresh_token)
        if new_device:
            await self.hs.devices.notify_device_change(user_id, device_id)
        session: dict[str, Any] = {"device_id": device_id, "access_token": token}
        if refresh_token is not None:
            session["refresh_token"] = refresh_token
        if lifetime:
            session["expires_in_ms"] = lifetime
        return session

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        """Trade a refresh token for a new access token and refresh token.

        The old access token goes at once; the old refresh token stays usable
        (a client whose answer was lost retries with it) until the new pair is
        first used (``mark_access_token_used``, or refreshing with the new one)."""
        unknown = MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown refresh token",
                              soft_logout=False)
        if not refresh_token.startswith("syr_") or \
                not token_checksum_ok("syt_" + refresh_token[4:]):
            raise unknown
        lifetime = self.hs.config.refreshable_access_token_lifetime_ms
        if self.hs.config.session_lifetime_ms and (
                lifetime is None or lifetime > self.hs.config.session_lifetime_ms):
            lifetime = self.hs.config.session_lifetime_ms
        async with self.hs.db.transaction() as txn:
            record = await self.store.get_refresh_token(txn, refresh_token)
            if record is None:
                raise unknown
            user_id, device_id, prev = record
            user = await self.store.get_user(user_id)
            if user is None or user.deactivated:
                raise unknown
            if user.locked:
                raise _locked()
            if prev is not None:
                await self.store.delete_refresh_token(txn, prev)
            localpart = user_id[1:].split(":", 1)[0]
            new_refresh, new_access = (generate_refresh_token(localpart),
                                       generate_access_token(localpart))
            old_access = await self.store.access_tokens_of_refresh(txn, refresh_token)
            for token in old_access:
                await self.store.delete_token(txn, token)
            await self.store.add_refresh_token(txn, new_refresh, user_id, device_id,
                                               refresh_token)
            await self.store.add_access_token(
                txn, new_access, user_id, device_id,
                now_ms() + lifetime if lifetime else None, new_refresh)
        await self.invalidate_tokens(old_access)
        answer: dict[str, Any] = {"access_token": new_access, "refresh_token": new_refresh}
        if lifetime:
            answer["expires_in_ms"] = lifetime
        return answer

    async def user_id_from_identifier(self, body: dict[str, Any]) -> str | None:
        """The user a login (or a UIA password stage) names: ``identifier``
        of type ``m.id.user`` or ``m.id.thirdparty`` (through the threepid
        table), or the deprecated top-level ``user`` / ``medium`` + ``address``.
        None when it names nobody we know of."""
        identifier = body.get("identifier")
        if isinstance(identifier, dict):
            kind = identifier.get("type")
            if kind == "m.id.user":
                user = identifier.get("user")
            elif kind == "m.id.thirdparty":
                return await self._user_by_threepid(identifier.get("medium"),
                                                    identifier.get("address"))
            else:
                raise MatrixError(400, "M_UNKNOWN", "Unsupported identifier type")
        elif identifier is not None:
            raise MatrixError(400, "M_BAD_JSON", "identifier must be an object")
        else:
            user = body.get("user")
            if user is None and "medium" in body:
                return await self._user_by_threepid(body.get("medium"), body.get("address"))
        if not isinstance(user, str) or not user:
            return None
        return await self.hs.account_lifecycle.login_user_id(self.hs.qualify_user_id(user))

    async def _user_by_threepid(self, medium: Any, address: Any) -> str | None:
        if not isinstance(medium, str) or not isinstance(address, str):
            raise MatrixError(400, "M_BAD_JSON", "medium and address must be strings")
        return await self.hs.stores.threepids.user_by_threepid(medium, address)

    # -- user-interactive auth ------------------------------------------
    async def check_user_interactive_auth(self, requester: Requester, body: dict[str, Any],
                                          uri: str, method: str, description: str) -> None:
        """Require the user to prove their password again (``m.login.password``).

        The first call answers 401 with the flows and a session; the client
        retries the same request with ``auth`` (see handlers/uia.py)."""
        if requester.appservice_id is not None:
            return  # the as_token is the service's proof; it has no password to give
        session = await self.hs.uia.authenticate(
            flows=[["m.login.password"]], body=body, uri=uri, method=method,
            description=description, requester=requester)
        await self.hs.uia.finish(session)

    def require_admin(self, requester: Requester) -> None:
        if not requester.is_admin:
            raise forbidden("You are not a server admin")
