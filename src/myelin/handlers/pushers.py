"""Pushers: what ``/pushers/set`` stores and ``/pushers`` lists.

A pusher remembers the device (and access token) that set it, so logging
that device out, deleting it, or changing the password (unless
``logout_devices`` is false) removes it. Delivery is the pusher pool's
(``push/pool.py``, the ``pusher`` job): it reads the push actions after each
pusher's ``last_stream_ordering`` and advances it. Every change is announced
as a ``pushers`` row on the caches stream, which is how the pool learns of
new and removed pushers.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from myelin.domain import Requester, invalid_param, missing_param
from myelin.storage.stores.push import Pusher

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer
    from myelin.storage.engines.base import Transaction

KINDS = ("http", "email")
MAX_APP_ID = 64
MAX_PUSHKEY_BYTES = 512
_REQUIRED_TO_SET = ("app_display_name", "device_display_name", "lang", "data")


def _string(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        raise missing_param(f"Missing parameter: {name}")
    if not isinstance(value, str):
        raise invalid_param(f"{name} must be a string")
    return value


def parse_pusher(requester: Requester, body: dict[str, Any],
                 last_stream_ordering: int) -> tuple[Pusher | None, str, str, bool]:
    """(the pusher to store, or None to delete; app_id; pushkey; append), or a
    Matrix error (M_MISSING_PARAM / M_INVALID_PARAM) for a bad body."""
    missing = [k for k in ("kind", "app_id", "pushkey") if k not in body]
    if missing:
        raise missing_param(f"Missing parameters: {', '.join(missing)}")
    app_id, pushkey = _string(body, "app_id"), _string(body, "pushkey")
    if not app_id or len(app_id) > MAX_APP_ID:
        raise invalid_param(f"app_id must be 1 to {MAX_APP_ID} characters")
    if not pushkey or len(pushkey.encode()) > MAX_PUSHKEY_BYTES:
        raise invalid_param(f"pushkey must be 1 to {MAX_PUSHKEY_BYTES} bytes")
    append = body.get("append", False)
    if not isinstance(append, bool):
        raise invalid_param("append must be a boolean")
    kind = body["kind"]
    if kind is None:
        return None, app_id, pushkey, append
    if not isinstance(kind, str) or kind not in KINDS:
        raise invalid_param(f"kind must be one of {', '.join(KINDS)} or null")
    missing = [k for k in _REQUIRED_TO_SET if k not in body or body[k] is None]
    if missing:
        raise missing_param(f"Missing parameters: {', '.join(missing)}")
    data = body["data"]
    if not isinstance(data, dict):
        raise invalid_param("data must be an object")
    if kind == "http":
        url = data.get("url")
        if url is None:
            raise missing_param("data.url is required for http pushers")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") \
                or not urlsplit(url).netloc:
            raise invalid_param("data.url must be an http(s) URL")
    profile_tag = body.get("profile_tag", "")
    if not isinstance(profile_tag, str):
        raise invalid_param("profile_tag must be a string")
    pusher = Pusher(
        user_id=requester.user_id, app_id=app_id, pushkey=pushkey, kind=kind,
        app_display_name=_string(body, "app_display_name"),
        device_display_name=_string(body, "device_display_name"),
        profile_tag=profile_tag, lang=_string(body, "lang"), data=data,
        device_id=requester.device_id, access_token=requester.access_token,
        last_stream_ordering=last_stream_ordering)
    return pusher, app_id, pushkey, append


class PusherHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.pushers

    async def get_pushers(self, user_id: str) -> list[dict[str, Any]]:
        return [p.to_json() for p in await self.store.get_pushers(user_id)]

    async def set_pusher(self, requester: Requester, body: dict[str, Any]) -> None:
        # A new pusher starts at the present: it delivers nothing from before it.
        now_pos = self.hs.streams.view.position("events")
        pusher, app_id, pushkey, append = parse_pusher(requester, body, now_pos)
        if pusher is None:
            await self.store.delete_pusher(requester.user_id, app_id, pushkey)
        else:
            await self.store.set_pusher(pusher, append=append, now_ms=int(time.time() * 1000))
        await self._announce(requester.user_id)

    async def add_email_pusher(self, user_id: str, address: str) -> None:
        """The pusher that mails ``user_id`` about unread messages (Synapse's shape)."""
        from myelin.push.mailer import EMAIL_APP_ID

        pusher = Pusher(
            user_id=user_id, app_id=EMAIL_APP_ID, pushkey=address, kind="email",
            app_display_name="Email Notifications", device_display_name=address,
            profile_tag="", lang="en", data={}, device_id=None, access_token=None,
            last_stream_ordering=self.hs.streams.view.position("events"))
        await self.store.set_pusher(pusher, append=True, now_ms=int(time.time() * 1000))
        await self._announce(user_id)

    async def remove_email_pusher(self, user_id: str, address: str) -> None:
        from myelin.push.mailer import EMAIL_APP_ID

        if await self.store.delete_pusher(user_id, EMAIL_APP_ID, address):
            await self._announce(user_id)

    async def _announce(self, user_id: str) -> None:
        await self.hs.invalidate_cache("pushers", [user_id])

    async def on_devices_deleted(self, txn: Transaction, user_id: str,
                                 device_ids: list[str]) -> None:
        """In the transaction that deletes the devices: their pushers go too."""
        await self.store.delete_for_devices(txn, user_id, device_ids)

    async def on_token_deleted(self, txn: Transaction, access_token: str) -> None:
        await self.store.delete_for_token(txn, access_token)

    async def on_password_changed(self, txn: Transaction, requester: Requester) -> None:
        """Every pusher but the requester's session's (password change with
        ``logout_devices``)."""
        await self.store.delete_for_user(txn, requester.user_id, keep={
            "device_id": requester.device_id, "access_token": requester.access_token})

    async def on_logged_out_everywhere(self, txn: Transaction, user_id: str) -> None:
        await self.store.delete_for_user(txn, user_id)
