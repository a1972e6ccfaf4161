"""User profiles: display name, avatar and custom fields, and carrying changes into rooms.

A display name or avatar change is also a membership event: every room the
user is joined to gets a fresh ``m.room.member`` join carrying the new
display name and avatar, so that other members see it. Other keys (``m.tz``,
namespaced custom keys: the spec's extended profiles) are stored as JSON and
stay out of member events. A remote user's profile is asked of their
server (`federation.queries`, cached briefly).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import orjson

from myelin.domain import MatrixError, Requester, forbidden, invalid_param, missing_param, not_found

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)

FIELDS = ("displayname", "avatar_url")
MAX_DISPLAYNAME_LENGTH = 256
MAX_AVATAR_URL_LENGTH = 1000
# The profile keys the spec allows in a path: the two classic fields, m.tz,
# and namespaced custom keys.
_KEY_GRAMMAR = re.compile(r"^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$")
MAX_KEY_BYTES = 255
MAX_PROFILE_BYTES = 64 * 1024
# The spec types avatar_url as a URI (an mxc:// one in practice; clients and
# other servers also use http(s) ones): a scheme, then no whitespace.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")


class ProfileHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.accounts

    async def _existing_profile(self, user_id: str) -> tuple[str | None, str | None]:
        if not user_id.startswith("@") or ":" not in user_id:
            raise invalid_param(f"Invalid user ID {user_id!r}")
        if not self.hs.is_mine(user_id):
            raise not_found("Profile not found")
        if await self.store.get_user(user_id) is None and \
                not await self.hs.appservices.query_user(user_id):
            raise not_found("Profile not found")
        profile = await self.store.get_profile(user_id)
        return profile if profile is not None else (None, None)

    async def get_profile(self, user_id: str) -> dict[str, Any]:
        if self._is_remote(user_id):
            return await self.hs.federation_queries.profile(user_id)
        displayname, avatar_url = await self._existing_profile(user_id)
        out: dict[str, Any] = {}
        if displayname is not None:
            out["displayname"] = displayname
        if avatar_url is not None:
            out["avatar_url"] = avatar_url
        out.update(await self.store.get_custom_profile_fields(user_id))
        return out

    @staticmethod
    def check_key(key: str) -> None:
        if len(key.encode()) > MAX_KEY_BYTES:
            raise MatrixError(400, "M_KEY_TOO_LARGE",
                              f"Profile keys are at most {MAX_KEY_BYTES} bytes")
        if not _KEY_GRAMMAR.match(key):
            raise invalid_param("Invalid profile key.")

    def _is_remote(self, user_id: str) -> bool:
        return user_id.startswith("@") and ":" in user_id and not self.hs.is_mine(user_id)

    async def get_field(self, user_id: str, key: str) -> dict[str, Any]:
        self.check_key(key)
        if self._is_remote(user_id):
            profile = await self.hs.federation_queries.profile(user_id, key)
        else:
            profile = await self.get_profile(user_id)
        if key not in profile:
            raise not_found(f"The user has no {key}")
        return {key: profile[key]}

    def _validate(self, key: str, value: Any) -> str | None:
        if key == "displayname":
            if value is None:
                return None
            if not isinstance(value, str):
                raise invalid_param("displayname must be a string")
            if len(value) > MAX_DISPLAYNAME_LENGTH:
                raise invalid_param(f"displayname is too long (max {MAX_DISPLAYNAME_LENGTH})")
            return value or None
        if value is None:
            return None
        if not isinstance(value, str):
            raise invalid_param("avatar_url must be a string")
        if len(value) > MAX_AVATAR_URL_LENGTH:
            raise invalid_param(f"avatar_url is too long (max {MAX_AVATAR_URL_LENGTH})")
        if value and not _URI.match(value):
            raise invalid_param("avatar_url must be a URI")
        return value or None

    async def set_field(self, requester: Requester, user_id: str, key: str,
                        body: dict[str, Any] | None) -> None:
        """Set (or, with ``body`` None, delete) one profile field."""
        self.check_key(key)
        if user_id != requester.user_id and not requester.is_admin:
            raise forbidden("You cannot change another user's profile")
        current = await self._existing_profile(user_id)
        if key not in FIELDS:
            await self._set_custom_field(user_id, key, body)
            return
        if body is None:
            value = None
        else:
            if key not in body:
                raise missing_param(f"Missing key {key!r}")
            value = self._validate(key, body[key])
        index = FIELDS.index(key)
        if current[index] == value:
            return
        await self.store.set_profile_field(user_id, key, value)
        await self.update_join_events(requester, user_id)

    async def _set_custom_field(self, user_id: str, key: str,
                                body: dict[str, Any] | None) -> None:
        if body is None:
            await self.store.set_custom_profile_field(user_id, key, None, delete=True)
            return
        if key not in body:
            raise missing_param(f"Missing key {key!r}")
        value = body[key]
        if key == "m.tz" and not isinstance(value, str):
            raise invalid_param("m.tz must be a string")
        profile = await self.get_profile(user_id)
        profile[key] = value
        if len(orjson.dumps(profile)) > MAX_PROFILE_BYTES:
            raise MatrixError(400, "M_PROFILE_TOO_LARGE",
                              f"A profile is at most {MAX_PROFILE_BYTES} bytes")
        await self.store.set_custom_profile_field(user_id, key, value)

    async def update_join_events(self, requester: Requester, user_id: str) -> None:
        """Send a new join event, with the current profile, into each joined room."""
        membership = self.hs.membership
        acting = requester if requester.user_id == user_id else \
            Requester(user_id, None, "")
        for joined in await self.hs.stores.memberships.get_rooms_for_user(user_id):
            try:
                await membership.update_membership(acting, joined.room_id, user_id, "join",
                                                   ratelimit=False)
            except MatrixError as e:
                logger.warning("could not update %s's profile in %s: %s", user_id,
                               joined.room_id, e.message)
