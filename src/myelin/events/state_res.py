"""State resolution v2 (room versions 2-11) and its v12 "hydra" variant.

Given the room states at the tips of a DAG fork, compute the state after
merging them, following ``content/rooms/fragments/v2-state-res.md`` and the
v12 changes in ``content/rooms/v12.md``:

1. split into unconflicted state and the conflicted set;
2. full conflicted set = conflicted set + auth difference (+ in v12 the
   conflicted state subgraph);
3. power events (and their auth ancestors in the full conflicted set) are
   sorted by reverse topological power ordering and run through iterative
   auth checks, starting from the unconflicted state (v12: empty state);
4. the remaining events are sorted by mainline ordering against the
   resolved power levels and auth-checked on top;
5. unconflicted state is laid over the result.

Everything is pure: events come from ``event_map``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from myelin.events.auth import (
    CREATE,
    POWER_LEVELS,
    AuthError,
    StateKey,
    auth_types_for_event,
    check_auth,
    get_user_power_level,
)
from myelin.events.event import Event
from myelin.events.room_versions import RoomVersion

__all__ = ["StateResolutionError", "compute_auth_chain", "resolve_state_v2"]


class StateResolutionError(Exception):
    """An event needed by the algorithm is missing from ``event_map``."""


def compute_auth_chain(event_id: str, event_map: Mapping[str, Event]) -> set[str]:
    """All events reachable through ``auth_events`` from ``event_id`` (excluding it)."""
    chain: set[str] = set()
    stack = list(_event(event_map, event_id).auth_event_ids)
    while stack:
        eid = stack.pop()
        if eid in chain:
            continue
        chain.add(eid)
        stack.extend(_event(event_map, eid).auth_event_ids)
    return chain


def _event(event_map: Mapping[str, Event], event_id: str) -> Event:
    try:
        return event_map[event_id]
    except KeyError:
        raise StateResolutionError(f"event {event_id} missing from event_map") from None


def _is_power_event(ev: Event) -> bool:
    if ev.state_key is None:
        return False
    if ev.type in ("m.room.power_levels", "m.room.join_rules"):
        return True
    return (
        ev.type == "m.room.member"
        and ev.membership in ("leave", "ban")
        and ev.sender != ev.state_key
    )


def _create_event_for(ev: Event, event_map: Mapping[str, Event]) -> Event | None:
    """v12: the create event is implied by the room id, not listed in auth_events."""
    return event_map.get("$" + ev.room_id[1:])


def _auth_event_state(ev: Event, event_map: Mapping[str, Event]) -> dict[StateKey, Event]:
    """State map formed from an event's own auth events."""
    out: dict[StateKey, Event] = {}
    for aid in ev.auth_event_ids:
        ae = event_map.get(aid)
        if ae is not None and ae.state_key is not None:
            out[(ae.type, ae.state_key)] = ae
    if ev.room_version.room_id_is_create_event_hash and CREATE not in out:
        create = _create_event_for(ev, event_map)
        if create is not None:
            out[CREATE] = create
    return out


def _sender_power(ev: Event, event_map: Mapping[str, Event]) -> float:
    auth_state = _auth_event_state(ev, event_map)
    if CREATE not in auth_state:
        # Only the create event itself has no create event to look at; its
        # sender is the most powerful user there is.
        return math.inf if ev.type == "m.room.create" else 0
    try:
        return float(get_user_power_level(ev.sender, auth_state, ev.room_version))
    except AuthError:
        return 0


def _reverse_topological_power_order(
    event_ids: Collection[str], event_map: Mapping[str, Event]
) -> list[str]:
    """Kahn's algorithm over the auth DAG restricted to ``event_ids``, always
    taking the smallest of the ready events by (higher power, older ts, id)."""
    ids = set(event_ids)
    # Edges point from an auth event to the events that cite it; an event is
    # ready once all its auth events (within the set) have been emitted.
    pending: dict[str, int] = {}
    dependents: dict[str, list[str]] = {eid: [] for eid in ids}
    for eid in ids:
        auth_in_set = {a for a in _event(event_map, eid).auth_event_ids if a in ids}
        pending[eid] = len(auth_in_set)
        for a in auth_in_set:
            dependents[a].append(eid)

    def key(eid: str) -> tuple[float, int, str]:
        ev = _event(event_map, eid)
        return (-_sender_power(ev, event_map), ev.origin_server_ts, eid)

    heap = [key(eid) for eid, n in pending.items() if n == 0]
    heapq.heapify(heap)
    out: list[str] = []
    while heap:
        _, _, eid = heapq.heappop(heap)
        out.append(eid)
        for dep in dependents[eid]:
            pending[dep] -= 1
            if pending[dep] == 0:
                heapq.heappush(heap, key(dep))
    if len(out) != len(ids):
        raise StateResolutionError("auth events contain a cycle")
    return out


