"""Reading rooms: state, pagination, context, single events, members.

Every method takes the reading user and applies history visibility: a user
who may not see a room gets ``M_FORBIDDEN`` (or nothing), never its content.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError, Requester, forbidden, not_found
from myelin.storage.stores.events import Membership, StateMap, StoredEvent

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)


def parse_stream_token(token: str) -> int:
    """A room pagination token (``s123``, ``t4-123``) or a sync token → stream position."""
    try:
        if token.startswith("s"):
            return int(token[1:].split("_", 1)[0].split("~", 1)[0].lstrip("m"))
        if token.startswith("t"):
            return int(token[1:].split("-", 1)[1].split("_", 1)[0])
    except (ValueError, IndexError):
        pass
    raise MatrixError(400, "M_INVALID_PARAM", f"Invalid pagination token {token!r}")


def stream_token(position: int) -> str:
    return f"s{position}"


class RoomReadHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.events

    async def _require_room(self, room_id: str) -> None:
        if await self.hs.stores.rooms.get_room_version(room_id) is None:
            raise forbidden("You are not allowed to see this room")

    async def membership_for_read(self, requester: Requester, room_id: str,
                                  ) -> tuple[Membership | None, bool]:
        """(membership, world_readable); raises M_FORBIDDEN if the user may not read."""
        await self._require_room(room_id)
        membership = await self.hs.stores.memberships.get_membership(room_id, requester.user_id)
        if membership is not None and membership.membership in ("join", "leave"):
            if membership.membership == "join":
                return membership, False
            # A former member sees the room as it was when they left; one who
            # was banned sees nothing more (as Synapse: sytest 30rooms/07ban).
            ever_joined = await self.hs.visibility._was_ever_joined(
                room_id, requester.user_id, membership.stream_ordering)
            if ever_joined:
                return membership, False
        if await self.hs.visibility.is_world_readable(room_id):
            return membership, True
        raise forbidden("You are not allowed to see this room")

    async def state_for_user(self, requester: Requester, room_id: str) -> StateMap:
        membership, world_readable = await self.membership_for_read(requester, room_id)
        if membership is None or membership.membership == "join" or (world_readable and \
                (membership is None or membership.membership not in ("leave", "ban"))):
            return await self.hs.stores.state.get_current_state_ids(room_id)
        state = await self.hs.stores.state.get_state_after_event(membership.event_id)
        return state or {}

    async def get_state(self, requester: Requester, room_id: str) -> list[dict[str, Any]]:
        state = await self.state_for_user(requester, room_id)
        events = await self.store.get_events(state.values())
        return await self.hs.serializer.serialize(
            sorted(events.values(), key=lambda e: e.stream_ordering))

    async def get_state_event(self, requester: Requester, room_id: str, etype: str,
                              state_key: str) -> StoredEvent:
        state = await self.state_for_user(requester, room_id)
        event_id = state.get((etype, state_key))
        stored = await self.store.get_event(event_id) if event_id else None
        if stored is None:
            raise not_found("Event not found.")
        return stored

    async def get_event(self, requester: Requester, room_id: str, event_id: str,
                        ) -> StoredEvent:
        stored = await self.store.get_event(event_id)
        if stored is None or stored.event.room_id != room_id:
            raise not_found("Event not found.")
        if stored.stream_ordering < 0 and await self.hs.stores.federation.is_soft_failed(
                event_id):
            # Soft-failed remote events are kept for the DAG, never shown.
            raise not_found("Event not found.")
        try:
            await self.membership_for_read(requester, room_id)
        except MatrixError as e:
            # The spec's answer for an event one may not read is "not found".
            if e.errcode != "M_FORBIDDEN":
                raise
            raise not_found("Event not found.") from None
        if not await self.hs.visibility.can_see_event(requester.user_id, stored):
            raise not_found("Event not found.")
        return stored

    async def paginate(self, requester: Requester, room_id: str, *, from_token: str | None,
                       to_token: str | None, backwards: bool, limit: int,
                       event_filter: dict[str, Any] | None) -> dict[str, Any]:
        membership, _ = await self.membership_for_read(requester, room_id)
        # The room's persister's position: everything of this room up to it is here.
        current = self.hs.streams.view.writer_position(
            "events", self.hs.roles.writer_for("events", room_id))
        if from_token is None:
            position = current if backwards else 0
        else:
            position = min(parse_stream_token(from_token), current)
        to_pos = parse_stream_token(to_token) if to_token else None
        if membership is not None and membership.membership in ("leave", "ban"):
            # Nothing after the user left, unless the room is world readable.
            if not await self.hs.visibility.is_world_readable(room_id):
                if backwards:
                    position = min(position, membership.stream_ordering)
                else:
                    to_pos = membership.stream_ordering if to_pos is None else min(
                        to_pos, membership.stream_ordering)
        f = event_filter or {}
        ignored = await self.hs.account_data.ignored_users(requester.user_id)
        chunk: list[StoredEvent] = []
        end = position
        exhausted = False
        backfilled = False
        for _ in range(6):  # keep going while visibility hides whole pages
            # After a backfill the page may already hold some events: only
            # ask for the rest, so `end` is right after the last one returned.
            want = limit - len(chunk)
            ids = await self.store.get_room_stream_ids(
                room_id, from_pos=end, to_pos=to_pos, backwards=backwards, limit=want,
                types=f.get("types"), not_types=f.get("not_types"), senders=f.get("senders"),
                not_senders=f.get("not_senders"))
            if ids:
                loaded = await self.store.get_events([i for i, _ in ids])
                page = [loaded[i] for i, _ in ids if i in loaded
                        and loaded[i].event.sender not in ignored]
                chunk.extend(await self.hs.visibility.filter_events(
                    requester.user_id, page, membership))
                end = ids[-1][1] - 1 if backwards else ids[-1][1]
            if len(ids) < want:
                if backwards and not backfilled and await self._backfill(room_id, limit):
                    # Older history arrived from other servers, below `end`.
                    backfilled = True
                    continue
                exhausted = True
                break
            if chunk:
                break
        serializer = self.hs.serializer
        response: dict[str, Any] = {
            "start": stream_token(position),
            "chunk": await serializer.serialize(chunk[:limit], user_id=requester.user_id,
                                                device_id=requester.device_id),
        }
        # `end` goes with every non-empty chunk (and with an empty one that
        # visibility thinned, so the client keeps going): a client learns it
        # reached the end from a page with no events and no `end`.
        if chunk or not exhausted:
            response["end"] = stream_token(end)
        if f.get("lazy_load_members"):
            senders = {s.event.sender for s in chunk}
            state = await self.hs.stores.state.get_current_state_ids(room_id)
            member_ids = [state[("m.room.member", s)] for s in senders
                          if ("m.room.member", s) in state]
            members = await self.store.get_events(member_ids)
            response["state"] = await serializer.serialize(list(members.values()))
        return response

    async def _backfill(self, room_id: str, limit: int) -> int:
        """Ask other servers in the room for history before what we hold
        (federation/backfill.py); how many events arrived."""
        extremities = await self.hs.stores.federation.get_backward_extremities(room_id)
        if not extremities:
            return 0
        try:
            return await self.hs.federation_events.backfill(
                room_id, [e for e, _ in extremities], limit)
        except Exception:  # pagination still answers with what is stored
            logger.exception("backfilling %s failed", room_id)
            return 0

    async def context(self, requester: Requester, room_id: str, event_id: str, limit: int,
                      event_filter: dict[str, Any] | None) -> dict[str, Any]:
        await self.membership_for_read(requester, room_id)  # M_FORBIDDEN for outsiders
        stored = await self.get_event(requester, room_id, event_id)
        before_limit = limit // 2
        after_limit = limit - before_limit
        before = await self.paginate(requester, room_id,
                                     from_token=stream_token(stored.stream_ordering - 1),
                                     to_token=None, backwards=True, limit=max(before_limit, 1),
                                     event_filter=event_filter)
        after = await self.paginate(requester, room_id,
                                    from_token=stream_token(stored.stream_ordering),
                                    to_token=None, backwards=False, limit=max(after_limit, 1),
                                    event_filter=event_filter)
        state = await self.hs.stores.state.get_state_after_event(event_id) or {}
        if (event_filter or {}).get("lazy_load_members") is True:
            # Only the members of the senders the response shows.
            senders = {stored.event.sender} | {
                e["sender"] for e in (*before["chunk"][:before_limit],
                                      *after["chunk"][:after_limit]) if "sender" in e}
            state = {k: v for k, v in state.items()
                     if k[0] != "m.room.member" or k[1] in senders}
        state_events = await self.store.get_events(state.values())
        serializer = self.hs.serializer
        return {
            "event": await serializer.serialize_one(stored, user_id=requester.user_id,
                                                    device_id=requester.device_id),
            "events_before": before["chunk"][:before_limit],
            "events_after": after["chunk"][:after_limit],
            "start": before.get("end", before["start"]),
            "end": after.get("end", after["start"]),
            "state": await serializer.serialize(list(state_events.values())),
        }

    async def members(self, requester: Requester, room_id: str, *, at: str | None,
                      membership: str | None, not_membership: str | None,
                      ) -> list[dict[str, Any]]:
        state = await self.state_for_user(requester, room_id)
        if at is not None:
            position = parse_stream_token(at)
            ids = await self.store.get_room_stream_ids(room_id, from_pos=position, to_pos=None,
                                                       backwards=True, limit=1)
            if ids:
                state = await self.hs.stores.state.get_state_after_event(ids[0][0]) or state
        member_ids = [eid for (etype, _), eid in state.items() if etype == "m.room.member"]
        events = await self.store.get_events(member_ids)
        chosen = [e for e in events.values()
                  if (membership is None or e.event.membership == membership)
                  and (not_membership is None or e.event.membership != not_membership)]
        chosen.sort(key=lambda e: e.stream_ordering)
        return await self.hs.serializer.serialize(chosen)

    async def joined_members(self, requester: Requester, room_id: str) -> dict[str, Any]:
        membership, world_readable = await self.membership_for_read(requester, room_id)
        if not world_readable and (membership is None or membership.membership != "join"):
            raise forbidden("You aren't a member of the room")
        members = await self.hs.stores.memberships.get_members(room_id)
        events = await self.store.get_events([m.event_id for m in members])
        joined = {}
        for member in members:
            stored = events.get(member.event_id)
            content = stored.event.content if stored else {}
            # Both keys always, null when unset: the spec types them as optional
            # strings, but clients (and sytest) written against Synapse expect them.
            joined[member.user_id] = {"display_name": _str_or_none(content.get("displayname")),
                                      "avatar_url": _str_or_none(content.get("avatar_url"))}
        return {"joined": joined}

    async def event_at_timestamp(self, requester: Requester, room_id: str, ts: int,
                                 forwards: bool) -> dict[str, Any]:
        """The event closest to ``ts`` (the first at or after it going forwards,
        the last at or before it going backwards) that the requester may see."""
        await self.membership_for_read(requester, room_id)
        event_id = await self.store.get_event_at_ts(room_id, ts, forwards)
        if event_id is None:
            raise MatrixError(404, "M_NOT_FOUND", "No event found")
        stored = await self.get_event(requester, room_id, event_id)
        return {"event_id": event_id, "origin_server_ts": stored.event.origin_server_ts}


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
