"""Relations between events: indexing them, ``/relations``, ``/threads`` and
the bundled aggregations (``unsigned.m.relations``) the serializer adds.

The :class:`RelationsIndexer` runs in each event's own transaction on the
room's persister: a child with a valid ``m.relates_to`` gets its row, a
redaction breaks the relationship of its target. Aggregations are read per
response in a fixed number of queries, cached per parent in every process,
and invalidated by the ``events`` rows every process follows
(:meth:`RelationsHandler.on_events_rows`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from myelin.domain import MatrixError, Requester, not_found
from myelin.handlers.room_reads import parse_stream_token, stream_token
from myelin.storage.caches import Cache
from myelin.storage.stores.events import StoredEvent
from myelin.storage.stores.relations import (
    MAX_RECURSION_DEPTH,
    RelationRow,
    RelationStore,
    ThreadSummary,
)
from myelin.storage.stream_rows import EventsRow

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer
    from myelin.events.event import Event
    from myelin.storage.engines.base import Transaction

DEFAULT_RELATIONS_LIMIT = 5
MAX_RELATIONS_LIMIT = 100
DEFAULT_THREADS_LIMIT = 5
MAX_THREADS_LIMIT = 100


def relation_of(content: Mapping[str, Any]) -> tuple[str, str] | None:
    """(parent event id, rel_type) of an event's ``m.relates_to``, if it has a
    valid one (replies, which carry no rel_type, are not relations here)."""
    relates_to = content.get("m.relates_to")
    if not isinstance(relates_to, dict):
        return None
    parent, rel_type = relates_to.get("event_id"), relates_to.get("rel_type")
    if not isinstance(parent, str) or not isinstance(rel_type, str) or not parent \
            or not rel_type:
        return None
    return parent, rel_type


@dataclass(frozen=True)
class Aggregation:
    """What a parent's children add to it, as cached (the same for every reader)."""

    room_id: str
    edits: tuple[RelationRow, ...] = ()
    references: tuple[str, ...] = ()
    thread: ThreadSummary | None = None
    thread_senders: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not self.edits and not self.references and self.thread is None


class RelationsIndexer:
    """Writes ``event_relations`` and ``threads`` rows as events are persisted."""

    def __init__(self, hs: HomeServer) -> None:
        self.store = hs.stores.relations

    async def index_event(self, txn: Transaction, event: Event,
                          state_after: Mapping[tuple[str, str], str], position: int) -> None:
        if event.type == "m.room.redaction" and event.redacts:
            await RelationStore.remove_relation(txn, event.redacts, event.room_id)
            return
        relation = relation_of(event.content)
        if relation is None or (event.state_key is not None and relation[1] == "m.thread"):
            return
        parent_id, rel_type = relation
        if parent_id == event.event_id:
            return
        parent_relation = await RelationStore.relation_of(txn, parent_id)
        if rel_type == "m.thread":
            if parent_relation is not None:
                return  # a thread cannot start from a child event: ignored
            thread_id: str | None = parent_id
        else:
            thread_id = parent_relation[1] if parent_relation else None
        await RelationStore.add_relation(
            txn, event_id=event.event_id, parent_id=parent_id, rel_type=rel_type,
            event_type=event.type, sender=event.sender, room_id=event.room_id,
            stream_ordering=position, origin_server_ts=event.origin_server_ts,
            thread_id=thread_id)


def indexer(hs: HomeServer) -> RelationsIndexer:
    return RelationsIndexer(hs)


class RelationsHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.relations
        self._aggregations: Cache[str, Aggregation] = hs.caches.register(
            "relation_aggregations", 50_000)

    # -- cache invalidation ------------------------------------------------
    def on_events_rows(self, writer: str, rows: Sequence[tuple[int, EventsRow]]) -> None:
        """A new child changes its parent's aggregation; a redaction may break
        any relationship of its room (its target's parent is not in the row)."""
        for _, row in rows:
            if row.redacts is not None or row.json is None:
                # Rows read back after a gap carry no content: be conservative.
                self._aggregations.invalidate_where(
                    lambda _, v, room_id=row.room_id: v.room_id == room_id)
                continue
            if "m.relates_to" not in row.json:
                continue
            try:
                content = orjson.loads(row.json).get("content")
            except orjson.JSONDecodeError:
                continue
            relation = relation_of(content) if isinstance(content, dict) else None
            if relation is not None:
                self._aggregations.invalidate(relation[0])

    # -- sending -------------------------------------------------------------
    async def check_new_relation(self, room_id: str, content: Mapping[str, Any]) -> None:
        """Refuse (400) a thread started off an event that is itself a child, as
        the spec asks of servers; other odd relations are just not indexed."""
        relation = relation_of(content)
        if relation is None or relation[1] != "m.thread":
            return
        parent = await self.hs.stores.events.get_event(relation[0])
        if parent is not None and parent.event.room_id == room_id and \
                "m.relates_to" in parent.event.content:
            raise MatrixError(400, "M_UNKNOWN",
                              "Cannot start a thread from an event with a relation")

    # -- bundled aggregations --------------------------------------------------
    async def aggregations(self, events: Sequence[StoredEvent]) -> dict[str, Aggregation]:
        """The non-empty aggregations of these events, by event id: cached per
        parent, the misses read for all events at once."""
        out: dict[str, Aggregation] = {}
        missing: dict[str, list[str]] = defaultdict(list)
        for stored in events:
            event = stored.event
            if event.state_key is not None:
                continue  # state events get no bundled aggregations
            relation = relation_of(event.content)
            if relation is not None and relation[1] in ("m.replace", "m.annotation"):
                continue  # an edit or a reaction has nothing worth aggregating
            cached = self._aggregations.get(event.event_id)
            if cached is None:
                missing[event.room_id].append(event.event_id)
            elif not cached.empty:
                out[event.event_id] = cached
        for room_id, parent_ids in missing.items():
            generation = self._aggregations.generation
            rows = await self.store.get_aggregation_rows(parent_ids, room_id)
            threads = await self.store.get_thread_summaries(parent_ids, room_id)
            edits: dict[str, list[RelationRow]] = defaultdict(list)
            references: dict[str, list[str]] = defaultdict(list)
            for row in rows:
                if row.rel_type == "m.replace":
                    edits[row.parent_id].append(row)
                else:
                    references[row.parent_id].append(row.event_id)
            for parent_id in parent_ids:
                summary, senders = threads.get(parent_id, (None, frozenset()))
                aggregation = Aggregation(room_id, tuple(edits.get(parent_id, ())),
                                          tuple(references.get(parent_id, ())), summary,
                                          senders)
                self._aggregations.put_if(generation, parent_id, aggregation)
                if not aggregation.empty:
                    out[parent_id] = aggregation
        return out

    async def bundle(self, events: Sequence[StoredEvent], user_id: str | None, depth: int,
                     serialize_kwargs: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """``unsigned.m.relations`` of each event that has one, by event id.

        Edits and thread replies are serialized by the same serializer one
        level deeper (``depth``), so a thread's latest event carries its own
        edit and nothing recurses further."""
        aggregations = await self.aggregations(events)
        if not aggregations:
            return {}
        by_id = {s.event.event_id: s for s in events}
        # The edit candidates: by the original sender, of the original type.
        candidates: dict[str, list[RelationRow]] = {}
        for parent_id, agg in aggregations.items():
            original = by_id[parent_id]
            if not agg.edits or original.redacted_by:
                continue  # a redacted original shows no edit
            valid = [r for r in agg.edits if r.sender == original.event.sender
                     and r.event_type == original.event.type]
            valid.sort(key=lambda r: (r.origin_server_ts, r.event_id), reverse=True)
            if valid:
                candidates[parent_id] = valid
        wanted = [r.event_id for rows in candidates.values() for r in rows]
        wanted += [a.thread.latest_event_id for a in aggregations.values() if a.thread]
        loaded = await self.hs.stores.events.get_events(wanted) if wanted else {}
        edit_of: dict[str, StoredEvent] = {}
        for parent_id, rows in candidates.items():
            for row in rows:
                edit = loaded.get(row.event_id)
                if edit is None or edit.redacted_by:
                    continue
                if "m.new_content" in edit.event.content or edit.event.type == \
                        "m.room.encrypted":
                    edit_of[parent_id] = edit
                    break
        latest_of = {p: loaded[a.thread.latest_event_id] for p, a in aggregations.items()
                     if a.thread and a.thread.latest_event_id in loaded}
        serializer = self.hs.serializer
        nested = list(dict.fromkeys([*edit_of.values(), *latest_of.values()]))
        serialized = {s.event.event_id: d for s, d in zip(nested, await serializer.serialize(
            nested, _depth=depth + 1, **serialize_kwargs), strict=True)}
        out: dict[str, dict[str, Any]] = {}
        for parent_id, agg in aggregations.items():
            relations: dict[str, Any] = {}
            edit = edit_of.get(parent_id)
            if edit is not None:
                relations["m.replace"] = serialized[edit.event.event_id]
            latest = latest_of.get(parent_id)
            if agg.thread is not None and latest is not None:
                root_sender = by_id[parent_id].event.sender
                relations["m.thread"] = {
                    "latest_event": serialized[latest.event.event_id],
                    "count": agg.thread.count,
                    "current_user_participated": user_id is not None and (
                        user_id == root_sender or user_id in agg.thread_senders),
                }
            if agg.references:
                relations["m.reference"] = {"chunk": [{"event_id": e}
                                                      for e in agg.references]}
            if relations:
                out[parent_id] = relations
        return out

    # -- /relations ------------------------------------------------------------
    async def get_relations(self, requester: Requester, room_id: str, parent_id: str, *,
                            rel_type: str | None, event_type: str | None,
                            from_token: str | None, to_token: str | None, backwards: bool,
                            limit: int, recurse: bool) -> dict[str, Any]:
        """A page of a parent's children the requester may see (404 if they
        may not see the parent)."""
        reads = self.hs.room_reads
        try:
            await reads.get_event(requester, room_id, parent_id)
            membership, _ = await reads.membership_for_read(requester, room_id)
        except MatrixError as e:
            if e.errcode != "M_FORBIDDEN":
                raise
            # Not allowed to see it is the same answer as not there.
            raise not_found("Event not found.") from None
        from_pos = parse_stream_token(from_token) if from_token else None
        to_pos = parse_stream_token(to_token) if to_token else None
        position = from_pos
        chunk: list[StoredEvent] = []
        more = False
        for _ in range(5):  # keep going while visibility hides whole pages
            ids = await self.store.get_children(
                room_id, parent_id, rel_type=rel_type, event_type=event_type,
                from_pos=position, to_pos=to_pos, backwards=backwards, limit=limit + 1,
                recurse=recurse)
            more = len(ids) > limit
            page_ids = ids[:limit]
            if page_ids:
                loaded = await self.hs.stores.events.get_events(i for i, _ in page_ids)
                page = [loaded[i] for i, _ in page_ids if i in loaded]
                chunk.extend(await self.hs.visibility.filter_events(requester.user_id, page,
                                                                    membership))
                last = page_ids[-1][1]
                position = last - 1 if backwards else last
            if chunk or not more:
                break
        response: dict[str, Any] = {"chunk": await self.hs.serializer.serialize(
            chunk[:limit], user_id=requester.user_id, device_id=requester.device_id)}
        if more and position is not None:
            response["next_batch"] = stream_token(position)
        if from_token:
            response["prev_batch"] = from_token
        if recurse:
            response["recursion_depth"] = MAX_RECURSION_DEPTH
        return response

    # -- /threads -----------------------------------------------------------
    async def get_threads(self, requester: Requester, room_id: str, *, participated: bool,
                          from_token: str | None, limit: int) -> dict[str, Any]:
        """A room's thread roots the requester may see, most recently active first."""
        reads = self.hs.room_reads
        membership, _ = await reads.membership_for_read(requester, room_id)
        before = _parse_threads_token(from_token) if from_token else None
        chunk: list[StoredEvent] = []
        more = False
        for _ in range(5):
            rows = await self.store.get_threads(
                room_id, participant=requester.user_id if participated else None,
                before=before, limit=limit + 1)
            more = len(rows) > limit
            page = rows[:limit]
            if page:
                loaded = await self.hs.stores.events.get_events(t for t, _ in page)
                roots = [loaded[t] for t, _ in page
                         if t in loaded and loaded[t].event.room_id == room_id]
                chunk.extend(await self.hs.visibility.filter_events(requester.user_id, roots,
                                                                    membership))
                before = page[-1][1]
            if chunk or not more:
                break
        response: dict[str, Any] = {"chunk": await self.hs.serializer.serialize(
            chunk[:limit], user_id=requester.user_id, device_id=requester.device_id)}
        if more and before is not None:
            response["next_batch"] = f"t{before}"
        return response


def _parse_threads_token(token: str) -> int:
    try:
        if token.startswith("t"):
            return int(token[1:])
    except ValueError:
        pass
    raise MatrixError(400, "M_INVALID_PARAM", "Unknown pagination token")