def _pl_auth_event(ev: Event, event_map: Mapping[str, Event]) -> str | None:
    for aid in ev.auth_event_ids:
        ae = event_map.get(aid)
        if ae is not None and (ae.type, ae.state_key) == POWER_LEVELS:
            return aid
    return None


def _mainline_order(
    event_ids: Iterable[str],
    resolved_pl: str | None,
    event_map: Mapping[str, Event],
) -> list[str]:
    mainline: dict[str, int] = {}
    current = resolved_pl
    index = 0
    while current is not None and current not in mainline:
        mainline[current] = index
        index += 1
        current = _pl_auth_event(_event(event_map, current), event_map)

    def position(eid: str) -> float:
        # Walk e1, e2, ... (e0 itself is not considered, per the spec).
        seen: set[str] = set()
        nxt = _pl_auth_event(_event(event_map, eid), event_map)
        while nxt is not None and nxt not in seen:
            if nxt in mainline:
                return mainline[nxt]
            seen.add(nxt)
            nxt = _pl_auth_event(_event(event_map, nxt), event_map)
        return math.inf

    def key(eid: str) -> tuple[float, int, str]:
        # A *greater* mainline position sorts first.
        return (-position(eid), _event(event_map, eid).origin_server_ts, eid)

    return sorted(event_ids, key=key)


def _iterative_auth_checks(
    room_version: RoomVersion,
    ordered: Sequence[str],
    base_state: Mapping[StateKey, str],
    event_map: Mapping[str, Event],
    rejected: Collection[str],
) -> dict[StateKey, str]:
    state = dict(base_state)
    for eid in ordered:
        ev = _event(event_map, eid)
        if ev.state_key is None:
            continue
        auth_map: dict[StateKey, Event] = {}
        # Fall back to the event's own (non-rejected) auth events for keys
        # the state being built does not have yet.
        for aid in ev.auth_event_ids:
            if aid in rejected:
                continue
            ae = event_map.get(aid)
            if ae is not None and ae.state_key is not None:
                auth_map[(ae.type, ae.state_key)] = ae
        if room_version.room_id_is_create_event_hash:
            create = _create_event_for(ev, event_map)
            if create is not None and create.event_id not in rejected:
                auth_map[CREATE] = create
        keys = auth_types_for_event(ev.type, ev.state_key, ev.sender, ev.content, room_version)
        if room_version.room_id_is_create_event_hash:
            keys.append(CREATE)
        for k in keys:
            sid = state.get(k)
            if sid is not None and sid in event_map:
                auth_map[k] = event_map[sid]
        try:
            check_auth(ev, auth_map)
        except AuthError:
            continue
        state[(ev.type, ev.state_key)] = eid
    return state


def _conflicted_subgraph(conflicted: set[str], event_map: Mapping[str, Event]) -> set[str]:
    """v12: events on some auth path between two conflicted events (endpoints
    included)."""
    # Forward: everything reachable from a conflicted event (plus themselves).
    reachable: set[str] = set()
    stack = list(conflicted)
    while stack:
        eid = stack.pop()
        if eid in reachable:
            continue
        reachable.add(eid)
        stack.extend(a for a in _event(event_map, eid).auth_event_ids if a in event_map)
    # Backward within that set: events from which a conflicted event can be reached.
    cited_by: dict[str, list[str]] = {eid: [] for eid in reachable}
    for eid in reachable:
        for a in _event(event_map, eid).auth_event_ids:
            if a in cited_by:
                cited_by[a].append(eid)
    reaches_conflicted: set[str] = set()
    stack = list(conflicted)
    while stack:
        eid = stack.pop()
        if eid in reaches_conflicted:
            continue
        reaches_conflicted.add(eid)
        stack.extend(cited_by.get(eid, ()))
    return reachable & reaches_conflicted


