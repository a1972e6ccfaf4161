"""Inbound EDUs: what a remote server's transaction carries besides PDUs.

``hs.federation_edus.on_edus(origin, edus)`` is called by ``PUT /send`` (after
the request was authenticated as ``origin``). Each EDU is checked against
its origin — a server speaks only for its own users, and only about rooms it
is in and whose server ACL admits it — and then written through the same
writers local changes use, so it shows in local clients' ``/sync`` like a
local one:

- ``m.typing`` → the typing writer (a remote user's typing times out like a local one's);
- ``m.receipt`` → the receipts writer (read receipts only);
- ``m.presence`` → the presence writer (remote states expire after ``REMOTE_PRESENCE_TIMEOUT_S``
  without news, see ``handlers/presence.py``);
- ``m.direct_to_device`` → local devices' inboxes, once per ``message_id``;
- ``m.device_list_update`` / ``m.signing_key_update`` → ``hs.remote_devices`` when it exists.

A bad EDU is logged and skipped: the spec has no way to refuse one, and the
rest of the transaction still counts.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError
from myelin.handlers.presence import SetRemotePresence
from myelin.handlers.receipts import WriteReceipt
from myelin.handlers.to_device import SendToDevice
from myelin.handlers.typing import SetTyping
from myelin.storage.stores.receipts import MAIN_THREAD

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)

# Synapse's timeout for a remote user's typing when the remote says nothing more.
REMOTE_TYPING_TIMEOUT_MS = 30_000
PRESENCE_STATES = ("online", "unavailable", "offline")


class BadEdu(ValueError):
    pass


def _server_of(user_id: Any) -> str:
    if not isinstance(user_id, str) or not user_id.startswith("@") or ":" not in user_id:
        raise BadEdu(f"not a user id: {user_id!r}")
    return user_id.split(":", 1)[1]


class EduHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self._handlers: dict[str, Callable[[str, dict[str, Any]], Awaitable[None]]] = {
            "m.typing": self._on_typing,
            "m.receipt": self._on_receipt,
            "m.presence": self._on_presence,
            "m.direct_to_device": self._on_direct_to_device,
            "m.device_list_update": self._on_device_list_update,
            "m.signing_key_update": self._on_signing_key_update,
        }
        self.received = 0

    async def on_edus(self, origin: str, edus: list[dict[str, Any]]) -> None:
        for edu in edus:
            if not isinstance(edu, dict):
                continue
            edu_type, content = edu.get("edu_type"), edu.get("content")
            handler = self._handlers.get(edu_type) if isinstance(edu_type, str) else None
            if handler is None or not isinstance(content, dict):
                logger.debug("federation: ignoring EDU %r from %s", edu_type, origin)
                continue
            try:
                await handler(origin, content)
                self.received += 1
            except BadEdu as e:
                logger.info("federation: bad %s EDU from %s: %s", edu_type, origin, e)
            except Exception:
                logger.exception("federation: handling %s EDU from %s failed", edu_type,
                                 origin)

    def _check_sender(self, origin: str, user_id: Any) -> str:
        if _server_of(user_id) != origin:
            raise BadEdu(f"{origin} may not speak for {user_id}")
        if self.hs.is_mine(user_id):
            raise BadEdu(f"{user_id} is one of ours")
        return str(user_id)

    async def _origin_in_room(self, origin: str, room_id: Any) -> bool:
        """Whether ``origin`` has a member joined to the room and its server ACL
        lets it in (the spec drops a denied server's EDUs for the room)."""
        if not isinstance(room_id, str):
            return False
        members = await self.hs.stores.memberships.get_members(room_id)
        if not any(_server_of(m.user_id) == origin for m in members):
            return False
        return await self._acl_allows(origin, room_id)

    async def _acl_allows(self, origin: str, room_id: str) -> bool:
        try:
            await self.hs.federation_events.check_server_acl(room_id, origin)
        except MatrixError:
            return False
        return True

    # -- typing ------------------------------------------------------------------
    async def _on_typing(self, origin: str, content: dict[str, Any]) -> None:
        user_id = self._check_sender(origin, content.get("user_id"))
        room_id = content.get("room_id")
        typing = content.get("typing")
        if not isinstance(typing, bool):
            raise BadEdu("typing must be a boolean")
        membership = await self.hs.stores.memberships.get_membership(str(room_id), user_id) \
            if isinstance(room_id, str) else None
        if membership is None or membership.membership != "join":
            raise BadEdu(f"{user_id} is not joined to {room_id}")
        if not await self._acl_allows(origin, str(room_id)):
            raise BadEdu(f"{origin} is denied by the server ACL of {room_id}")
        await self.hs.replication.call(SetTyping, {
            "user_id": user_id, "room_id": room_id, "typing": typing,
            "timeout_ms": REMOTE_TYPING_TIMEOUT_MS})

    # -- receipts ------------------------------------------------------------------
    async def _on_receipt(self, origin: str, content: dict[str, Any]) -> None:
        for room_id, by_type in content.items():
            if not isinstance(by_type, dict) or not await self._origin_in_room(origin, room_id):
                logger.info("federation: %s sent receipts for %s, a room it is not in",
                            origin, room_id)
                continue
            by_user = by_type.get("m.read")
            if not isinstance(by_user, dict):
                continue
            for user_id, receipt in by_user.items():
                try:
                    await self._one_receipt(origin, room_id, user_id, receipt)
                except BadEdu as e:
                    logger.info("federation: bad receipt from %s: %s", origin, e)

    async def _one_receipt(self, origin: str, room_id: str, user_id: str, receipt: Any) -> None:
        self._check_sender(origin, user_id)
        if not isinstance(receipt, dict):
            raise BadEdu("a receipt must be an object")
        event_ids = receipt.get("event_ids")
        if not isinstance(event_ids, list) or not event_ids or \
                not all(isinstance(e, str) for e in event_ids):
            raise BadEdu("event_ids must be a non-empty list of event ids")
        raw_data = receipt.get("data")
        data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
        thread_id = data.get("thread_id")
        if thread_id is not None and (not isinstance(thread_id, str) or not thread_id):
            raise BadEdu("thread_id must be a non-empty string")
        membership = await self.hs.stores.memberships.get_membership(room_id, user_id)
        if membership is None or membership.membership != "join":
            raise BadEdu(f"{user_id} is not joined to {room_id}")
        # Several event ids (older servers) mean the same thing: the newest one counts.
        event_id = event_ids[-1]
        stored = await self.hs.stores.events.get_event(event_id)
        position = stored.stream_ordering if stored is not None and \
            stored.event.room_id == room_id else None
        await self.hs.replication.call(WriteReceipt, {
            "room_id": room_id, "receipt_type": "m.read", "user_id": user_id,
            "thread_id": thread_id or MAIN_THREAD, "event_id": event_id, "position": position,
            "data": data})

    # -- presence --------------------------------------------------------------------
    async def _on_presence(self, origin: str, content: dict[str, Any]) -> None:
        updates = content.get("push")
        if not isinstance(updates, list):
            raise BadEdu("push must be a list")
        for update in updates:
            try:
                if not isinstance(update, dict):
                    raise BadEdu("a presence update must be an object")
                user_id = self._check_sender(origin, update.get("user_id"))
                state = update.get("presence")
                if state not in PRESENCE_STATES:
                    raise BadEdu(f"unknown presence {state!r}")
                ago = update.get("last_active_ago", 0)
                if isinstance(ago, bool) or not isinstance(ago, int) or ago < 0:
                    ago = 0
                status_msg = update.get("status_msg")
                if not isinstance(status_msg, str):
                    status_msg = None
                await self.hs.replication.call(SetRemotePresence, {
                    "user_id": user_id, "state": state, "status_msg": status_msg,
                    "last_active_ago": ago,
                    "currently_active": update.get("currently_active") is True})
            except BadEdu as e:
                logger.info("federation: bad presence from %s: %s", origin, e)

    # -- to-device ---------------------------------------------------------------------
    async def _on_direct_to_device(self, origin: str, content: dict[str, Any]) -> None:
        sender = self._check_sender(origin, content.get("sender"))
        event_type, message_id = content.get("type"), content.get("message_id")
        messages = content.get("messages")
        if not isinstance(event_type, str) or not isinstance(message_id, str) or \
                not isinstance(messages, dict):
            raise BadEdu("type, message_id and messages are required")
        rows: list[list[Any]] = []
        for user_id, by_device in messages.items():
            if not isinstance(user_id, str) or not self.hs.is_mine(user_id) or \
                    not isinstance(by_device, dict):
                continue
            for device_id, body in by_device.items():
                if not isinstance(body, dict):
                    continue
                message = {"type": event_type, "sender": sender, "content": body}
                if device_id == "*":
                    devices = await self.hs.stores.accounts.get_devices(user_id)
                    rows.extend([user_id, d.device_id, message] for d in devices)
                else:
                    rows.append([user_id, str(device_id), message])
        # The txn id de-duplicates a transaction the origin sends twice.
        await self.hs.replication.call(SendToDevice, {
            "sender": sender, "sender_device": f"federation:{origin}", "txn_id": message_id,
            "rows": rows})

    # -- device lists (fed-queries' RemoteDeviceLists) ---------------------------------
    async def _on_device_list_update(self, origin: str, content: dict[str, Any]) -> None:
        self._check_sender(origin, content.get("user_id"))
        remote_devices = getattr(self.hs, "remote_devices", None)
        if remote_devices is not None:
            await remote_devices.on_device_list_update(origin, content)

    async def _on_signing_key_update(self, origin: str, content: dict[str, Any]) -> None:
        self._check_sender(origin, content.get("user_id"))
        remote_devices = getattr(self.hs, "remote_devices", None)
        if remote_devices is not None:
            await remote_devices.on_signing_key_update(origin, content)
