"""Server notices (``/_synapse/admin/v1/send_server_notice``): messages from
the server's notice user (config ``server_notices``) to one local user, in a
room the notice user creates once per user, invites them to and tags
``m.server_notice`` for them. A user who left their notices room gets a new
one with the next notice."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError, Requester, not_found

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

NOTICE_TAG = "m.server_notice"


class ServerNoticesHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.admin

    @property
    def enabled(self) -> bool:
        return self.hs.config.server_notices is not None

    def notice_user_id(self) -> str:
        config = self.hs.config.server_notices
        assert config is not None
        return f"@{config.system_mxid_localpart}:{self.hs.config.server_name}"

    async def send(self, user_id: str, content: dict[str, Any], etype: str = "m.room.message",
                   state_key: str | None = None) -> str:
        hs = self.hs
        if not self.enabled:
            raise MatrixError(400, "M_UNKNOWN", "Server notices are not enabled on this server")
        if not hs.is_mine(user_id):
            raise MatrixError(400, "M_UNKNOWN", "Server notices can only be sent to local users")
        if await hs.stores.accounts.get_user(user_id) is None:
            raise not_found("User not found")
        sender = await self._ensure_notice_user()
        room_id = await self._room_for(user_id, sender)
        sent = await hs.event_creation.send(sender, room_id, etype, content, state_key=state_key)
        return sent.event.event_id

    async def _ensure_notice_user(self) -> str:
        hs = self.hs
        config = hs.config.server_notices
        assert config is not None
        user_id = self.notice_user_id()
        if await hs.stores.accounts.get_user(user_id) is None:
            try:
                await hs.registration.register_user(
                    config.system_mxid_localpart, None,
                    display_name=config.system_mxid_display_name)
            except MatrixError as e:
                if e.errcode != "M_USER_IN_USE":  # a concurrent notice made it
                    raise
        if config.system_mxid_avatar_url:
            await hs.stores.accounts.set_profile_field(user_id, "avatar_url",
                                                      config.system_mxid_avatar_url)
        return user_id

    async def _room_for(self, user_id: str, sender: str) -> str:
        """The user's notices room while they are in it or invited to it; else a new one."""
        hs = self.hs
        config = hs.config.server_notices
        assert config is not None
        room_id = await self.store.get_notice_room(user_id)
        if room_id is not None:
            membership = await hs.stores.memberships.get_membership(room_id, user_id)
            if membership is not None and membership.membership in ("join", "invite"):
                return room_id
        body: dict[str, Any] = {
            "preset": "private_chat", "name": config.room_name,
            # Only the notice user (the creator) speaks: members cannot send anything.
            "power_level_content_override": {"users_default": -10},
        }
        if config.room_topic:
            body["topic"] = config.room_topic
        if config.room_avatar_url:
            body["initial_state"] = [{"type": "m.room.avatar", "state_key": "",
                                      "content": {"url": config.room_avatar_url}}]
        room_id, _alias = await hs.room_creation.create_room(Requester(sender, None, ""), body)
        await hs.account_data.set_tag(user_id, room_id, NOTICE_TAG, {})
        await hs.membership.update_membership(Requester(sender, None, ""), room_id, user_id,
                                              "invite", ratelimit=False)
        if config.auto_join:
            await hs.membership.update_membership(Requester(user_id, None, ""), room_id,
                                                  user_id, "join", ratelimit=False)
        await self.store.set_notice_room(user_id, room_id)
        return room_id
