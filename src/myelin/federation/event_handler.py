"""Remote events into the room DAG: the checks on receipt of a PDU, filling
gaps, and persisting with the right state.

A PDU from ``/send`` is checked in the spec's order (server-server API,
"Checks performed on receipt of a PDU"): it is a valid event, it is signed
by the servers that must sign it, its content hash matches (otherwise a
redacted copy is used), it passes the auth rules against its own auth
events and against the state before it (otherwise it is *rejected*: a row
in ``rejections``, never stored as an event), and against the room's
current state (otherwise it is *soft-failed*: stored with its state, but out
of every timeline and never a forward extremity).

Missing prev events are asked for with ``/get_missing_events``; a gap still
open after that is bridged by fetching the state at the missing prev event
(``/state_ids``, then ``/event`` for what we lack) and resolving it with
state res v2 against the state of the prevs we have. When the DAG forks,
the room's current state is the resolution of its forward extremities'
states.

Everything that reads or moves a room's state runs on the room's event
persister under the room lock (as local sends do): a generic worker that
received the ``/send`` forwards each PDU there over HTTP replication.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote

from myelin.domain import MatrixError, bad_json, forbidden, not_found, too_large
from myelin.events.auth import (
    AuthError,
    check_auth,
    check_auth_events_list,
    get_named_level,
    get_user_power_level,
)
from myelin.events.event import Event, InvalidEventError
from myelin.events.hashing import check_content_hash
from myelin.events.redaction import prune_event_dict
from myelin.events.room_versions import EventFormat, RoomVersion, get_room_version
from myelin.events.state_res import (
    StateResolutionError,
    resolve_state_by_depth,
    resolve_state_v2,
)
from myelin.federation.acl import server_allowed
from myelin.federation.pdu_checks import PduFormatError, check_pdu_envelope, check_pdu_format
from myelin.handlers.events import PendingEvent
from myelin.replication.http import ReplicationEndpoint
from myelin.storage.stores.events import StateMap

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer
    from myelin.federation.client import FederationClient

logger = logging.getLogger(__name__)

FED_V1 = "/_matrix/federation/v1"
# /get_missing_events asks for this many at a time (the spec's default).
MISSING_EVENTS_LIMIT = 10
# Events fetched one by one with /event at once; beyond this /state is cheaper.
MAX_EVENT_FETCHES = 50
FETCH_CONCURRENCY = 5


class RejectedEvent(Exception):
    """The event failed the auth rules: recorded in ``rejections``."""


def _v1(path: str, *parts: str) -> str:
    return FED_V1 + path + "".join("/" + quote(p, safe="") for p in parts)


def _create_event_id(room_id: str) -> str:
    return "$" + room_id[1:]


class OnPdu(ReplicationEndpoint):
    """Process a checked PDU from /send on its room's persister."""

    NAME = "federation_on_pdu"
    STREAM = "events"
    SHARD_BY = "room_id"

    @staticmethod
    async def handle(hs: HomeServer, p: dict[str, Any]) -> Any:
        event = Event(p["event"], get_room_version(p["room_version"]), event_id=p["event_id"])
        await hs.federation_events.on_pdu_here(p["origin"], event)
        return {}


class PersistOutliers(ReplicationEndpoint):
    NAME = "federation_persist_outliers"
    STREAM = "events"
    SHARD_BY = "room_id"

    @staticmethod
    async def handle(hs: HomeServer, p: dict[str, Any]) -> Any:
        version = get_room_version(p["room_version"])
        events = [Event(e["event"], version, event_id=e["event_id"]) for e in p["events"]]
        await hs.federation_events.persist_outliers_here(version, events)
        return {}


class PersistWithState(ReplicationEndpoint):
    NAME = "federation_persist_with_state"
    STREAM = "events"
    SHARD_BY = "room_id"

    @staticmethod
    async def handle(hs: HomeServer, p: dict[str, Any]) -> Any:
        version = get_room_version(p["room_version"])
        event = Event(p["event"], version, event_id=p["event_id"])
        state = [Event(e["event"], version, event_id=e["event_id"]) for e in p["state"]]
        return await hs.federation_events.persist_with_state_here(event, state)


