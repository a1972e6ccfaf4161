"""Server-side search (``POST /search``, the ``room_events`` category).

The text of ``m.room.message`` bodies, room names and topics is indexed as
each event is persisted (:class:`SearchIndexer`, an ``EventIndexer``) and
dropped when the event is redacted. A search runs the full-text query over
the rooms the user is or was in, then applies history visibility like every
other read: matches are fetched in batches and filtered until a page is full,
so a page never holds an event the user may not see.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError, Requester, bad_json, invalid_param
from myelin.handlers.filters import EventFilter, _matches
from myelin.handlers.room_reads import stream_token
from myelin.storage.fts import Query, parse_query
from myelin.storage.stores.search import SearchHit, SearchScope

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer
    from myelin.events.event import Event
    from myelin.storage.engines.base import Transaction
    from myelin.storage.stores.events import StoredEvent

# The searchable key of each indexed event type.
KEY_OF_TYPE = {"m.room.message": "content.body", "m.room.name": "content.name",
               "m.room.topic": "content.topic"}
ALL_KEYS = tuple(KEY_OF_TYPE.values())
GROUP_KEYS = ("room_id", "sender")
DEFAULT_LIMIT = 10
MAX_LIMIT = 100
DEFAULT_CONTEXT = 5
MAX_CONTEXT = 100
# Matches fetched per round while history visibility hides some; a search
# gives up after this many rounds and answers with a next_batch to go on from.
BATCH = 100
MAX_ROUNDS = 10


class SearchIndexer:
    """Writes the searchable text of each event in its own transaction."""

    def __init__(self, hs: HomeServer) -> None:
        self.store = hs.stores.search

    async def index_event(self, txn: Transaction, event: Event,
                          state_after: Mapping[tuple[str, str], str], position: int) -> None:
        if event.type == "m.room.redaction":
            if event.redacts is not None:
                self.store.unindex_event(txn, event.redacts)
            return
        key = KEY_OF_TYPE.get(event.type)
        if key is None:
            return
        # Names and topics count only as room state; messages only as messages.
        if (event.state_key is None) != (event.type == "m.room.message"):
            return
        text = event.content.get(key.split(".", 1)[1])
        if isinstance(text, str) and text.strip():
            self.store.index_event(txn, position, event.event_id, event.room_id, event.sender,
                                   key, text)


def search_indexer(hs: HomeServer) -> SearchIndexer:
    return SearchIndexer(hs)


@dataclass(frozen=True)
class RoomEventsRequest:
    """A validated ``search_categories.room_events``."""

    search_term: str
    keys: tuple[str, ...]
    by_rank: bool
    event_filter: EventFilter
    limit: int
    context: tuple[int, int, bool] | None  # (before, after, include_profile)
    include_state: bool
    group_by: tuple[str, ...]

    @classmethod
    def parse(cls, raw: Any) -> RoomEventsRequest:
        if not isinstance(raw, dict):
            raise bad_json("search_categories.room_events must be an object")
        term = raw.get("search_term")
        if not isinstance(term, str):
            raise bad_json("room_events.search_term must be a string")
        keys = raw.get("keys", list(ALL_KEYS))
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise bad_json("room_events.keys must be a list of strings")
        unknown = [k for k in keys if k not in ALL_KEYS]
        if unknown:
            raise invalid_param(f"Unknown search keys {unknown}; expected some of {ALL_KEYS}")
        order_by = raw.get("order_by", "rank")
        if order_by not in ("rank", "recent"):
            raise invalid_param('room_events.order_by must be "rank" or "recent"')
        event_filter = EventFilter.parse(raw.get("filter"), "room_events.filter")
        limit = DEFAULT_LIMIT if event_filter.limit is None else min(event_filter.limit,
                                                                      MAX_LIMIT)
        context = _parse_context(raw.get("event_context"))
        include_state = raw.get("include_state", False)
        if not isinstance(include_state, bool):
            raise bad_json("room_events.include_state must be a boolean")
        return cls(term, tuple(dict.fromkeys(keys)), order_by == "rank", event_filter, limit,
                   context, include_state, _parse_groupings(raw.get("groupings")))


def _non_negative(raw: dict[str, Any], name: str, default: int) -> int:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_json(f"event_context.{name} must be an integer")
    if value < 0:
        raise invalid_param(f"event_context.{name} must not be negative")
    return min(value, MAX_CONTEXT)


def _parse_context(raw: Any) -> tuple[int, int, bool] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise bad_json("room_events.event_context must be an object")
    include_profile = raw.get("include_profile", False)
    if not isinstance(include_profile, bool):
        raise bad_json("event_context.include_profile must be a boolean")
    return (_non_negative(raw, "before_limit", DEFAULT_CONTEXT),
            _non_negative(raw, "after_limit", DEFAULT_CONTEXT), include_profile)


def _parse_groupings(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    group_by = raw.get("group_by", []) if isinstance(raw, dict) else None
    if not isinstance(group_by, list) or not all(isinstance(g, dict) for g in group_by):
        raise bad_json("room_events.groupings.group_by must be a list of objects")
    keys = []
    for group in group_by:
        key = group.get("key")
        if key not in GROUP_KEYS:
            raise invalid_param(f"Unknown grouping key {key!r}; expected one of {GROUP_KEYS}")
        keys.append(str(key))
    return tuple(dict.fromkeys(keys))


def _cursor_token(by_rank: bool, hit: SearchHit) -> str:
    return f"r{hit.rank!r}_{hit.stream_ordering}" if by_rank else f"s{hit.stream_ordering}"


def _parse_cursor(token: str, by_rank: bool) -> tuple[float, int]:
    try:
        if by_rank and token.startswith("r"):
            rank, _, position = token[1:].rpartition("_")
            return float(rank), int(position)
        if not by_rank and token.startswith("s"):
            return 0.0, int(token[1:])
    except ValueError:
        pass
    raise invalid_param(f"Invalid next_batch token {token!r} for this order_by")


def _after(hit: SearchHit, cursor: tuple[float, int], by_rank: bool) -> bool:
    """Does ``hit`` come after ``cursor`` in the result order?"""
    rank, position = cursor
    if by_rank:
        return hit.rank < rank or (hit.rank == rank and hit.stream_ordering < position)
    return hit.stream_ordering < position


class SearchHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.search

    async def search(self, requester: Requester, body: dict[str, Any],
                     next_batch: str | None) -> dict[str, Any]:
        categories = body.get("search_categories")
        if not isinstance(categories, dict):
            raise bad_json("search_categories must be an object")
        if "room_events" not in categories:
            return {"search_categories": {}}
        request = RoomEventsRequest.parse(categories["room_events"])
        cursor = _parse_cursor(next_batch, request.by_rank) if next_batch else None
        return {"search_categories": {
            "room_events": await self.search_room_events(requester, request, cursor)}}

    def _scope(self, user_id: str, request: RoomEventsRequest) -> SearchScope:
        f = request.event_filter
        # The filter's types narrow the keys: each key belongs to one event type.
        keys = [key for etype, key in KEY_OF_TYPE.items()
                if key in request.keys and f.allows_type(etype)]
        senders = f.senders
        if senders is not None and any("*" in s for s in senders):
            senders = None  # senders are ids, not patterns; be lenient, filter afterwards
        return SearchScope(user_id, keys, rooms=f.rooms, not_rooms=f.not_rooms,
                           senders=senders, not_senders=f.not_senders)

    async def search_room_events(self, requester: Requester, request: RoomEventsRequest,
                                 cursor: tuple[float, int] | None) -> dict[str, Any]:
        query = parse_query(request.search_term)
        scope = self._scope(requester.user_id, request)
        page, next_cursor, count = await self._page(requester.user_id, query, scope, request,
                                                    cursor)
        user_id, device_id = requester.user_id, requester.device_id
        events = await self.hs.serializer.serialize([stored for _, stored in page],
                                                    user_id=user_id, device_id=device_id)
        results = []
        for (hit, stored), event in zip(page, events, strict=True):
            result: dict[str, Any] = {"rank": hit.rank, "result": event}
            if request.context is not None:
                result["context"] = await self._context(requester, stored, *request.context)
            results.append(result)
        out: dict[str, Any] = {"count": count, "highlights": query.highlight_words(),
                               "results": results}
        if next_cursor is not None:
            out["next_batch"] = _cursor_token(request.by_rank, next_cursor)
        if request.group_by:
            out["groups"] = self._groups(page, request.group_by)
        if request.include_state:
            out["state"] = await self._room_states(requester, {h.room_id for h, _ in page})
        return out

    async def _page(self, user_id: str, query: Query, scope: SearchScope,
                    request: RoomEventsRequest, cursor: tuple[float, int] | None,
                    ) -> tuple[list[tuple[SearchHit, StoredEvent]], SearchHit | None, int]:
        """(a page of visible matches, where the next page starts, the count)."""
        limit, by_rank = request.limit, request.by_rank
        total = await self.store.count(query, scope)
        if total <= BATCH:
            # Few matches: filter them all, so the count is exact too.
            hits = await self.store.search(query, scope, by_rank=by_rank, after=None,
                                           limit=BATCH)
            visible = await self._visible(user_id, hits, request.event_filter)
            count = len(visible)
            if cursor is not None:
                visible = [v for v in visible if _after(v[0], cursor, by_rank)]
            page = visible[:limit]
            more = len(visible) > limit
            return page, (page[-1][0] if more and page else None), count
        found: list[tuple[SearchHit, StoredEvent]] = []
        scanned_to: SearchHit | None = None
        exhausted = False
        for _ in range(MAX_ROUNDS):
            after = cursor if scanned_to is None else (scanned_to.rank,
                                                       scanned_to.stream_ordering)
            hits = await self.store.search(query, scope, by_rank=by_rank, after=after,
                                           limit=BATCH)
            found.extend(await self._visible(user_id, hits, request.event_filter))
            if len(hits) < BATCH:
                exhausted = True
                break
            scanned_to = hits[-1]
            if len(found) > limit:
                break
        if len(found) > limit:
            return found[:limit], found[limit - 1][0], total
        if exhausted:
            return found, None, total
        # Visibility hid most of what we scanned: let the client go on from there.
        return found, scanned_to, total

    async def _visible(self, user_id: str, hits: Sequence[SearchHit], event_filter: EventFilter,
                       ) -> list[tuple[SearchHit, StoredEvent]]:
        """The hits ``user_id`` may see, in order."""
        if not hits:
            return []
        loaded = await self.hs.stores.events.get_events([h.event_id for h in hits])
        by_room: dict[str, list[StoredEvent]] = {}
        for hit in hits:
            stored = loaded.get(hit.event_id)
            if stored is None or stored.redacted_by is not None:
                continue
            if event_filter.senders is not None and not _matches(stored.event.sender,
                                                                 event_filter.senders):
                continue
            by_room.setdefault(hit.room_id, []).append(stored)
        seen: set[str] = set()
        for events in by_room.values():
            for stored in await self.hs.visibility.filter_events(user_id, events):
                seen.add(stored.event.event_id)
        return [(h, loaded[h.event_id]) for h in hits if h.event_id in seen]

    async def _context(self, requester: Requester, stored: StoredEvent, before_limit: int,
                       after_limit: int, include_profile: bool) -> dict[str, Any]:
        reads = self.hs.room_reads
        room_id, position = stored.event.room_id, stored.stream_ordering
        context: dict[str, Any] = {"events_before": [], "events_after": []}
        try:
            before = await reads.paginate(requester, room_id,
                                          from_token=stream_token(position - 1), to_token=None,
                                          backwards=True, limit=max(before_limit, 1),
                                          event_filter=None)
            after = await reads.paginate(requester, room_id, from_token=stream_token(position),
                                         to_token=None, backwards=False,
                                         limit=max(after_limit, 1), event_filter=None)
        except MatrixError:
            return context
        context["events_before"] = before["chunk"][:before_limit]
        context["events_after"] = after["chunk"][:after_limit]
        context["start"] = before.get("end", before["start"])
        context["end"] = after.get("end", after["start"])
        if include_profile:
            senders = {stored.event.sender} | {
                e["sender"] for e in context["events_before"] + context["events_after"]}
            context["profile_info"] = await self._profiles_at(stored, senders)
        return context

    async def _profiles_at(self, stored: StoredEvent, senders: set[str],
                           ) -> dict[str, dict[str, Any]]:
        """Each sender's display name and avatar as the room knew them at ``stored``."""
        state = await self.hs.stores.state.get_state_after_event(stored.event.event_id) or {}
        ids = {s: state[("m.room.member", s)] for s in senders if ("m.room.member", s) in state}
        members = await self.hs.stores.events.get_events(ids.values())
        out: dict[str, dict[str, Any]] = {}
        for sender, event_id in ids.items():
            member = members.get(event_id)
            if member is None:
                continue
            content = member.event.content
            out[sender] = {k: content[k] for k in ("displayname", "avatar_url")
                           if isinstance(content.get(k), str)}
        return out

    @staticmethod
    def _groups(page: Sequence[tuple[SearchHit, StoredEvent]], group_by: Sequence[str],
                ) -> dict[str, dict[str, Any]]:
        groups: dict[str, dict[str, Any]] = {}
        for key in group_by:
            values: dict[str, dict[str, Any]] = {}
            for hit, stored in page:
                value = hit.room_id if key == "room_id" else stored.event.sender
                group = values.setdefault(value, {"results": [], "order": len(values) + 1})
                group["results"].append(stored.event.event_id)
            groups[key] = values
        return groups

    async def _room_states(self, requester: Requester, room_ids: set[str],
                           ) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for room_id in sorted(room_ids):
            try:
                out[room_id] = await self.hs.room_reads.get_state(requester, room_id)
            except MatrixError:
                continue
        return out
