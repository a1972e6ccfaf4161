"""Push rules in action: each event's push actions per recipient, unread counts,
and ``GET /notifications``.

:class:`PushActionsHandler` is an :class:`~myelin.handlers.indexers.EventIndexer`:
on the room's persister, inside each event's own transaction, it evaluates
the push rules of every local user joined to the room (and a local invitee
of an invite) other than the sender and those who ignore the sender, and
writes ``event_push_actions`` rows for the ones that notify or highlight. So
unread counts are exact at every events position, and any process reads
them from the shared database.

What the evaluation needs is cached per process: each user's ruleset
(invalidated by ``push_rules`` rows), each user's ignore list (by
``account_data`` rows), and the (user, membership, display name) of member
events, which are immutable. The room's members, their display names, the
member count and power levels come from the state after the event.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from myelin.events.auth import get_user_power_level
from myelin.events.push_rules_eval import (
    PushRuleEvaluator,
    RoomContext,
    highlights,
    notifies,
)
from myelin.storage.caches import Cache
from myelin.storage.stores.push import MAIN_TIMELINE, CountRange, PushAction
from myelin.storage.stores.receipts import MAIN_THREAD

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer
    from myelin.events.event import Event
    from myelin.storage.engines.base import Transaction
    from myelin.storage.stream_rows import AccountDataRow, PushRulesRow

IGNORED_USERS_TYPE = "m.ignored_user_list"
# The spec suggests following relations at most this far to find a thread root.
MAX_THREAD_HOPS = 3

Ruleset = dict[str, list[dict[str, Any]]]
# (user id, membership, display name) of one m.room.member event
MemberInfo = tuple[str, str, str | None]


@dataclass
class UnreadCounts:
    notification_count: int = 0
    highlight_count: int = 0

    def to_json(self) -> dict[str, int]:
        return {"notification_count": self.notification_count,
                "highlight_count": self.highlight_count}


@dataclass
class RoomUnread:
    main: UnreadCounts
    threads: dict[str, UnreadCounts]


def thread_id_of_content(content: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(thread root, parent) from an event's m.relates_to: the root when it is an
    m.thread relation, else the related event to look at next (or neither)."""
    relates = content.get("m.relates_to")
    if not isinstance(relates, Mapping):
        return None, None
    target = relates.get("event_id")
    if not isinstance(target, str):
        return None, None
    if relates.get("rel_type") == "m.thread":
        return target, None
    return None, target


class PushActionsHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.push_actions
        self._rulesets: Cache[str, Ruleset] = hs.caches.register("push_rulesets", 20_000)
        self._ignored: Cache[str, frozenset[str]] = hs.caches.register("push_ignored_users",
                                                                       20_000)
        self._members: Cache[str, MemberInfo] = hs.caches.register("push_member_info",
                                                                  200_000)

    # -- following streams ---------------------------------------------------
    def on_push_rules_rows(self, writer: str, rows: Sequence[tuple[int, PushRulesRow]]) -> None:
        for _, row in rows:
            self._rulesets.invalidate(row.user_id)

    def on_account_data_rows(self, writer: str,
                             rows: Sequence[tuple[int, AccountDataRow]]) -> None:
        for _, row in rows:
            if row.data_type == IGNORED_USERS_TYPE and not row.room_id:
                self._ignored.invalidate(row.user_id)

    # -- the indexer ---------------------------------------------------------
    async def index_event(self, txn: Transaction, event: Event,
                          state_after: Mapping[tuple[str, str], str], position: int) -> None:
        if event.type == "m.room.member" and event.state_key is not None:
            self._members.put(event.event_id, self._member_info(event))
        members = await self._members_of(state_after)
        joined = [user for user, membership, _ in members.values() if membership == "join"]
        recipients = [u for u in joined if u != event.sender and self.hs.is_mine(u)]
        invitee = None
        if (event.type == "m.room.member" and event.membership == "invite"
                and event.state_key and event.state_key != event.sender
                and self.hs.is_mine(event.state_key)):
            invitee = event.state_key
            recipients.append(invitee)
        if not recipients:
            return
        recipients = await self._not_ignoring(recipients, event.sender)
        if not recipients:
            return
        names = {user: name for user, _, name in members.values()}
        evaluator = PushRuleEvaluator(event.get_pdu_json(),
                                      await self._room_context(event, state_after, len(joined)))
        rulesets = await self._rulesets_of(recipients)
        thread_id: str | None = None
        now_ms = int(time.time() * 1000)
        rows: list[PushAction] = []
        for user_id in recipients:
            actions = evaluator.actions_for(rulesets[user_id], user_id, names.get(user_id))
            notif, highlight = notifies(actions), highlights(actions)
            if not (notif or highlight):
                continue
            if thread_id is None:
                thread_id = await self._thread_of(event)
            if user_id == invitee:
                # Listed in /notifications (and pushed), but never unread: it
                # comes before the invitee joins the room it would count in.
                notif = highlight = False
            rows.append(PushAction(user_id, event.room_id, event.event_id, position, thread_id,
                                   notif, highlight, actions, now_ms))
        if rows:
            await self.store.add(txn, rows)

    @staticmethod
    def _member_info(event: Event) -> MemberInfo:
        name = event.content.get("displayname")
        return (str(event.state_key), str(event.membership),
                name if isinstance(name, str) else None)

    async def _members_of(self, state: Mapping[tuple[str, str], str],
                          ) -> dict[str, MemberInfo]:
        """member event id -> (user, membership, display name) for the state's members."""
        ids = [eid for (etype, _), eid in state.items() if etype == "m.room.member"]
        out: dict[str, MemberInfo] = {}
        missing = []
        for event_id in ids:
            info = self._members.get(event_id)
            if info is None:
                missing.append(event_id)
            else:
                out[event_id] = info
        if missing:
            for event_id, stored in (await self.hs.stores.events.get_events(missing)).items():
                info = self._member_info(stored.event)
                self._members.put(event_id, info)
                out[event_id] = info
        return out

    async def _not_ignoring(self, users: list[str], sender: str) -> list[str]:
        out = []
        for user_id in users:
            ignored = self._ignored.get(user_id)
            if ignored is None:
                generation = self._ignored.generation
                content = await self.hs.stores.account_data.get(user_id, "", IGNORED_USERS_TYPE)
                listed = (content or {}).get("ignored_users")
                ignored = frozenset(listed) if isinstance(listed, dict) else frozenset()
                self._ignored.put_if(generation, user_id, ignored)
            if sender not in ignored:
                out.append(user_id)
        return out

    async def _rulesets_of(self, users: list[str]) -> dict[str, Ruleset]:
        out: dict[str, Ruleset] = {}
        missing = []
        for user_id in users:
            ruleset = self._rulesets.get(user_id)
            if ruleset is None:
                missing.append(user_id)
            else:
                out[user_id] = ruleset
        if missing:
            generation = self._rulesets.generation
            loaded = await self.hs.push_rules.get_rulesets(missing)
            for user_id, ruleset in loaded.items():
                self._rulesets.put_if(generation, user_id, ruleset)
            out.update(loaded)
        return out

    async def _room_context(self, event: Event, state: Mapping[tuple[str, str], str],
                            member_count: int) -> RoomContext:
        keys = [("m.room.create", ""), ("m.room.power_levels", "")]
        ids = [state[k] for k in keys if k in state]
        loaded = await self.hs.stores.events.get_events(ids)
        auth = {k: loaded[state[k]].event for k in keys if k in state and state[k] in loaded}
        level = get_user_power_level(event.sender, auth, event.room_version)
        power_levels = auth.get(("m.room.power_levels", ""))
        notifications = power_levels.content.get("notifications") if power_levels else None
        levels = {k: v for k, v in notifications.items()
                  if isinstance(v, int) and not isinstance(v, bool)} \
            if isinstance(notifications, dict) else {}
        return RoomContext(member_count, level, levels)

    async def _thread_of(self, event: Event) -> str:
        """The event's thread root, following other relations a few hops
        (a reaction to a thread reply is in the thread); "main" otherwise."""
        root, parent = thread_id_of_content(event.content)
        hops = 1
        while root is None and parent is not None and hops < MAX_THREAD_HOPS:
            stored = await self.hs.stores.events.get_event(parent)
            if stored is None:
                break
            root, parent = thread_id_of_content(stored.event.content)
            hops += 1
        return root or MAIN_TIMELINE

    # -- reading -------------------------------------------------------------
    async def unread_counts(self, user_id: str, rooms: Mapping[str, tuple[int, int]],
                            ) -> dict[str, RoomUnread]:
        """Unread counts of ``user_id`` in ``rooms`` (room -> (count after this
        events position, up to this one)): the user's actions after their read
        receipts. An unthreaded receipt clears every thread; a threaded one
        only its thread. Two queries for all the rooms."""
        room_ids = list(rooms)
        receipts = await self.hs.stores.receipts.get_read_positions_by_thread(user_id, room_ids)
        ranges: list[CountRange] = []
        for room_id, (after, upper) in rooms.items():
            read = receipts.get(room_id, {})
            lower = max(after, read.get(MAIN_THREAD, 0))
            own = {t: p for t, p in read.items() if t != MAIN_THREAD and p > lower}
            ranges.append(CountRange(room_id, lower, upper, exclude=tuple(own)))
            ranges.extend(CountRange(room_id, p, upper, thread_id=t) for t, p in own.items())
        counts = await self.store.count(user_id, ranges)
        out = {room_id: RoomUnread(UnreadCounts(), {}) for room_id in room_ids}
        for (room_id, thread_id), (notif, highlight) in counts.items():
            unread = out[room_id]
            if thread_id == MAIN_TIMELINE:
                unread.main = UnreadCounts(notif, highlight)
            else:
                unread.threads[thread_id] = UnreadCounts(notif, highlight)
        return out

    async def get_notifications(self, user_id: str, from_token: str | None, limit: int,
                                only_highlight: bool) -> dict[str, Any]:
        before = int(from_token) if from_token else None
        actions = await self.store.get_for_user(user_id, before=before, limit=limit,
                                                only_highlight=only_highlight)
        receipts = await self.hs.stores.receipts.get_read_positions_by_thread(
            user_id, sorted({a.room_id for a in actions}))
        loaded = await self.hs.stores.events.get_events([a.event_id for a in actions])
        events = await self.hs.serializer.serialize(
            [loaded[a.event_id] for a in actions if a.event_id in loaded], user_id=user_id)
        by_id = {e["event_id"]: e for e in events}
        notifications = []
        for action in actions:
            event = by_id.get(action.event_id)
            if event is None:
                continue
            read = receipts.get(action.room_id, {})
            read_up_to = max(read.get(MAIN_THREAD, 0), read.get(action.thread_id, 0))
            notifications.append({
                "actions": action.actions, "event": event, "room_id": action.room_id,
                "read": action.stream_ordering <= read_up_to, "ts": action.inserted_ts,
                # Rules per device profile are gone from the spec: no tag applies.
                "profile_tag": None})
        body: dict[str, Any] = {"notifications": notifications}
        if len(actions) == limit and actions:
            body["next_token"] = str(actions[-1].stream_ordering)
        return body


def indexer(hs: HomeServer) -> PushActionsHandler:
    """The INDEXERS factory: the process's push actions handler."""
    return hs.push_actions