def resolve_state_v2(
    room_version: RoomVersion,
    state_sets: Sequence[Mapping[StateKey, str]],
    event_map: Mapping[str, Event],
    auth_chain_of: Callable[[str], set[str]] | None = None,
    *,
    rejected_event_ids: Collection[str] = (),
) -> dict[StateKey, str]:
    """Resolve ``state_sets`` (maps of ``(type, state_key) -> event_id``).

    ``event_map`` must hold every event referenced by the state sets and their
    auth chains.  ``auth_chain_of`` may supply precomputed auth chains
    (excluding the event itself); by default they are walked from
    ``event_map``.  ``rejected_event_ids`` are never used as fallback auth
    events during the iterative auth checks.
    """
    if room_version.state_res != 2:
        raise NotImplementedError(f"state resolution for room version {room_version.identifier}")
    if not state_sets:
        return {}

    # 1. Unconflicted state map and conflicted state set.
    all_keys: set[StateKey] = set()
    for s in state_sets:
        all_keys.update(s)
    unconflicted: dict[StateKey, str] = {}
    conflicted: set[str] = set()
    for k in all_keys:
        values = {s.get(k) for s in state_sets}
        only = next(iter(values))
        if len(values) == 1 and only is not None:
            unconflicted[k] = only
        else:
            conflicted.update(v for v in values if v is not None)
    if not conflicted:
        return unconflicted

    # 2. Auth difference and full conflicted set.
    chain_cache: dict[str, set[str]] = {}

    def chain(eid: str) -> set[str]:
        if eid not in chain_cache:
            chain_cache[eid] = (
                auth_chain_of(eid) if auth_chain_of else compute_auth_chain(eid, event_map)
            )
        return chain_cache[eid]

    full_chains: list[set[str]] = []
    for s in state_sets:
        c: set[str] = set()
        for eid in s.values():
            c |= chain(eid)
        full_chains.append(c)
    auth_difference = set[str]().union(*full_chains) - full_chains[0].intersection(*full_chains[1:])
    full_conflicted = conflicted | auth_difference
    if room_version.hydra_state_res:
        full_conflicted |= _conflicted_subgraph(conflicted, event_map)
    full_conflicted = {e for e in full_conflicted if e in event_map}

    # 3. Power events plus their auth ancestors inside the full conflicted set.
    power = {e for e in full_conflicted if _is_power_event(event_map[e])}
    power_closure = set(power)
    for p in power:
        power_closure |= chain(p) & full_conflicted
    sorted_power = _reverse_topological_power_order(power_closure, event_map)

    base: Mapping[StateKey, str] = {} if room_version.hydra_state_res else unconflicted
    partial = _iterative_auth_checks(
        room_version, sorted_power, base, event_map, rejected_event_ids
    )

    # 4. Everything else, in mainline order against the resolved power levels.
    others = full_conflicted - power_closure
    ordered_others = _mainline_order(others, partial.get(POWER_LEVELS), event_map)
    resolved = _iterative_auth_checks(
        room_version, ordered_others, partial, event_map, rejected_event_ids
    )

    # 5. Unconflicted state wins.
    resolved.update(unconflicted)
    return resolved


def resolve_state_by_depth(
    state_sets: Sequence[Mapping[StateKey, str]], event_map: Mapping[str, Event]
) -> dict[StateKey, str]:
    """A stand-in for state res v1 (room versions 1 and 2), which is not
    implemented: a conflict goes to the deepest event (then the greater id),
    so state a remote makes up beside the DAG (say, a power levels event at
    depth 0) never displaces the room's own."""
    out: dict[StateKey, str] = {}
    for state in state_sets:
        for key, event_id in state.items():
            held = out.get(key)
            if held is None or held == event_id:
                out[key] = event_id
                continue
            mine, theirs = event_map.get(held), event_map.get(event_id)
            if theirs is not None and (
                mine is None or (theirs.depth, event_id) > (mine.depth, held)
            ):
                out[key] = event_id
    return out
