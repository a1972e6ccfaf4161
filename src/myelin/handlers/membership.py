"""Membership changes: join, invite, leave, kick, ban, unban, knock, forget."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError, Requester, forbidden, not_found
from myelin.handlers.events import SentEvent

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer


class MembershipHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.events

    async def resolve_room(self, room_id_or_alias: str) -> str:
        if room_id_or_alias.startswith("#"):
            found = await self.hs.stores.rooms.get_alias(room_id_or_alias)
            if found is None and await self.hs.appservices.query_alias(room_id_or_alias):
                found = await self.hs.stores.rooms.get_alias(room_id_or_alias)
            if found is None:
                raise not_found(f"Room alias {room_id_or_alias} not found")
            return found[0]
        if not room_id_or_alias.startswith("!"):
            raise MatrixError(400, "M_INVALID_PARAM", f"{room_id_or_alias} is not a room ID "
                                                      "or alias")
        return room_id_or_alias

    async def resolve_room_and_servers(self, room_id_or_alias: str) -> tuple[str, list[str]]:
        """A room id and the servers to join it through: another server's
        alias is asked of that server (federation ``query/directory``)."""
        if room_id_or_alias.startswith("#") and not self.hs.is_mine(room_id_or_alias):
            found = await self.hs.directory.resolve_alias(room_id_or_alias)
            servers = found.get("servers")
            return str(found["room_id"]), [s for s in servers if isinstance(s, str)] \
                if isinstance(servers, list) else []
        return await self.resolve_room(room_id_or_alias), []

    async def member_content(self, target: str, membership: str, reason: str | None = None,
                             extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The content of a membership event, with the target's profile when
        they join, are invited or knock."""
        hs = self.hs
        content: dict[str, Any] = dict(extra or {})
        content["membership"] = membership
        if reason is not None:
            content["reason"] = reason
        if membership in ("join", "invite", "knock") and hs.is_mine(target):
            if membership == "invite" and await hs.stores.accounts.get_user(target) is None \
                    and not await hs.appservices.query_user(target):
                raise not_found(f"Unknown user {target}")
            profile = await hs.stores.accounts.get_profile(target)
            if profile is not None:
                if profile[0] is not None:
                    content.setdefault("displayname", profile[0])
                if profile[1] is not None:
                    content.setdefault("avatar_url", profile[1])
        return content

    async def update_membership(self, requester: Requester, room_id: str, target: str,
                                membership: str, *, reason: str | None = None,
                                extra_content: dict[str, Any] | None = None,
                                ratelimit: bool = True,
                                txn_key: tuple[str, str, str] | None = None,
                                servers: Sequence[str] = ()) -> SentEvent:
        hs = self.hs
        if target == requester.user_id and membership in ("join", "knock", "leave") \
                and hs.is_mine(target):
            remote = await self._remote_membership(requester, room_id, membership, reason,
                                                   extra_content, ratelimit, servers)
            if remote is not None:
                return remote
        if await self.hs.stores.rooms.get_room_version(room_id) is None:
            raise not_found("No known room with that ID")
        if not target.startswith("@") or ":" not in target:
            raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user ID {target!r}")
        if membership == "join":
            await hs.admin_rooms.check_not_blocked(room_id)
        if hs.appservices.exempt_from_ratelimit(requester):
            ratelimit = False  # a bridge registered with rate_limited: false
        if ratelimit and membership == "join":
            hs.ratelimiters.joins.check(requester.user_id)
        if ratelimit and membership == "invite":
            hs.ratelimiters.invites.check(room_id)
        if membership == "join" and requester.is_guest:
            await self.require_guest_access(room_id)
        content = await self.member_content(target, membership, reason, extra_content)
        if membership == "join" and target == requester.user_id:
            # Joining again with nothing changed is a no-op, not a new event.
            current = await self.hs.stores.memberships.get_membership(room_id, target)
            if current is not None and current.membership == "join":
                stored = await hs.stores.events.get_event(current.event_id)
                if stored is not None and stored.event.content == content:
                    return SentEvent(stored.event, stored.stream_ordering, {})
        if membership == "leave" and target == requester.user_id:
            current = await self.hs.stores.memberships.get_membership(room_id, target)
            if current is None or current.membership in ("leave", "ban"):
                raise forbidden(f"{target} is not in the room")

        sent = await hs.event_creation.send(requester.user_id, room_id, "m.room.member",
                                            content, state_key=target,
                                            precheck={"kind": "not_banned", "user_id": target}
                                            if membership == "join" else None,
                                            txn_key=txn_key)
        if membership == "join" and hs.is_mine(target):
            # Joining a room's replacement brings the user's settings along.
            await hs.room_upgrades.transfer_user_settings(target, room_id)
        return sent

    async def _remote_membership(self, requester: Requester, room_id: str, membership: str,
                                 reason: str | None, extra: dict[str, Any] | None,
                                 ratelimit: bool, servers: Sequence[str]) -> SentEvent | None:
        """Our user's join, knock or leave of a room this server is not in goes
        through a server that is (None: the room is ours to change here)."""
        hs = self.hs
        fm = hs.federation_membership
        user_id = requester.user_id
        if not room_id.startswith("!") or await fm.is_host_in_room(room_id):
            return None
        current = await hs.stores.memberships.get_membership(room_id, user_id)
        if membership == "leave":
            if current is None or current.membership not in ("invite", "knock"):
                return None  # nothing to reject: the local path says so
            content = await self.member_content(user_id, "leave", reason, extra)
            return await fm.sent_event(
                await fm.remote_leave(user_id, room_id, list(servers), content))
        candidates = fm.candidate_servers(room_id, servers,
                                          await fm.known_servers(room_id, user_id))
        if not candidates:
            if await hs.stores.state.get_current_state_event(room_id, "m.room.create") \
                    is not None:
                return None  # a room of ours that nobody is in: joined here
            raise not_found("No known servers to reach the room through")
        if membership == "join":
            await hs.admin_rooms.check_not_blocked(room_id)
            if requester.is_guest:
                raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN",
                                  "Guests cannot join rooms of other servers")
            if ratelimit:
                hs.ratelimiters.joins.check(user_id)
        content = await self.member_content(user_id, membership, reason, extra)
        if membership == "join":
            sent = await fm.sent_event(
                await fm.remote_join(user_id, room_id, candidates, content))
            await hs.room_upgrades.transfer_user_settings(user_id, room_id)
            return sent
        return await fm.sent_event(await fm.remote_knock(user_id, room_id, candidates, content))

    async def change_member(self, requester: Requester, room_id: str, target: str,
                            action: str, membership: str, *,
                            reason: str | None = None) -> SentEvent:
        """``/rooms/{roomId}/{action}`` for invite, leave, kick, ban and unban:
        only a banned user can be unbanned, only a member (or an invited or
        knocking user) kicked."""
        if action == "unban":
            current = await self.hs.stores.memberships.get_membership(room_id, target)
            if current is None or current.membership != "ban":
                raise forbidden(f"{target} is not banned")
        if action == "kick":
            current = await self.hs.stores.memberships.get_membership(room_id, target)
            if current is None or current.membership not in ("join", "invite", "knock"):
                raise forbidden(f"{target} is not in the room")
        return await self.update_membership(requester, room_id, target, membership,
                                            reason=reason)

    async def require_joined(self, user_id: str, room_id: str) -> None:
        """M_FORBIDDEN unless ``user_id`` is joined to ``room_id`` (an unknown room too)."""
        membership = await self.hs.stores.memberships.get_membership(room_id, user_id)
        if membership is None or membership.membership != "join":
            if await self.hs.stores.rooms.get_room_version(room_id) is None:
                raise forbidden("Unknown room")
            raise forbidden(f"User {user_id} not in room {room_id}")

    async def joined_rooms(self, user_id: str) -> list[str]:
        return [m.room_id for m in await self.hs.stores.memberships.get_rooms_for_user(user_id)]

    async def forget(self, requester: Requester, room_id: str) -> None:
        current = await self.hs.stores.memberships.get_membership(room_id, requester.user_id)
        if current is not None and current.membership in ("join", "invite", "knock"):
            raise MatrixError(400, "M_UNKNOWN", "You must leave the room before forgetting it")
        await self.hs.stores.memberships.forget_room(requester.user_id, room_id)
        await self.hs.invalidate_cache("memberships", [[room_id, requester.user_id]])

    async def require_guest_access(self, room_id: str) -> None:
        """Guests may join only rooms whose ``m.room.guest_access`` is ``can_join``."""
        if not await self.guests_can_join(room_id):
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access not allowed")

    async def guests_can_join(self, room_id: str) -> bool:
        event = await self.hs.stores.state.get_current_state_event(room_id,
                                                                   "m.room.guest_access")
        return event is not None and event.content.get("guest_access") == "can_join"

    async def kick_guests(self, room_id: str) -> None:
        """Guest access was revoked: the spec has the server set every guest's
        membership to ``leave`` (our guests; other servers kick their own)."""
        if await self.guests_can_join(room_id):
            return
        accounts = self.hs.stores.accounts
        for member in await self.hs.stores.memberships.get_members(room_id,
                                                                   ("join", "invite", "knock")):
            if not self.hs.is_mine(member.user_id):
                continue
            user = await accounts.get_user(member.user_id)
            if user is None or not user.is_guest:
                continue
            guest = Requester(member.user_id, None, "", is_guest=True)
            try:
                await self.update_membership(guest, room_id, member.user_id, "leave",
                                             ratelimit=False)
            except MatrixError:
                continue

    async def leave_all_rooms(self, user_id: str) -> None:
        requester = Requester(user_id, None, "")
        for membership in await self.hs.stores.memberships.get_rooms_for_user(
                user_id, ("join", "invite", "knock")):
            try:
                await self.update_membership(requester, membership.room_id, user_id, "leave",
                                             ratelimit=False)
            except MatrixError:
                continue
