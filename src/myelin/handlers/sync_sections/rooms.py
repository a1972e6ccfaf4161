"""The ``rooms`` section: joined, invited, knocked and left rooms, each with
its timeline, state, ephemeral events (typing, receipts), room account data,
unread counts and summary."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from myelin.handlers.room_reads import stream_token
from myelin.handlers.sync_sections import SyncSection
from myelin.storage.stores.events import Membership, StateMap, StoredEvent

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer
    from myelin.handlers.sync import SyncRequest, SyncResult

STRIPPED_STATE_TYPES = ("m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
                        "m.room.canonical_alias", "m.room.encryption", "m.room.topic")


# Members remembered per device as already sent, for lazy loading.
LAZY_MEMBERS_PER_DEVICE = 1000
LAZY_MEMBER_DEVICES = 10_000


class RoomsSection(SyncSection):
    def __init__(self, hs: HomeServer) -> None:
        super().__init__(hs)
        # (user, device) -> (room, member) -> the member event last sent to
        # that device, so a lazy-loading client is not sent a member again
        # (unless it asks for redundant members). Per process and bounded, as
        # the spec allows: a member forgotten here is just sent again.
        self._lazy_sent: OrderedDict[tuple[str, str], OrderedDict[tuple[str, str], str]] = \
            OrderedDict()

    def _lazy_cache(self, req: SyncRequest) -> OrderedDict[tuple[str, str], str]:
        key = (req.user_id, req.requester.device_id or "")
        cache = self._lazy_sent.pop(key, None)
        if cache is None:
            cache = OrderedDict()
        self._lazy_sent[key] = cache
        while len(self._lazy_sent) > LAZY_MEMBER_DEVICES:
            self._lazy_sent.popitem(last=False)
        return cache

    async def fill(self, req: SyncRequest, result: SyncResult) -> None:
        if req.since is None:
            # A new sync sequence: the client has been sent no members yet.
            self._lazy_sent.pop((req.user_id, req.requester.device_id or ""), None)
        rooms_section, joined_ids, newly_joined, left_ids = await self._rooms(req)
        result.body["rooms"] = rooms_section
        result.has_updates = result.has_updates or any(rooms_section[k] for k in rooms_section)
        result.rooms_joined = joined_ids
        result.newly_joined = newly_joined
        result.rooms_left = left_ids
        # Users who joined one of the user's rooms in this sync: presence
        # shows them even when their presence itself did not change.
        for room in rooms_section["join"].values():
            for event in room["timeline"]["events"]:
                if event.get("type") == "m.room.member" and \
                        event.get("content", {}).get("membership") == "join":
                    result.new_members.add(str(event.get("state_key")))

    async def _rooms(self, req: SyncRequest,
                     ) -> tuple[dict[str, Any], list[str], set[str], set[str]]:
        user_id = req.user_id
        f = req.filter
        joined: dict[str, Any] = {}
        invited: dict[str, Any] = {}
        left: dict[str, Any] = {}
        knocked: dict[str, Any] = {}
        memberships = await self.hs.stores.memberships.get_rooms_for_user(
            user_id, ("join", "invite", "knock", "leave", "ban"), include_forgotten=False)
        # Ignore memberships that landed after `now` (they belong to the next sync).
        memberships = [m for m in memberships
                       if m.stream_ordering <= req.events_upper(m.room_id)]
        joined_ids = [m.room_id for m in memberships if m.membership == "join"]
        newly_joined: set[str] = set()
        left_ids: set[str] = set()
        # Which joined rooms have anything new at all: one query per stream
        # rather than one per room, so an idle account with many rooms syncs
        # cheaply.
        busy: set[str] | None = None
        # Rooms where the user's own read receipts moved: their counts changed.
        own_receipts: set[str] = set()
        if req.since is not None and not req.full_state:
            # (A superset: each room is then read between its own bounds.)
            busy = await self.store.get_rooms_with_events_between(
                joined_ids, req.since["events"], req.now.maximum("events"))
            if req.moved("receipts"):
                busy |= await self.hs.stores.receipts.rooms_with_receipts_between(
                    req.since["receipts"], req.now["receipts"])
                own_receipts = await self.hs.stores.receipts.rooms_with_receipts_between(
                    req.since["receipts"], req.now["receipts"], user_id=user_id)
            busy |= {r for r in joined_ids
                     if self.hs.typing.changed_since(r, req.since["typing"])}
            if req.moved("account_data"):
                changed_data = await self.hs.stores.account_data.changed_since(
                    user_id, req.since["account_data"], req.now["account_data"])
                busy |= set(changed_data)

        for membership in memberships:
            room_id = membership.room_id
            if not f.allows_room(room_id):
                continue
            since_pos = req.events_lower(room_id)
            changed = since_pos is None or membership.stream_ordering > since_pos
            if membership.membership == "join":
                if busy is not None and not changed and room_id not in busy:
                    continue
                was_joined = not changed or (since_pos is not None and
                                             await self._was_joined_at(room_id, user_id,
                                                                       since_pos))
                if since_pos is not None and not was_joined:
                    newly_joined.add(room_id)
                entry = await self._joined_room(req, membership,
                                                initial=since_pos is None or not was_joined,
                                                counts_changed=room_id in own_receipts)
                if entry is not None:
                    joined[room_id] = entry
            elif membership.membership == "invite" and changed:
                if req.ignored and await self._invited_by_ignored(req, membership):
                    continue
                invited[room_id] = {"invite_state": {"events": await self._stripped_state(
                    room_id, membership)}}
            elif membership.membership == "knock" and changed:
                knocked[room_id] = {"knock_state": {"events": await self._stripped_state(
                    room_id, membership)}}
            elif membership.membership in ("leave", "ban"):
                if since_pos is not None and changed:
                    left_ids.add(room_id)
                if (changed and since_pos is not None) or (since_pos is None and
                                                           f.include_leave):
                    if since_pos is not None and await self._never_saw_room(
                            room_id, user_id, since_pos):
                        # e.g. an invite that was rejected before the client saw it
                        continue
                    left[room_id] = await self._left_room(req, membership)
        await self._fill_unread(req, joined)
        return ({"join": joined, "invite": invited, "leave": left, "knock": knocked},
                joined_ids, newly_joined, left_ids)

    async def _invited_by_ignored(self, req: SyncRequest, membership: Membership) -> bool:
        stored = await self.store.get_event(membership.event_id)
        return stored is not None and stored.event.sender in req.ignored

    async def _was_joined_at(self, room_id: str, user_id: str, position: int) -> bool:
        row = await self.store.db.fetchone(
            "SELECT membership FROM events WHERE room_id = ? AND type = 'm.room.member'"
            " AND state_key = ? AND stream_ordering <= ? ORDER BY stream_ordering DESC LIMIT 1",
            room_id, user_id, position)
        return bool(row and row[0] == "join")

    async def _never_saw_room(self, room_id: str, user_id: str, position: int) -> bool:
        row = await self.store.db.fetchone(
            "SELECT 1 FROM events WHERE room_id = ? AND type = 'm.room.member'"
            " AND state_key = ? AND stream_ordering <= ? LIMIT 1", room_id, user_id, position)
        return row is None

    async def _state_before(self, room_id: str, events: list[StoredEvent],
                            position: int) -> StateMap:
        """The state at the start of a timeline: derived from the (cached)
        state group of its first event when there is one, else looked up."""
        group = events[0].state_group if events else None
        if group is not None:
            first = events[0]
            state = await self.hs.stores.state.get_state_for_group(group)
            event = first.event
            if event.state_key is not None:
                replaced = event.unsigned.get("replaces_state")
                if replaced:
                    state[(event.type, event.state_key)] = replaced
                else:
                    state.pop((event.type, event.state_key), None)
            return state
        return await self._state_at(room_id, position)

    async def _state_at(self, room_id: str, position: int) -> StateMap:
        """The room's state after the last event at or before ``position``."""
        ids = await self.store.get_room_stream_ids(room_id, from_pos=position, to_pos=None,
                                                   backwards=True, limit=1)
        if not ids:
            return {}
        return await self.hs.stores.state.get_state_after_event(ids[0][0]) or {}

    async def _timeline(self, req: SyncRequest, room_id: str, upper: int,
                        lower: int | None, membership: Membership | None,
                        ) -> tuple[list[StoredEvent], bool]:
        f = req.filter.timeline
        limit = req.filter.timeline_limit
        if limit == 0:
            return [], False
        ids = await self.store.get_room_stream_ids(
            room_id, from_pos=upper, to_pos=lower, backwards=True, limit=limit + 1,
            types=f.types, not_types=f.not_types or None, senders=f.senders,
            not_senders=f.not_senders or None)
        limited = len(ids) > limit
        ids = list(reversed(ids[:limit]))
        loaded = await self.store.get_events([i for i, _ in ids])
        events = [loaded[i] for i, _ in ids if i in loaded and
                  loaded[i].event.sender not in req.ignored]
        visible = await self.hs.visibility.filter_events(req.user_id, events, membership)
        if membership is not None and membership.membership == "join" and \
                len(visible) < len(events):
            # The room's current state is shown even where history visibility
            # hid it (e.g. joins while the user was away): the client needs
            # it to know who is in the room now.
            current = set((await self.hs.stores.state.get_current_state_ids(room_id)).values())
            shown = {e.event.event_id for e in visible}
            visible = [e for e in events if e.event.event_id in shown
                       or e.event.event_id in current]
        return visible, limited

    async def _joined_room(self, req: SyncRequest, membership: Membership, *, initial: bool,
                           counts_changed: bool = False) -> dict[str, Any] | None:
        room_id = membership.room_id
        now_pos = req.events_upper(room_id)
        since_pos = None if initial else req.events_lower(room_id)
        events, limited = await self._timeline(req, room_id, now_pos, since_pos, membership)
        if since_pos is not None and not events and not req.full_state:
            ephemeral = await self._ephemeral(req, room_id, initial=False)
            account_data = await self._room_account_data(req, room_id)
            if not ephemeral and not account_data and not counts_changed:
                return None
            return {"timeline": {"events": [], "limited": False,
                                 "prev_batch": stream_token(now_pos)},
                    "state": {"events": []}, "ephemeral": {"events": ephemeral},
                    "account_data": {"events": account_data},
                    "unread_notifications": {}}
        start_pos = events[0].stream_ordering - 1 if events else now_pos
        # A room's first timeline that is not limited hands out the sync
        # point itself as prev_batch (as Synapse does): /messages from it
        # gives that timeline and what came before it. Incremental timelines
        # point before their first event, so paging back shows nothing twice.
        prev_batch = now_pos if initial and not limited else start_pos
        needs_state = initial or req.full_state or limited or req.filter.lazy_load_members
        state_at_start = (await self._state_before(room_id, events, start_pos)
                          if needs_state else {})
        if initial or req.full_state:
            state_ids = self._filter_state(req, state_at_start, events)
        elif req.filter.lazy_load_members:
            state_ids = await self._lazy_incremental_state(
                req, room_id, events, limited, state_at_start, since_pos or 0, now_pos)
        elif limited:
            before = await self._state_at(room_id, since_pos or 0)
            state_ids = {k: v for k, v in state_at_start.items() if before.get(k) != v}
            state_ids = self._filter_state(req, state_ids, events)
        else:
            state_ids = {}
        if req.filter.lazy_load_members:
            state_ids = self._dedupe_lazy_members(req, room_id, state_ids, events)
        loaded = await self.store.get_events(state_ids.values())
        state_events = sorted(loaded.values(), key=lambda e: e.stream_ordering)
        serializer = self.hs.serializer
        kwargs = self._serialize_kwargs(req)
        entry: dict[str, Any] = {
            "timeline": {
                "events": await serializer.serialize(events, **kwargs),
                "limited": limited,
                "prev_batch": stream_token(prev_batch),
            },
            "state": {"events": await serializer.serialize(state_events, **kwargs)},
            "ephemeral": {"events": await self._ephemeral(req, room_id, initial=initial)},
            "account_data": {"events": await self._room_account_data(req, room_id, initial)},
            "unread_notifications": {},  # filled for all rooms at once: _fill_unread
        }
        membership_changed = initial or any(
            e.event.type == "m.room.member" for e in [*events, *state_events])
        if membership_changed:
            entry["summary"] = await self._summary(req.user_id, room_id)
        return entry

    async def _lazy_incremental_state(self, req: SyncRequest, room_id: str,
                                      events: list[StoredEvent], limited: bool,
                                      state_at_start: StateMap, since_pos: int,
                                      now_pos: int) -> StateMap:
        """The state block of an incremental sync that lazy-loads members.

        Without a gap: the members of the timeline's senders (as of its
        start), which the client may never have been sent. With a gap: every
        state change across it (at the timeline's start and its end) that the
        client did not have at ``since``, counting the senders' members as
        not had; a member the client already was sent is dropped afterwards."""
        senders = {e.event.sender for e in events}
        in_timeline = {e.event.event_id for e in events}
        f = req.filter.state
        if not limited:
            keys = [("m.room.member", s) for s in senders]
            return {k: state_at_start[k] for k in keys
                    if k in state_at_start and state_at_start[k] not in in_timeline}
        start = {k: v for k, v in state_at_start.items()
                 if k[0] != "m.room.member" or k[1] in senders}
        had = set((await self._state_at(room_id, since_pos)).values())
        had -= {v for k, v in start.items() if k[0] == "m.room.member"}
        end = await self._state_at(room_id, now_pos)
        out: StateMap = {}
        for source in (end, start):
            for k, v in source.items():
                if v not in had and v not in in_timeline and f.allows_type(k[0]):
                    out[k] = v
        return out

    def _dedupe_lazy_members(self, req: SyncRequest, room_id: str, state_ids: StateMap,
                             events: list[StoredEvent]) -> StateMap:
        """Drop members this device was already sent (unless the filter wants
        redundant members), and remember the ones it is sent now."""
        cache = self._lazy_cache(req)
        if req.since is not None and not req.filter.state.include_redundant_members:
            state_ids = {k: v for k, v in state_ids.items()
                         if k[0] != "m.room.member" or cache.get((room_id, k[1])) != v}
        sent = [(k, v) for k, v in state_ids.items() if k[0] == "m.room.member"]
        sent += [((e.event.type, e.event.state_key), e.event.event_id) for e in events
                 if e.event.type == "m.room.member" and e.event.state_key is not None]
        for (_, member), event_id in sent:
            cache.pop((room_id, member), None)
            cache[(room_id, member)] = event_id
        while len(cache) > LAZY_MEMBERS_PER_DEVICE:
            cache.popitem(last=False)
        return state_ids

    def _filter_state(self, req: SyncRequest, state_ids: StateMap,
                      timeline: list[StoredEvent]) -> StateMap:
        f = req.filter.state
        timeline_ids = {e.event.event_id for e in timeline}
        out = {k: v for k, v in state_ids.items()
               if v not in timeline_ids and f.allows_type(k[0])}
        if f.lazy_load_members:
            # The members of the timeline's senders, and the user's own (so a
            # client knows it is in the room).
            wanted = {e.event.sender for e in timeline} | {req.user_id}
            out = {k: v for k, v in out.items() if k[0] != "m.room.member" or k[1] in wanted}
        return out

    async def _ephemeral(self, req: SyncRequest, room_id: str, initial: bool,
                         ) -> list[dict[str, Any]]:
        f = req.filter.ephemeral
        if f.blocks_everything or not f.allows_room(room_id):
            return []
        out: list[dict[str, Any]] = []
        typing = self.hs.typing
        since_typing = None if initial or req.since is None else req.since["typing"]
        if f.allows_type("m.typing") and (
                # An initial sync shows a room's typing list once it has one (as
                # Synapse does): an empty list says "stopped" to a client that
                # missed the start.
                (since_typing is None and typing.changed_since(room_id, 0))
                or (since_typing is not None and typing.changed_since(room_id, since_typing))):
            out.append({"type": "m.typing",
                        "content": {"user_ids": typing.typing_users(room_id)}})
        if f.allows_type("m.receipt") and (initial or req.moved("receipts")):
            since_receipts = None if initial or req.since is None else req.since["receipts"]
            receipts = await self.hs.stores.receipts.get_for_rooms(
                [room_id], since_receipts, req.now["receipts"])
            edu = self.hs.receipts.to_edu(receipts, req.user_id)
            if edu is not None:
                out.append(edu)
        return out

    async def _room_account_data(self, req: SyncRequest, room_id: str, initial: bool = False,
                                 ) -> list[dict[str, Any]]:
        f = req.filter.room_account_data
        if f.blocks_everything or not f.allows_room(room_id):
            return []
        if not initial and not req.moved("account_data"):
            return []
        since = None if initial or req.since is None else req.since["account_data"]
        changed = await self.hs.stores.account_data.changed_since(
            req.user_id, since, req.now["account_data"])
        return [{"type": t, "content": c} for t, c in changed.get(room_id, {}).items()
                if f.allows_type(t)]

    async def _fill_unread(self, req: SyncRequest, joined: dict[str, Any]) -> None:
        """Every joined room's unread counts, read for all rooms in one go. With
        ``unread_thread_notifications`` the threads are counted apart from
        the main timeline; without, a room's count covers all its threads."""
        if not joined:
            return
        # (Not bounded by the user's membership event: a display name change
        # moves it, and must not mark anything read. Rows exist only while joined.)
        rooms = {room_id: (0, req.events_upper(room_id)) for room_id in joined}
        unread = await self.hs.push_actions.unread_counts(req.user_id, rooms)
        per_thread = req.filter.timeline.unread_thread_notifications
        for room_id, entry in joined.items():
            counts = unread[room_id]
            if per_thread:
                entry["unread_notifications"] = counts.main.to_json()
                entry["unread_thread_notifications"] = {
                    root: c.to_json() for root, c in counts.threads.items()}
            else:
                every = [counts.main, *counts.threads.values()]
                entry["unread_notifications"] = {
                    "notification_count": sum(c.notification_count for c in every),
                    "highlight_count": sum(c.highlight_count for c in every)}

    async def _summary(self, user_id: str, room_id: str) -> dict[str, Any]:
        memberships = self.hs.stores.memberships
        members = await memberships.get_members(room_id, ("join", "invite"))
        summary: dict[str, Any] = {
            "m.joined_member_count": sum(m.membership == "join" for m in members),
            "m.invited_member_count": sum(m.membership == "invite" for m in members)}
        # Heroes are for naming a room that has no name: a room with a name
        # or a canonical alias gets only the counts.
        for etype, key in (("m.room.name", "name"), ("m.room.canonical_alias", "alias")):
            event = await self.hs.stores.state.get_current_state_event(room_id, etype)
            if event is not None and event.content.get(key):
                return summary
        heroes = sorted(m.user_id for m in members if m.user_id != user_id)
        if not heroes:
            # Nobody else is here: name the room after those who were.
            former = await memberships.get_members(room_id, ("leave", "ban"))
            heroes = sorted(m.user_id for m in former if m.user_id != user_id)
        summary["m.heroes"] = heroes[:5]
        return summary

    async def _stripped_state(self, room_id: str, membership: Membership,
                              ) -> list[dict[str, Any]]:
        state = await self.hs.stores.state.get_current_state_ids(room_id)
        if ("m.room.create", "") not in state:
            carried = await self._carried_stripped_state(membership)
            if carried is not None:
                return carried
        ids = [state[(t, "")] for t in STRIPPED_STATE_TYPES if (t, "") in state]
        own = await self.store.get_event(membership.event_id)
        # Who invited us: their member event, as Synapse includes it.
        if own is not None and own.event.sender != membership.user_id:
            inviter = state.get(("m.room.member", own.event.sender))
            if inviter is not None:
                ids.append(inviter)
        ids.append(membership.event_id)
        loaded = await self.store.get_events(ids)
        out = []
        for event_id in ids:
            stored = loaded.get(event_id)
            if stored is None:
                continue
            e = stored.event
            stripped: dict[str, Any] = {"type": e.type, "state_key": e.state_key or "",
                                        "content": e.content, "sender": e.sender}
            if event_id == membership.event_id:
                stripped.update(event_id=e.event_id, origin_server_ts=e.origin_server_ts)
            out.append(stripped)
        return out

    async def _carried_stripped_state(self, membership: Membership,
                                      ) -> list[dict[str, Any]] | None:
        """An invite from, or a knock on, a room this server is not in: the
        room's state as the other server sent it, kept with the event."""
        stored = await self.store.get_event(membership.event_id)
        if stored is None:
            return None
        e = stored.event
        key = "invite_room_state" if membership.membership == "invite" else "knock_room_state"
        carried = e.unsigned.get(key)
        if not isinstance(carried, list):
            return None
        out = [s for s in carried if isinstance(s, dict) and isinstance(s.get("type"), str)
               and not (s.get("type") == "m.room.member" and s.get("state_key") == e.state_key)]
        out.append({"type": e.type, "state_key": e.state_key or "", "content": e.content,
                    "sender": e.sender, "event_id": e.event_id,
                    "origin_server_ts": e.origin_server_ts})
        return out

    async def _left_room(self, req: SyncRequest, membership: Membership) -> dict[str, Any]:
        room_id = membership.room_id
        upper = membership.stream_ordering
        since_pos = req.events_lower(room_id)
        events, limited = await self._timeline(req, room_id, upper, since_pos, membership)
        start_pos = events[0].stream_ordering - 1 if events else upper
        state_at_start = await self._state_before(room_id, events, start_pos)
        # A room the client never saw joined (joined and left since the last
        # sync) comes with its full state, like any room new to the client.
        unseen = since_pos is not None and not await self._was_joined_at(
            room_id, req.user_id, since_pos)
        if since_pos is None or limited or unseen:
            state_ids = state_at_start
            if since_pos is not None and not unseen:
                before = await self._state_at(room_id, since_pos)
                state_ids = {k: v for k, v in state_at_start.items() if before.get(k) != v}
        else:
            state_ids = {}
        state_ids = self._filter_state(req, state_ids, events)
        loaded = await self.store.get_events(state_ids.values())
        kwargs = self._serialize_kwargs(req)
        return {
            "timeline": {"events": await self.hs.serializer.serialize(events, **kwargs),
                         "limited": limited, "prev_batch": stream_token(start_pos)},
            "state": {"events": await self.hs.serializer.serialize(
                sorted(loaded.values(), key=lambda e: e.stream_ordering), **kwargs)},
            "account_data": {"events": []},
        }

    def _serialize_kwargs(self, req: SyncRequest) -> dict[str, Any]:
        return {"user_id": req.user_id, "device_id": req.requester.device_id,
                "event_format": req.filter.event_format,
                "only_fields": req.filter.event_fields}