class Backfill(ReplicationEndpoint):
    NAME = "federation_backfill"
    STREAM = "events"
    SHARD_BY = "room_id"

    @staticmethod
    async def handle(hs: HomeServer, p: dict[str, Any]) -> Any:
        return await hs.federation_events.backfill_here(p["room_id"], list(p["before"]),
                                                        int(p["limit"]))


def _wire(event: Event) -> dict[str, Any]:
    return {"event": event.get_pdu_json(), "event_id": event.event_id}


class FederationEventHandler:
    """``hs.federation_events``: see the module docstring."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.federation
        self.events = hs.stores.events

    @property
    def _client(self) -> FederationClient:
        return self.hs.federation_client

    # -- the checks that need no room state ----------------------------------
    async def check_pdu(self, origin: str, pdu: dict[str, Any],
                        room_version: RoomVersion) -> Event:
        """Format, signatures and content hash of a PDU from ``origin``; the
        event (a redacted copy if the hash does not match). 400 or 403 if bad."""
        try:
            check_pdu_envelope(pdu, room_version)
        except PduFormatError as e:
            if e.too_large:
                raise too_large(str(e)) from None
            raise bad_json(f"Invalid PDU: {e}") from None
        # Signatures before the remaining format checks (as Synapse): an
        # unsigned or unhashed event is a forgery (403), not bad JSON.
        try:
            await self.hs.keyring.verify_event_signatures(pdu, room_version)
        except MatrixError:
            raise
        except Exception as e:  # SignatureError, or the keys could not be had
            logger.info("signature check failed on a PDU from %s: %s", origin, e)
            raise forbidden(f"Signature check failed: {e}") from None
        try:
            check_pdu_format(pdu, room_version)
        except PduFormatError as e:
            raise bad_json(f"Invalid PDU: {e}") from None
        try:
            event = Event(pdu, room_version)
        except InvalidEventError as e:
            raise bad_json(f"Invalid PDU: {e}") from None
        unsigned_free = {k: v for k, v in pdu.items() if k != "unsigned"}
        if not check_content_hash(unsigned_free, room_version):
            # Signed but altered (or redacted on the way): keep only what the
            # signatures cover.
            logger.info("content hash mismatch on %s from %s: redacting", event.event_id, origin)
            event = Event(prune_event_dict(unsigned_free, room_version), room_version,
                          event_id=event.event_id)
        return event

    async def check_server_acl(self, room_id: str, origin: str) -> None:
        """403 M_FORBIDDEN if the room's ``m.room.server_acl`` refuses ``origin``."""
        acl = await self.hs.stores.state.get_current_state_event(room_id, "m.room.server_acl")
        if acl is not None and not server_allowed(origin, acl.content):
            raise forbidden("Server is banned from this room")

    async def server_in_room(self, room_id: str, server_name: str) -> bool:
        """Whether a user of ``server_name`` is joined to the room now."""
        suffix = ":" + server_name
        members = await self.hs.stores.memberships.get_members(room_id, ("join",))
        return any(m.user_id.endswith(suffix) for m in members)

    # -- /send ----------------------------------------------------------------
    async def on_pdu(self, origin: str, event: Event) -> None:
        """Process a checked PDU from ``origin`` on the room's persister."""
        if self.hs.roles.is_writer("events", event.room_id):
            await self.on_pdu_here(origin, event)
        else:
            await self.hs.replication.call(OnPdu, {
                "room_id": event.room_id, "origin": origin, "room_version":
                event.room_version.identifier, **_wire(event)})
        if event.type == "m.room.guest_access" and event.state_key == "":
            # Guest access revoked over federation: our guests leave, as for a
            # local change (sends events, so outside the room lock).
            try:
                await self.hs.membership.kick_guests(event.room_id)
            except Exception:
                logger.exception("kicking guests out of %s failed", event.room_id)

    async def on_pdu_here(self, origin: str, event: Event) -> None:
        self.hs.event_creation.check_writers_agree()
        async with self.hs.event_creation.locks.hold(event.room_id):
            try:
                await self._process(origin, event, fetch_missing=True)
            except RejectedEvent:
                # Processed all the same: kept as rejected, answered {} in
                # /send (as Synapse), stored nowhere a client looks.
                return

    async def _known(self, event_id: str) -> bool:
        if await self.store.has_events([event_id]):
            return True
        return bool(await self.store.get_rejections([event_id]))

    async def _process(self, origin: str, event: Event, *, fetch_missing: bool) -> None:
        """Auth-check and persist one timeline event (the room lock is held)."""
        if await self._known(event.event_id):
            return
        room_id = event.room_id
        if await self.hs.stores.rooms.get_room_version(room_id) is None:
            raise not_found("Unknown room")
        prevs = event.prev_event_ids
        have = await self._timeline_prevs(prevs)
        if fetch_missing and len(have) < len(prevs):
            await self._get_missing_events(origin, event)
            have = await self._timeline_prevs(prevs)
            rejected = await self.store.get_rejections(prevs)
            if [p for p in prevs if p not in have and p not in rejected]:
                # As Synapse: a live event whose history its sender will not
                # give us is dropped (not rejected), or its state would be
                # trusted blindly; a later event's /get_missing_events, or
                # backfill, may bring it.
                raise forbidden("Your server isn't divulging details about prev_events "
                                "referenced in this event.")
        state_before, prev_group = await self._state_before(origin, event, have)
        await self._check_auth_events(origin, event)
        auth_map = await self._auth_map(event, state_before)
        try:
            check_auth(event, auth_map)
        except AuthError as e:
            await self._reject(event, f"against the state before it: {e}")
        soft_failed = False
        current = await self.hs.stores.state.get_current_state_ids(room_id)
        if current != state_before:
            # The room's state as it would be with this event's branch merged
            # in (as Synapse does): a remote member we only learnt of through
            # this branch's state is not a reason to soft-fail.
            merged = await self._resolve(event.room_version, [current, state_before], [])
            try:
                check_auth(event, await self._auth_map(event, merged))
            except AuthError as e:
                logger.info("soft-failing %s: %s", event.event_id, e)
                soft_failed = True
        if soft_failed:
            await self._write_soft_failed(event, state_before)
            return
        await self._persist_timeline(event, state_before, prev_group)

    async def _timeline_prevs(self, prevs: Sequence[str]) -> dict[str, int]:
        """The state groups of the prev events we have (with their state)."""
        if not prevs:
            return {}
        return await self.hs.stores.state.get_state_group_for_events(list(prevs))

    async def _reject(self, event: Event, reason: str) -> NoReturn:
        logger.info("rejecting %s: %s", event.event_id, reason)
        await self.store.record_rejection(event.event_id, event.room_id, reason)
        raise RejectedEvent(reason)

    async def _auth_map(self, event: Event, state: StateMap) -> dict[tuple[str, str], Event]:
        auth = await self.hs.event_creation.auth_map(event, state)
        if event.room_version.room_id_is_create_event_hash and ("m.room.create", "") not in auth:
            create = await self.events.get_event(_create_event_id(event.room_id))
            if create is not None:
                auth[("m.room.create", "")] = create.event
        return auth

    async def _check_auth_events(self, origin: str, event: Event) -> None:
        """The auth rules against the event's own auth events (fetching those
        we lack); rejects the event if they fail or are rejected themselves."""
        ids = list(event.auth_event_ids)
        if event.room_version.room_id_is_create_event_hash and event.type != "m.room.create":
            ids.append(_create_event_id(event.room_id))
        missing = [i for i in ids if not await self._known(i)]
        if missing:
            await self._fetch_auth_chain(origin, event, missing)
        rejected = await self.store.get_rejections(ids)
        if rejected:
            await self._reject(event, f"auth event {next(iter(rejected))} was rejected")
        loaded = await self.events.get_events(ids)
        unavailable = [i for i in ids if i not in loaded]
        if unavailable:
            await self._reject(event, f"auth events unavailable: {', '.join(unavailable[:3])}")
        listed = [loaded[i].event for i in event.auth_event_ids]
        auth = {(e.type, e.state_key or ""): e for e in listed}
        if event.room_version.room_id_is_create_event_hash and event.type != "m.room.create":
            create = loaded[_create_event_id(event.room_id)].event
            auth[("m.room.create", "")] = create
        try:
            check_auth_events_list(event, listed)
            check_auth(event, auth)
        except AuthError as e:
            await self._reject(event, f"against its auth events: {e}")

    async def _fetch_auth_chain(self, origin: str, event: Event, missing: list[str]) -> None:
        try:
            answer = await self._client.get_json(
                origin, _v1("/event_auth", event.room_id, event.event_id))
        except Exception as e:
            logger.info("could not fetch the auth chain of %s from %s: %s", event.event_id,
                        origin, e)
            return
        pdus = answer.get("auth_chain", []) if isinstance(answer, dict) else []
        await self._store_fetched_outliers(origin, event.room_version, pdus)

    async def _store_fetched_outliers(self, origin: str, room_version: RoomVersion,
                                      pdus: Sequence[Any]) -> list[Event]:
        checked: list[Event] = []
        for pdu in pdus if isinstance(pdus, list) else []:
            try:
                checked.append(await self.check_pdu(origin, pdu, room_version))
            except MatrixError as e:
                logger.info("dropping a fetched event from %s: %s", origin, e.message)
        await self._persist_outliers_locked(room_version, checked)
        return checked

    # -- the state before an event -------------------------------------------
    async def _state_before(self, origin: str, event: Event, have: dict[str, int],
                            ) -> tuple[StateMap, int | None]:
        prevs = event.prev_event_ids
        missing = [p for p in prevs if p not in have]
        if not missing:
            return await self.hs.persister.state_before(
                event.room_id, list(prevs), event.room_version)
        state_sets: list[StateMap] = []
        for group in sorted(set(have.values())):
            state_sets.append(await self.hs.stores.state.get_state_for_group(group))
        for prev in missing:
            state_sets.append(await self._remote_state_after(origin, event, prev))
        if len(state_sets) == 1:
            return state_sets[0], None
        return await self._resolve(event.room_version, state_sets, []), None

    async def _remote_state_after(self, origin: str, event: Event, prev_id: str) -> StateMap:
        """The state after a prev event we do not have, from ``origin``:
        the state at it (``/state_ids``) plus the event itself."""
        room_id, room_version = event.room_id, event.room_version
        client = self._client
        try:
            ids = await client.get_json(origin, _v1("/state_ids", room_id),
                                        {"event_id": prev_id})
            prev_pdu = await client.get_json(origin, _v1("/event", prev_id))
        except Exception as e:
            logger.info("could not fetch the state at %s from %s: %s", prev_id, origin, e)
            # Not a rejection: the event may be fine, we just cannot place it yet.
            raise MatrixError(502, "M_UNKNOWN",
                              f"The state at prev event {prev_id} is unavailable") from None
        state_ids = [i for i in ids.get("pdu_ids", []) if isinstance(i, str)]
        auth_ids = [i for i in ids.get("auth_chain_ids", []) if isinstance(i, str)]
        wanted = list(dict.fromkeys(state_ids + auth_ids))
        have = await self.store.has_events(wanted)
        lacking = [i for i in wanted if i not in have]
        if len(lacking) > MAX_EVENT_FETCHES:
            answer = await client.get_json(origin, _v1("/state", room_id),
                                           {"event_id": prev_id})
            pdus = list(answer.get("pdus", [])) + list(answer.get("auth_chain", []))
        else:
            pdus = await self._fetch_events(origin, lacking)
        await self._store_fetched_outliers(origin, room_version, pdus)
        loaded = await self.events.get_events(state_ids)
        state: StateMap = {}
        for stored in loaded.values():
            ev = stored.event
            if ev.state_key is not None and ev.room_id == room_id:
                state[(ev.type, ev.state_key)] = ev.event_id
        pdus_of_prev = prev_pdu.get("pdus", []) if isinstance(prev_pdu, dict) else []
        if pdus_of_prev:
            try:
                prev = await self.check_pdu(origin, pdus_of_prev[0], room_version)
            except MatrixError:
                prev = None
            if prev is not None and prev.event_id == prev_id and prev.state_key is not None:
                await self._persist_outliers_locked(room_version, [prev])
                if await self.store.has_events([prev_id]):
                    state[(prev.type, prev.state_key)] = prev_id
        return state

    async def _fetch_events(self, origin: str, event_ids: Sequence[str]) -> list[Any]:
        limit = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def one(event_id: str) -> Any:
            async with limit:
                try:
                    answer = await self._client.get_json(
                        origin, _v1("/event", event_id))
                except Exception as e:
                    logger.info("could not fetch %s from %s: %s", event_id, origin, e)
                    return None
            pdus = answer.get("pdus") if isinstance(answer, dict) else None
            return pdus[0] if isinstance(pdus, list) and pdus else None

        found = await asyncio.gather(*(one(i) for i in event_ids))
        return [p for p in found if p is not None]

    async def _resolve(self, room_version: RoomVersion, state_sets: list[StateMap],
                       extra: Sequence[Event]) -> StateMap:
        """State res v2 over ``state_sets``; ``extra`` are events they name that
        are not stored yet."""
        known = {e.event_id: e for e in extra}
        pending = {eid for s in state_sets for eid in s.values()}
        for e in extra:
            pending.update(e.auth_event_ids)
        event_map: dict[str, Event] = dict(known)
        pending -= set(event_map)
        while pending:
            fetched = await self.events.get_events(pending)
            pending = set()
            for event_id, stored in fetched.items():
                event_map[event_id] = stored.event
                pending.update(a for a in stored.event.auth_event_ids if a not in event_map)
        # Drop what we cannot load (a rejected or unfetchable event) from every set.
        cleaned = [{k: v for k, v in s.items() if v in event_map} for s in state_sets]
        rejected = await self.store.get_rejections(event_map)
        if room_version.state_res != 2:
            return resolve_state_by_depth(cleaned, event_map)
        try:
            return dict(resolve_state_v2(room_version, cleaned, event_map,
                                         rejected_event_ids=set(rejected)))
        except StateResolutionError as e:
            logger.warning("state resolution failed: %s", e)
            return cleaned[0]

    # -- missing prev events -------------------------------------------------
    async def _get_missing_events(self, origin: str, event: Event) -> None:
        room_id = event.room_id
        extremities = await self.events.get_forward_extremities(room_id)
        stored = await self.events.get_events(extremities)
        min_depth = min((s.event.depth for s in stored.values()), default=0)
        try:
            answer = await self._client.post_json(
                origin, _v1("/get_missing_events", room_id),
                {"earliest_events": extremities, "latest_events": [event.event_id],
                 "limit": MISSING_EVENTS_LIMIT, "min_depth": min_depth})
        except Exception as e:
            logger.info("get_missing_events for %s from %s failed: %s", event.event_id, origin,
                        e)
            return
        pdus = answer.get("events", []) if isinstance(answer, dict) else []
        checked: list[Event] = []
        for pdu in pdus[:MISSING_EVENTS_LIMIT * 2] if isinstance(pdus, list) else []:
            try:
                ev = await self.check_pdu(origin, pdu, event.room_version)
            except MatrixError as e:
                logger.info("dropping a missing event from %s: %s", origin, e.message)
                continue
            if ev.room_id == room_id and ev.event_id != event.event_id:
                checked.append(ev)
        for ev in sorted(checked, key=lambda e: (e.depth, e.origin_server_ts)):
            try:
                # Gaps before these are bridged with the state at them, not by
                # asking for ever more missing events.
                await self._process(origin, ev, fetch_missing=False)
            except (RejectedEvent, MatrixError) as e:
                logger.info("missing event %s not persisted: %s", ev.event_id, e)

    # -- writing --------------------------------------------------------------
    async def _persist_timeline(self, event: Event, state_before: StateMap,
                                prev_group: int | None) -> int:
        room_id = event.room_id
        old_ext = await self.events.get_forward_extremities(room_id)
        # Soft-failed prevs were never extremities; what they built on is
        # superseded by this event all the same (Synapse #5269).
        behind = await self._behind_soft_failed(event.prev_event_ids)
        extra = [e for e in old_ext if e in behind and e not in event.prev_event_ids]
        new_ext = [e for e in old_ext if e not in event.prev_event_ids and e not in extra]
        new_ext.append(event.event_id)
        state_after = dict(state_before)
        if event.state_key is not None:
            state_after[(event.type, event.state_key)] = event.event_id
        current: StateMap | None = None
        if len(new_ext) > 1:
            others = [e for e in new_ext if e != event.event_id]
            groups = await self.hs.stores.state.get_state_group_for_events(others)
            sets = [state_after]
            for group in sorted(set(groups.values())):
                sets.append(await self.hs.stores.state.get_state_for_group(group))
            if len(sets) > 1:
                current = await self._resolve(event.room_version, sets, [event])
        if current is None and state_before != await self.hs.stores.state.get_current_state_ids(
                room_id):
            # The persister writes the event's own state on top of the current
            # state; here the state before it is not the current state (a room
            # we just joined, a gap bridged with remote state): write it whole.
            current = state_after
        unapplied = not await self._may_apply_redaction(event, state_before)
        (sent,) = await self.hs.persister.persist_batch_here(
            [PendingEvent(event, state_before, prev_group, current_state=current)])
        if unapplied and event.redacts is not None:
            await self.store.unapply_redaction(event.event_id)
            await self.hs.invalidate_cache("events", [event.redacts])
        if extra:
            await self.store.delete_forward_extremities(room_id, extra)
            await self.hs.invalidate_cache("forward_extremities", [room_id])
        if current is not None:
            # Other processes (and memberships this event did not name) follow.
            await self.hs.invalidate_cache("current_state", [room_id])
            await self.hs.invalidate_cache("memberships", [
                [room_id, k[1]] for k in current if k[0] == "m.room.member"])
        return sent.stream_ordering

    async def _may_apply_redaction(self, event: Event, state: StateMap) -> bool:
        """From room version 3 a redaction passes the auth rules without its
        target; it applies only if its sender may redact others' events or
        shares the target's server (the spec's "Redactions" rule)."""
        if event.type != "m.room.redaction" or event.redacts is None:
            return True
        if event.room_version.event_format == EventFormat.V1:
            return True  # v1/v2: the auth rules checked the domains already
        auth = await self._auth_map(event, state)
        if get_user_power_level(event.sender, auth) >= get_named_level("redact", auth):
            return True
        target = await self.events.get_event(event.redacts)
        return target is not None and \
            target.event.sender.split(":", 1)[1] == event.sender.split(":", 1)[1]

    async def _behind_soft_failed(self, prevs: Sequence[str]) -> set[str]:
        """The events reached from ``prevs`` through soft-failed events only."""
        reached: set[str] = set()
        frontier = [p for p in prevs if await self.store.is_soft_failed(p)]
        seen = set(frontier)
        while frontier and len(seen) < 200:
            loaded = await self.events.get_events(frontier)
            frontier = []
            for stored in loaded.values():
                for prev in stored.event.prev_event_ids:
                    if prev in seen:
                        continue
                    seen.add(prev)
                    if await self.store.is_soft_failed(prev):
                        frontier.append(prev)
                    else:
                        reached.add(prev)
        return reached

    async def _write_soft_failed(self, event: Event, state_before: StateMap) -> None:
        state_after = dict(state_before)
        if event.state_key is not None:
            state_after[(event.type, event.state_key)] = event.event_id
        async with self.hs.db.transaction("persist_soft_failed") as txn:
            group = await self.hs.stores.state.store_state_group(
                txn, event.room_id, event.event_id, None, state_after, state_after)
            (position,) = await self.store.allocate_negative_positions(txn, 1)
            await self.store.write_offstream_event(
                txn, event, position, instance_name=self.hs.config.instance_name,
                outlier=True, state_group=group, soft_failed=True)

    # -- outliers and events with a given state (joins, invites) --------------
    async def persist_outliers(self, room_version: RoomVersion, events: Sequence[Event]) -> None:
        """Store events known by id but not in the timeline (an auth chain, the
        state of a room we join), each auth-checked against its auth events;
        those that fail are rejected."""
        if not events:
            return
        room_id = events[0].room_id
        if self.hs.roles.is_writer("events", room_id):
            await self.persist_outliers_here(room_version, events)
            return
        await self.hs.replication.call(PersistOutliers, {
            "room_id": room_id, "room_version": room_version.identifier,
            "events": [_wire(e) for e in events]})

    async def persist_outliers_here(self, room_version: RoomVersion,
                                    events: Sequence[Event]) -> None:
        if not events:
            return
        self.hs.event_creation.check_writers_agree()
        async with self.hs.event_creation.locks.hold(events[0].room_id):
            await self._persist_outliers_locked(room_version, events)

    async def _persist_outliers_locked(self, room_version: RoomVersion,
                                       events: Sequence[Event]) -> None:
        batch = {e.event_id: e for e in events}
        known = await self.store.has_events(batch)
        rejected_before = await self.store.get_rejections(batch)
        todo = {i: e for i, e in batch.items() if i not in known and i not in rejected_before}
        if not todo:
            return
        # Auth events first: an event is checked once its auth events are settled.
        accepted: dict[str, Event] = {}
        rejected: dict[str, str] = {}
        stored_auth: dict[str, Event] = {}
        want = {a for e in todo.values() for a in e.auth_event_ids if a not in todo}
        for rid in {e.room_id for e in todo.values()}:
            if room_version.room_id_is_create_event_hash:
                want.add(_create_event_id(rid))
        want -= set(todo)
        if want:
            stored_auth = {i: s.event for i, s in (await self.events.get_events(want)).items()}
        previously_rejected = await self.store.get_rejections(want)
        remaining = dict(todo)
        while remaining:
            progressed = False
            for event_id, event in list(remaining.items()):
                deps = list(event.auth_event_ids)
                if room_version.room_id_is_create_event_hash and event.type != "m.room.create":
                    deps.append(_create_event_id(event.room_id))
                if any(d in remaining and d != event_id for d in deps):
                    continue
                del remaining[event_id]
                progressed = True
                reason = self._outlier_auth(event, deps, accepted, stored_auth, rejected,
                                            previously_rejected)
                if reason is None:
                    accepted[event_id] = event
                else:
                    rejected[event_id] = reason
            if not progressed:  # an auth cycle: nothing in it can be authorised
                for event_id in remaining:
                    rejected[event_id] = "auth events form a cycle"
                break
        for event_id, reason in rejected.items():
            logger.info("rejecting outlier %s: %s", event_id, reason)
            await self.store.record_rejection(event_id, batch[event_id].room_id, reason)
        if not accepted:
            return
        ordered = sorted(accepted.values(), key=lambda e: e.depth)
        async with self.hs.db.transaction("persist_outliers") as txn:
            await self._ensure_room(txn, room_version, ordered, stored_auth)
            positions = await self.store.allocate_negative_positions(txn, len(ordered))
            for event, position in zip(ordered, positions, strict=True):
                await self.store.write_offstream_event(
                    txn, event, position, instance_name=self.hs.config.instance_name,
                    outlier=True, state_group=None)

    @staticmethod
    def _outlier_auth(event: Event, deps: list[str], accepted: Mapping[str, Event],
                      stored: Mapping[str, Event], rejected: Mapping[str, str],
                      previously_rejected: Mapping[str, str]) -> str | None:
        auth: dict[tuple[str, str], Event] = {}
        listed: list[Event] = []
        for dep in deps:
            if dep in rejected or dep in previously_rejected:
                return f"auth event {dep} was rejected"
            found = accepted.get(dep) or stored.get(dep)
            if found is None:
                return f"auth event {dep} is unknown"
            if dep in event.auth_event_ids:
                listed.append(found)
            auth[(found.type, found.state_key or "")] = found
        try:
            check_auth_events_list(event, listed)
            check_auth(event, auth)
        except AuthError as e:
            return str(e)
        return None

    async def _ensure_room(self, txn: Any, room_version: RoomVersion, events: Sequence[Event],
                           stored: Mapping[str, Event]) -> None:
        for event in [*events, *stored.values()]:
            if event.type == "m.room.create" and event.state_key == "":
                creator = event.content.get("creator")
                if room_version.implicit_room_creator or not isinstance(creator, str):
                    creator = event.sender
                await self.store.ensure_room(txn, event.room_id, room_version.identifier,
                                             creator, event.origin_server_ts)
                return

    async def persist_with_state(self, event: Event, state: Sequence[Event]) -> int:
        """Persist ``event`` with ``state`` as the state before it (e.g. our own
        join from send_join): the state (whose auth chains must be stored or in
        ``state``) is stored as outliers first. Returns the stream ordering."""
        if self.hs.roles.is_writer("events", event.room_id):
            ordering = await self.persist_with_state_here(event, state)
            await self.hs.streams.view.wait_for("events", self.hs.config.instance_name,
                                                ordering)
            return ordering
        answer = await self.hs.replication.call(PersistWithState, {
            "room_id": event.room_id, "room_version": event.room_version.identifier,
            **_wire(event), "state": [_wire(e) for e in state]})
        return int(answer)

    async def persist_with_state_here(self, event: Event, state: Sequence[Event]) -> int:
        self.hs.event_creation.check_writers_agree()
        async with self.hs.event_creation.locks.hold(event.room_id):
            await self._persist_outliers_locked(event.room_version, state)
            existing = await self.events.get_event(event.event_id)
            if existing is not None and not await self.store.is_outlier(event.event_id):
                return existing.stream_ordering
            ids = [e.event_id for e in state]
            loaded = await self.events.get_events(ids)
            state_before: StateMap = {}
            for stored in loaded.values():
                ev = stored.event
                if ev.state_key is not None:
                    state_before[(ev.type, ev.state_key)] = ev.event_id
            try:
                check_auth(event, await self._auth_map(event, state_before))
            except AuthError as e:
                raise forbidden(f"Event not allowed by the room state: {e}") from None
            return await self._persist_timeline(event, state_before, None)

    # -- backfill ---------------------------------------------------------------
    async def backfill(self, room_id: str, before: list[str], limit: int) -> int:
        """Fetch up to ``limit`` events preceding ``before`` from other servers in
        the room; they sort before everything stored. Returns how many were stored."""
        if self.hs.roles.is_writer("events", room_id):
            return await self.backfill_here(room_id, before, limit)
        answer = await self.hs.replication.call(Backfill, {
            "room_id": room_id, "before": before, "limit": limit})
        return int(answer)

    async def backfill_here(self, room_id: str, before: list[str], limit: int) -> int:
        from myelin.federation.backfill import backfill_room

        self.hs.event_creation.check_writers_agree()
        async with self.hs.event_creation.locks.hold(room_id):
            return await backfill_room(self, room_id, before, limit)
