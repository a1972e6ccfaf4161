"""Joining, leaving, inviting and knocking across servers, both sides.

As the *resident* server (a room we are in) we answer make_join/make_leave/
make_knock with a template built on the room's forward extremities, check
the signed event that comes back with send_*, persist it on the room's
persister (:class:`PersistMembership`) and pass it on to the other servers in
the room; we counter-sign invites of our users and keep them
(:class:`StoreOutOfRoomMembership`) so the invitee sees them in /sync.

As the *joining* server we ask each candidate resident in turn for a
template, sign our event, send it, check the state and auth chain we get
back and persist our join with that state (``hs.federation_events``); a
leave or knock of a room we are not in goes the same way, and the result is
kept as an out-of-room membership.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from myelin.domain import MatrixError, forbidden, not_found, server_of
from myelin.events.auth import (
    auth_types_for_event,
    get_named_level,
    get_user_power_level,
)
from myelin.events.event import Event, InvalidEventError
from myelin.events.redaction import prune_event_dict
from myelin.events.room_versions import (
    KNOWN_ROOM_VERSIONS,
    EventFormat,
    RoomVersion,
    get_room_version,
)
from myelin.events.signing import SigningKey, sign_event, sign_json
from myelin.federation.membership_rules import (
    TemplateError,
    authorised_events,
    check_invite_event,
    check_membership_event,
    check_template,
    event_from_template,
    parse_events,
    servers_in_room,
    state_map,
)
from myelin.handlers.events import MAX_PREV_EVENTS, SentEvent
from myelin.replication.http import ReplicationEndpoint
from myelin.storage.stores.events import StateMap

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)

# How many PDUs of a send_join answer are checked at once.
CHECK_BATCH = 50

FED_V1 = "/_matrix/federation/v1"
FED_V2 = "/_matrix/federation/v2"

# Sent to invitees and knockers so their clients can show the room.
STRIPPED_STATE_TYPES = ("m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
                        "m.room.canonical_alias", "m.room.encryption", "m.room.topic")


def _path(*parts: str) -> str:
    return "/".join(quote(p, safe="") for p in parts)


def _state_to_wire(state: StateMap) -> list[list[str]]:
    return [[t, k, e] for (t, k), e in state.items()]


def _state_from_wire(raw: list[list[str]]) -> StateMap:
    return {(t, k): e for t, k, e in raw}


class PersistMembership(ReplicationEndpoint):
    """Authorise and persist a remote user's join, leave or knock on its room's persister."""

    NAME = "fed_persist_membership"
    STREAM = "events"
    SHARD_BY = "room_id"

    @staticmethod
    async def handle(hs: HomeServer, p: dict[str, Any]) -> Any:
        event = Event(p["event"], get_room_version(p["room_version"]), event_id=p["event_id"])
        position, state = await hs.federation_membership.persist_in_room_here(event)
        return {"stream_ordering": position, "state": _state_to_wire(state)}


class StoreOutOfRoomMembership(ReplicationEndpoint):
    """Keep a membership event of a room we are not in (an invite, our knock or leave)."""

    NAME = "fed_store_out_of_room_membership"
    STREAM = "events"
    SHARD_BY = "room_id"

    @staticmethod
    async def handle(hs: HomeServer, p: dict[str, Any]) -> Any:
        event = Event(p["event"], get_room_version(p["room_version"]), event_id=p["event_id"])
        return await hs.federation_membership.store_out_of_room_here(event)


class FederationMembership:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.events

    @cached_property
    def _signing_key(self) -> SigningKey:
        key = self.hs.signing_key
        return SigningKey(key.encode(), key.version)

    # -- shared --------------------------------------------------------------

    async def is_host_in_room(self, room_id: str) -> bool:
        """Some local user is joined: our copy of the room is live."""
        members = await self.hs.stores.memberships.get_members(room_id, ("join",))
        return any(self.hs.is_mine(m.user_id) for m in members)

    async def stripped_state(self, room_id: str, inviter: str | None = None,
                             ) -> list[dict[str, Any]]:
        """The room's stripped state for an invitee or knocker; with the
        inviter's own member event, so the invite shows who sent it."""
        state = await self.hs.stores.state.get_current_state_ids(room_id)
        ids = [state[(t, "")] for t in STRIPPED_STATE_TYPES if (t, "") in state]
        if inviter is not None and ("m.room.member", inviter) in state:
            ids.append(state[("m.room.member", inviter)])
        loaded = await self.store.get_events(ids)
        return [{"type": e.type, "state_key": e.state_key or "", "content": e.content,
                 "sender": e.sender}
                for e in (loaded[i].event for i in ids if i in loaded)]

    def _countersign_pdu(self, pdu: dict[str, Any], version: RoomVersion) -> dict[str, Any]:
        """Another server's event with our signature added (invites, restricted joins)."""
        out = dict(pdu)
        unsigned = out.pop("unsigned", None)
        signatures = out.get("signatures")
        try:
            ours = sign_json(prune_event_dict(out, version), self.hs.server_name,
                             self._signing_key)["signatures"]
        except (ValueError, TypeError, KeyError) as e:
            raise MatrixError(400, "M_BAD_JSON", f"Invalid event: {e}") from None
        out["signatures"] = {**(signatures if isinstance(signatures, dict) else {}), **ours}
        if unsigned is not None:
            out["unsigned"] = unsigned
        return out

    def _countersign(self, event: Event) -> Event:
        pdu = self._countersign_pdu(event.get_pdu_json(), event.room_version)
        return Event(pdu, event.room_version, event_id=event.event_id)

    async def _room_version(self, room_id: str) -> RoomVersion:
        version = await self.hs.stores.rooms.get_room_version(room_id)
        if version is None or not await self.is_host_in_room(room_id):
            raise not_found("This server is not in that room")
        return version

    async def _check_acl(self, room_id: str, origin: str) -> None:
        events = getattr(self.hs, "federation_events", None)
        if events is not None:
            await events.check_server_acl(room_id, origin)

    async def _check_pdu(self, origin: str, pdu: Any, version: RoomVersion) -> Event:
        if not isinstance(pdu, dict):
            raise MatrixError(400, "M_BAD_JSON", "The event must be an object")
        # An unsigned or badly signed event is refused as such (403), before
        # anything about its form: the sending server has not vouched for it.
        try:
            await self.hs.keyring.verify_event_signatures(pdu, version)
        except MatrixError:
            raise
        except Exception as e:
            raise forbidden(f"Signature check failed: {e}") from None
        event: Event = await self.hs.federation_events.check_pdu(origin, pdu, version)
        return event

    # -- resident side: make_* ------------------------------------------------

    async def make_membership(self, origin: str, room_id: str, user_id: str, membership: str,
                              supported_versions: Sequence[str] | None) -> dict[str, Any]:
        """The template of a join, leave or knock of ``user_id`` (a user of
        ``origin``), built on the room's current forward extremities."""
        version = await self._room_version(room_id)
        if server_of(user_id) != origin:
            raise forbidden("The user is not of the requesting server")
        await self._check_acl(room_id, origin)
        if supported_versions is not None and version.identifier not in supported_versions:
            raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION",
                              f"Your homeserver does not support the room version"
                              f" {version.identifier}", room_version=version.identifier)
        if membership == "knock" and not version.knock_join_rule:
            raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION",
                              "This room version does not allow knocking",
                              room_version=version.identifier)
        prev = (await self.store.get_forward_extremities(room_id))[-MAX_PREV_EVENTS:]
        state, _ = await self.hs.persister.state_before(room_id, prev, version)
        content: dict[str, Any] = {"membership": membership}
        if membership == "join":
            via = await self._restricted_join_authoriser(room_id, user_id, version, state)
            if via is not None:
                content["join_authorised_via_users_server"] = via
        keys = auth_types_for_event("m.room.member", user_id, user_id, content, version)
        auth_ids = [state[k] for k in keys if k in state]
        depth = await self.store.get_max_depth(prev)
        fields: dict[str, Any] = {
            "room_id": room_id, "sender": user_id, "type": "m.room.member",
            "state_key": user_id, "content": content, "prev_events": prev,
            "auth_events": auth_ids, "depth": depth + 1,
            "origin_server_ts": int(time.time() * 1000),
        }
        if not version.implicit_room_creator:
            fields["origin"] = self.hs.server_name
        if version.event_format == EventFormat.V1:
            loaded = await self.store.get_events([*prev, *auth_ids])
            fields["prev_events"] = [[e, self._hashes(loaded, e)] for e in prev]
            fields["auth_events"] = [[e, self._hashes(loaded, e)] for e in auth_ids]
        # Refuse now what the auth rules would refuse at send_* (a ban, an
        # invite-only room), rather than hand out a template that cannot pass.
        probe = Event(fields, version, event_id="$probe")
        await self.hs.event_creation.check_auth(probe, state)
        return {"room_version": version.identifier, "event": fields}

    @staticmethod
    def _hashes(loaded: dict[str, Any], event_id: str) -> dict[str, Any]:
        stored = loaded.get(event_id)
        sha = stored.event.hashes.get("sha256") if stored is not None else None
        return {"sha256": sha} if isinstance(sha, str) else {}

    async def _restricted_join_authoriser(self, room_id: str, user_id: str,
                                          version: RoomVersion, state: StateMap) -> str | None:
        """In a restricted room, the local user who vouches for a join of a
        member of one of the allowed rooms (None: the room is not restricted
        for this user, who is invited, already joined, or the rule is other)."""
        if not version.restricted_join_rule:
            return None
        keys = [("m.room.join_rules", ""), ("m.room.member", user_id),
                ("m.room.power_levels", ""), ("m.room.create", "")]
        loaded = await self.store.get_events([state[k] for k in keys if k in state])
        auth = {k: loaded[state[k]].event for k in keys if k in state and state[k] in loaded}
        rules = auth.get(("m.room.join_rules", ""))
        rule = rules.content.get("join_rule") if rules is not None else None
        restricted = {"restricted"} | ({"knock_restricted"} if version.knock_restricted
                                       else set())
        if rule not in restricted:
            return None
        member = auth.get(("m.room.member", user_id))
        if member is not None and member.membership in ("join", "invite"):
            return None
        assert rules is not None
        allow = rules.content.get("allow")
        allowed_rooms: list[str] = [
            a["room_id"] for a in (allow if isinstance(allow, list) else [])
            if isinstance(a, dict) and a.get("type") == "m.room_membership"
            and isinstance(a.get("room_id"), str)]
        satisfied = False
        for allowed in allowed_rooms:
            if not await self.is_host_in_room(allowed):
                continue
            membership = await self.hs.stores.memberships.get_membership(allowed, user_id)
            if membership is not None and membership.membership == "join":
                satisfied = True
                break
        if not satisfied:
            if rule == "knock_restricted":
                return None  # the auth rules then refuse the join: knock instead
            if not any([await self.is_host_in_room(r) for r in allowed_rooms]):
                raise MatrixError(400, "M_UNABLE_TO_AUTHORISE_JOIN",
                                  "This server cannot tell whether you may join")
            raise forbidden("You are not a member of any room this room allows")
        invite_level = get_named_level("invite", auth)
        for member_row in await self.hs.stores.memberships.get_members(room_id, ("join",)):
            if self.hs.is_mine(member_row.user_id) and \
                    get_user_power_level(member_row.user_id, auth) >= invite_level:
                return member_row.user_id
        raise MatrixError(400, "M_UNABLE_TO_GRANT_JOIN",
                          "No user of this server may let you in; try another server")

    # -- resident side: send_* ------------------------------------------------

    async def send_membership(self, origin: str, room_id: str, event_id: str, pdu: Any,
                              membership: str) -> tuple[Event, StateMap]:
        """Check and persist a remote user's signed join/leave/knock; returns
        the event as persisted and the room state before it."""
        version = await self._room_version(room_id)
        await self._check_acl(room_id, origin)
        content = pdu.get("content") if isinstance(pdu, dict) else None
        via = content.get("join_authorised_via_users_server") \
            if isinstance(content, dict) else None
        if membership == "join" and isinstance(via, str) and self.hs.is_mine(via):
            # We vouch for this join (our make_join named our user): the
            # signature rules want ours on it too, so it goes on first.
            pdu = self._countersign_pdu(pdu, version)
        event = await self._check_pdu(origin, pdu, version)
        try:
            check_membership_event(event, origin=origin, room_id=room_id, event_id=event_id,
                                   membership=membership)
        except TemplateError as e:
            raise _refusal(e) from None
        if self.hs.roles.is_writer("events", room_id):
            position, state = await self.persist_in_room_here(event)
            await self.hs.streams.view.wait_for("events", self.hs.config.instance_name,
                                                position)
        else:
            answer = await self.hs.replication.call(PersistMembership, {
                "room_id": room_id, "room_version": version.identifier,
                "event": event.get_pdu_json(), "event_id": event.event_id})
            state = _state_from_wire(answer["state"])
        await self._forward(event, state, exclude={origin})
        return event, state

    async def persist_in_room_here(self, event: Event) -> tuple[int, StateMap]:
        """The persister's part of :meth:`send_membership`, under the room lock."""
        creation = self.hs.event_creation
        creation.check_writers_agree()
        async with creation.locks.hold(event.room_id):
            existing = await self.store.get_event(event.event_id)
            prev = event.prev_event_ids
            known = await self.store.get_events(prev)
            if len(known) != len(set(prev)):
                raise MatrixError(400, "M_BAD_JSON",
                                  "The event's prev_events are unknown here: use a template"
                                  " of this server")
            state, group = await self.hs.persister.state_before(event.room_id, prev,
                                                                event.room_version)
            if existing is not None:
                return existing.stream_ordering, state
            await creation.check_auth(event, state)
            sent = await self.hs.persister.persist(event, state, group)
            return sent.stream_ordering, state

    async def _forward(self, event: Event, state: StateMap, exclude: Iterable[str]) -> None:
        """Pass a remote user's membership event on to the room's other servers
        (the sender only sends it to us)."""
        sender = getattr(self.hs, "federation_sender", None)
        if sender is None:
            return
        members = await self.hs.stores.memberships.get_members(event.room_id, ("join",))
        servers = {server_of(m.user_id) for m in members}
        servers -= {self.hs.server_name, *exclude}
        if servers:
            try:
                await sender.send_pdu_to(sorted(servers), event.event_id)
            except Exception:  # never fail the remote's request for our queue
                logger.exception("could not queue %s for the room's servers", event.event_id)

    async def join_response(self, event: Event, state: StateMap, *,
                            include_event: bool) -> dict[str, Any]:
        """The room's state before the join and its auth chain, in full (we do
        not offer partial state, whatever ``omit_members`` asks)."""
        state_events = await self.store.get_events(state.values())
        chain = await self._auth_chain([*state.values(), *event.auth_event_ids])
        answer: dict[str, Any] = {
            "origin": self.hs.server_name,
            "state": [s.event.get_pdu_json() for s in state_events.values()],
            "auth_chain": [e.get_pdu_json() for e in chain],
            "members_omitted": False,
            "servers_in_room": servers_in_room(
                state_map([s.event for s in state_events.values()])),
        }
        if include_event:
            answer["event"] = event.get_pdu_json()
        return answer

    async def _auth_chain(self, event_ids: Iterable[str]) -> list[Event]:
        seen: dict[str, Event] = {}
        pending = set(event_ids)
        while pending:
            loaded = await self.store.get_events(pending)
            pending = set()
            for event_id, stored in loaded.items():
                if event_id in seen:
                    continue
                seen[event_id] = stored.event
                pending.update(a for a in stored.event.auth_event_ids if a not in seen)
        return sorted(seen.values(), key=lambda e: e.depth)

    async def knock_room_state(self, room_id: str) -> list[dict[str, Any]]:
        return await self.stripped_state(room_id)

    # -- invites of our users ---------------------------------------------------

    async def on_invite(self, origin: str, room_id: str, event_id: str, pdu: Any,
                        room_version_id: str, invite_room_state: Any) -> dict[str, Any]:
        """Counter-sign an invite of one of our users and keep it for their /sync."""
        version = KNOWN_ROOM_VERSIONS.get(room_version_id)
        if version is None:
            raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION",
                              f"This server does not support room version {room_version_id}",
                              room_version=room_version_id)
        # A room we are in: its server ACL first, before saying anything of
        # the invitee (a banned server learns nothing, not even 404).
        in_room = await self.is_host_in_room(room_id)
        if in_room:
            await self._check_acl(room_id, origin)
        event = await self._check_pdu(origin, pdu, version)
        try:
            check_invite_event(event, origin=origin, room_id=room_id, event_id=event_id,
                               is_mine=self.hs.is_mine)
        except TemplateError as e:
            raise _refusal(e) from None
        if event.content != pdu.get("content"):
            raise forbidden("The invite's content does not match its hash")
        assert event.state_key is not None
        # An invite of a user we do not have is counter-signed all the same
        # (the spec has no 404 here, and Synapse accepts it): refusing would
        # tell any server which of our user names exist.
        await self.hs.admin_rooms.check_not_blocked(room_id)
        signed = self._countersign(event)
        if not in_room:
            # We hold nothing of the room: the invite itself, with the state the
            # inviter sent, is what the invitee's /sync shows.
            kept = signed.get_pdu_json()
            unsigned = dict(kept.get("unsigned") or {})
            if isinstance(invite_room_state, list):
                unsigned["invite_room_state"] = [s for s in invite_room_state
                                                 if isinstance(s, dict)]
            kept["unsigned"] = unsigned
            await self.store_out_of_room(Event(kept, version, event_id=event.event_id))
        # (In a room we are in, the invite arrives with the room's events too.)
        return {"event": signed.get_pdu_json()}

    async def store_out_of_room(self, event: Event) -> int:
        """Keep a membership event of a room we are not in, on its persister."""
        if self.hs.roles.is_writer("events", event.room_id):
            position = await self.store_out_of_room_here(event)
            await self.hs.streams.view.wait_for("events", self.hs.config.instance_name,
                                                position)
            return position
        answer = await self.hs.replication.call(StoreOutOfRoomMembership, {
            "room_id": event.room_id, "room_version": event.room_version.identifier,
            "event": event.get_pdu_json(), "event_id": event.event_id})
        return int(answer)

    async def store_out_of_room_here(self, event: Event) -> int:
        creation = self.hs.event_creation
        creation.check_writers_agree()
        async with creation.locks.hold(event.room_id):
            existing = await self.store.get_event(event.event_id)
            if existing is not None:
                return existing.stream_ordering
            async with self.hs.streams.events_id_gen.transaction() as ptxn:
                creators = self._servers_of_stripped(event, senders=True)
                position = await self.hs.stores.remote_memberships.store_out_of_room_membership(
                    ptxn, event, creator=creators[0] if creators else None,
                    instance_name=self.hs.config.instance_name)
            return position

    # -- joining side -----------------------------------------------------------

    def candidate_servers(self, room_id: str, servers: Iterable[str],
                          extra: Iterable[str] = ()) -> list[str]:
        """Who to ask, in order: the client's servers, then the ones we know of
        (the inviter, the room id's server); never ourselves."""
        out: list[str] = []
        domain = room_id.partition(":")[2]
        for server in [*servers, *extra, domain]:
            if server and server != self.hs.server_name and server not in out:
                out.append(server)
        return out

    async def known_servers(self, room_id: str, user_id: str) -> list[str]:
        """Servers of the user's invite or knock, and the room's other members."""
        out: list[str] = []
        membership = await self.hs.stores.memberships.get_membership(room_id, user_id)
        if membership is not None and membership.membership in ("invite", "knock"):
            stored = await self.store.get_event(membership.event_id)
            if stored is not None:
                out.append(server_of(stored.event.sender))
                out.extend(self._servers_of_stripped(stored.event))
        for member in await self.hs.stores.memberships.get_members(room_id, ("join",)):
            out.append(server_of(member.user_id))
        return out

    @staticmethod
    def _servers_of_stripped(event: Event, senders: bool = False) -> list[str]:
        """The server (or with ``senders``, the user) who created the room, as
        the stripped state kept with an invite or knock says."""
        out = []
        for key in ("invite_room_state", "knock_room_state"):
            carried = event.unsigned.get(key)
            for s in carried if isinstance(carried, list) else []:
                if isinstance(s, dict) and s.get("type") == "m.room.create" \
                        and isinstance(s.get("sender"), str):
                    out.append(s["sender"] if senders else server_of(s["sender"]))
        return out

    async def _make(self, servers: Sequence[str], room_id: str, user_id: str,
                    membership: str) -> tuple[str, RoomVersion, dict[str, Any]]:
        """Ask each server in turn for a template; the first usable one wins."""
        from myelin.federation.client import FederationError, FederationUnreachable

        if not servers:
            raise not_found("No known servers to reach the room through")
        path = f"{FED_V1}/make_{membership}/{_path(room_id, user_id)}"
        args: dict[str, str | list[str]] | None = None
        if membership in ("join", "knock"):
            args = {"ver": list(KNOWN_ROOM_VERSIONS)}
        last: MatrixError = not_found("No server could let you in")
        for server in servers:
            try:
                answer = await self.hs.federation_client.get_json(server, path, args)
                version = KNOWN_ROOM_VERSIONS.get(str(answer.get("room_version", "1")))
                if version is None:
                    raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION",
                                      "The room's version is unknown to this server")
                template = answer.get("event")
                check_template(template, room_id, user_id, membership)
                return server, version, template
            except FederationError as e:
                logger.info("make_%s via %s failed: %s %s", membership, server, e.code,
                            e.errcode)
                last = _client_error(e, server)
                if e.errcode == "M_INCOMPATIBLE_ROOM_VERSION":
                    raise last from None
            except FederationUnreachable as e:
                logger.info("make_%s via %s: unreachable: %s", membership, server, e)
                last = MatrixError(502, "M_UNKNOWN", f"{server} is unreachable")
            except (TemplateError, AttributeError, InvalidEventError) as e:
                logger.info("make_%s via %s: bad template: %s", membership, server, e)
                last = MatrixError(502, "M_UNKNOWN", f"{server} sent a bad template: {e}")
            except MatrixError as e:
                last = e
        raise last

    async def _put_v2_or_v1(self, server: str, what: str, room_id: str, event: Event) -> Any:
        """send_join or send_leave: v2, or v1 for a server that has no v2
        (v1 wraps its answer in ``[200, answer]``)."""
        from myelin.federation.client import FederationError

        path = _path(room_id, event.event_id)
        try:
            return await self.hs.federation_client.put_json(
                server, f"{FED_V2}/{what}/{path}", event.get_pdu_json())
        except FederationError as e:
            if not _unknown_endpoint(e):
                raise
        answer = await self.hs.federation_client.put_json(
            server, f"{FED_V1}/{what}/{path}", event.get_pdu_json())
        if isinstance(answer, list) and len(answer) == 2:
            answer = answer[1]
        return answer

    def _sign(self, version: RoomVersion, pdu: dict[str, Any]) -> Event:
        signed = sign_event(pdu, self.hs.server_name, self._signing_key, version)
        return Event(signed, version)

    async def remote_join(self, user_id: str, room_id: str, servers: list[str],
                          content: dict[str, Any]) -> str:
        """Join a room through one of ``servers``; returns our join's event id."""
        from myelin.federation.client import FederationError, FederationUnreachable

        known = await self.known_servers(room_id, user_id)
        candidates = self.candidate_servers(room_id, servers, known)
        tried: list[str] = []
        last: MatrixError = not_found("No known servers to reach the room through")
        while len(tried) < len(candidates):
            remaining = [s for s in candidates if s not in tried]
            server, version, template = await self._make(remaining, room_id, user_id, "join")
            tried.extend(remaining[:remaining.index(server) + 1])
            event = self._sign(version, event_from_template(
                template, version, self.hs.server_name, content, int(time.time() * 1000)))
            try:
                answer = await self._put_v2_or_v1(server, "send_join", room_id, event)
                return await self._finish_join(server, version, event, answer)
            except FederationError as e:
                last = _client_error(e, server)
                if e.code == 403:
                    raise last from None
            except FederationUnreachable:
                last = MatrixError(502, "M_UNKNOWN", f"{server} is unreachable")
            except _BadJoinAnswer as e:
                logger.warning("send_join via %s: %s", server, e)
                last = MatrixError(502, "M_UNKNOWN", f"{server} sent a bad join answer: {e}")
        raise last

    async def _finish_join(self, server: str, version: RoomVersion, event: Event,
                           answer: Any) -> str:
        if not isinstance(answer, dict):
            raise _BadJoinAnswer("the answer is not an object")
        returned = answer.get("event")
        if isinstance(returned, dict):
            # A restricted join, signed by the resident who vouched for it.
            try:
                signed = Event(returned, version)
            except InvalidEventError as e:
                raise _BadJoinAnswer(f"bad event: {e}") from None
            if signed.event_id == event.event_id:
                event = Event(returned, version, event_id=event.event_id)
        room_id = event.room_id
        state_raw = parse_events(answer.get("state"), version, room_id)
        chain_raw = parse_events(answer.get("auth_chain"), version, room_id)
        unique = list({e.event_id: e for e in [*state_raw, *chain_raw]}.values())
        checked: dict[str, Event] = {}
        # Signature checks of a big room's state are many: a few at a time.
        for start in range(0, len(unique), CHECK_BATCH):
            batch = unique[start:start + CHECK_BATCH]
            results = await asyncio.gather(
                *(self.hs.federation_events.check_pdu(server, e.get_pdu_json(), version)
                  for e in batch), return_exceptions=True)
            for candidate, result in zip(batch, results, strict=True):
                if isinstance(result, Event):
                    checked[candidate.event_id] = result
                elif isinstance(result, MatrixError):
                    logger.info("join via %s: dropping %s: %s", server, candidate.event_id,
                                result)
                elif isinstance(result, BaseException):
                    raise result
        passing = authorised_events(checked.values())
        state = [passing[e.event_id] for e in state_raw if e.event_id in passing]
        by_key = state_map(state)
        create = by_key.get(("m.room.create", ""))
        if create is None:
            raise _BadJoinAnswer("no valid create event in the room state")
        create_version = create.content.get("room_version", "1")
        if create_version != version.identifier:
            raise _BadJoinAnswer("the create event's room version differs")
        # Our join must pass against the state it is joined to.
        from myelin.events.auth import AuthError, check_auth
        try:
            check_auth(event, by_key)
        except AuthError as e:
            raise _BadJoinAnswer(f"our join does not pass the room's auth rules: {e}") from None
        chain = [passing[e.event_id] for e in chain_raw if e.event_id in passing]
        events = self.hs.federation_events
        await events.persist_outliers(version, chain)
        await events.persist_with_state(event, state)
        return event.event_id

    async def remote_leave(self, user_id: str, room_id: str, servers: list[str],
                           content: dict[str, Any]) -> str:
        """Reject an invite or rescind a knock of a room we are not in. When
        no server takes our leave we keep a leave of our own all the same, so
        the user is rid of the invite."""
        from myelin.federation.client import FederationError, FederationUnreachable

        known = await self.known_servers(room_id, user_id)
        candidates = self.candidate_servers(room_id, servers, known)
        event: Event | None = None
        try:
            server, version, template = await self._make(candidates, room_id, user_id,
                                                         "leave")
            event = self._sign(version, event_from_template(
                template, version, self.hs.server_name, content, int(time.time() * 1000)))
            await self._put_v2_or_v1(server, "send_leave", room_id, event)
        except (MatrixError, FederationError, FederationUnreachable) as e:
            logger.info("remote leave of %s failed (%s): leaving locally", room_id, e)
            event = await self._local_leave(user_id, room_id, content)
        await self.store_out_of_room(event)
        return event.event_id

    async def _local_leave(self, user_id: str, room_id: str, content: dict[str, Any]) -> Event:
        """A leave that follows our copy of the invite or knock, signed by us:
        the room never sees it, but our user is out."""
        membership = await self.hs.stores.memberships.get_membership(room_id, user_id)
        if membership is None:
            raise forbidden(f"{user_id} is not in the room")
        stored = await self.store.get_event(membership.event_id)
        if stored is None:
            raise forbidden(f"{user_id} is not in the room")
        previous = stored.event
        version = previous.room_version
        fields: dict[str, Any] = {
            "room_id": room_id, "sender": user_id, "type": "m.room.member",
            "state_key": user_id, "content": {**content, "membership": "leave"},
            "prev_events": [previous.event_id], "auth_events": [previous.event_id],
            "depth": previous.depth + 1, "origin_server_ts": int(time.time() * 1000),
        }
        if not version.implicit_room_creator:
            fields["origin"] = self.hs.server_name
        if version.event_format == EventFormat.V1:
            sha = previous.hashes.get("sha256")
            ref = {"sha256": sha} if isinstance(sha, str) else {}
            fields["prev_events"] = [[previous.event_id, ref]]
            fields["auth_events"] = [[previous.event_id, ref]]
            fields["event_id"] = f"${secrets.token_urlsafe(18)}:{self.hs.server_name}"
        return self._sign(version, fields)

    async def remote_knock(self, user_id: str, room_id: str, servers: list[str],
                           content: dict[str, Any]) -> str:
        """Knock on a room we are not in; our knock is kept with the room's
        stripped state for /sync's ``knock`` section."""
        from myelin.federation.client import FederationError, FederationUnreachable

        candidates = self.candidate_servers(room_id, servers)
        server, version, template = await self._make(candidates, room_id, user_id, "knock")
        event = self._sign(version, event_from_template(
            template, version, self.hs.server_name, content, int(time.time() * 1000)))
        path = f"{FED_V1}/send_knock/{_path(room_id, event.event_id)}"
        try:
            answer = await self.hs.federation_client.put_json(server, path,
                                                              event.get_pdu_json())
        except FederationError as e:
            raise _client_error(e, server) from None
        except FederationUnreachable:
            raise MatrixError(502, "M_UNKNOWN", f"{server} is unreachable") from None
        stripped = answer.get("knock_room_state") if isinstance(answer, dict) else None
        kept = event.get_pdu_json()
        kept["unsigned"] = {"knock_room_state": [s for s in stripped or []
                                                 if isinstance(s, dict)]}
        await self.store_out_of_room(Event(kept, version, event_id=event.event_id))
        return event.event_id

    async def remote_invite(self, event: Event, invitee: str) -> Event:
        """Have the invitee's server counter-sign our invite (v2, else v1)."""
        from myelin.federation.client import FederationError, FederationUnreachable

        server = server_of(invitee)
        version = event.room_version
        stripped = await self.stripped_state(event.room_id, event.sender)
        path = _path(event.room_id, event.event_id)
        try:
            try:
                answer = await self.hs.federation_client.put_json(
                    server, f"{FED_V2}/invite/{path}",
                    {"room_version": version.identifier, "event": event.get_pdu_json(),
                     "invite_room_state": stripped})
            except FederationError as e:
                # v1 invites serve room versions 1 and 2 only.
                if not _unknown_endpoint(e) or version.identifier not in ("1", "2"):
                    raise
                pdu = event.get_pdu_json()
                pdu.setdefault("unsigned", {})["invite_room_state"] = stripped
                answer = await self.hs.federation_client.put_json(
                    server, f"{FED_V1}/invite/{path}", pdu)
                if isinstance(answer, list) and len(answer) == 2:
                    answer = answer[1]
        except FederationError as e:
            raise _client_error(e, server) from None
        except FederationUnreachable:
            raise MatrixError(502, "M_UNKNOWN", f"{server} is unreachable") from None
        returned = answer.get("event") if isinstance(answer, dict) else None
        if not isinstance(returned, dict):
            raise MatrixError(502, "M_UNKNOWN", f"{server} did not return the invite")
        # Its form, our signature and its hashes, as for any PDU (M_BAD_JSON
        # for JSON the room version does not allow).
        checked = await self.hs.federation_events.check_pdu(server, returned, version)
        if checked.event_id != event.event_id or checked.content != event.content \
                or checked.state_key != invitee:
            raise MatrixError(502, "M_UNKNOWN", f"{server} changed the invite")
        signed = Event(returned, version, event_id=event.event_id)
        if server not in signed.signatures:
            raise MatrixError(502, "M_UNKNOWN", f"{server} did not sign the invite")
        pruned = prune_event_dict(signed.get_pdu_json(), version)
        pruned.pop("unsigned", None)
        try:
            await self.hs.keyring.verify_json(server, pruned,
                                              valid_at_ts=int(time.time() * 1000))
        except Exception as e:
            raise MatrixError(502, "M_UNKNOWN",
                              f"{server}'s signature on the invite is bad: {e}") from None
        # Keep our own unsigned (none) and the counter-signed signatures.
        pdu = event.get_pdu_json()
        pdu["signatures"] = signed.signatures
        return Event(pdu, version, event_id=event.event_id)

    async def sent_event(self, event_id: str) -> SentEvent:
        stored = await self.store.get_event(event_id)
        if stored is None:
            raise MatrixError(500, "M_UNKNOWN", "The membership event was not stored")
        return SentEvent(stored.event, stored.stream_ordering, {})

    # -- third-party invites ----------------------------------------------------

    async def exchange_third_party_invite(self, origin: str, room_id: str,
                                          body: dict[str, Any]) -> None:
        """An identity server's signed 3PID binding, relayed by the invitee's
        server: we send the invite (from the original inviter, a user of ours)."""
        await self._room_version(room_id)
        await self._check_acl(room_id, origin)
        if body.get("type") != "m.room.member" or body.get("room_id") != room_id:
            raise MatrixError(400, "M_BAD_JSON", "Expected an m.room.member event of this room")
        sender, target, content = body.get("sender"), body.get("state_key"), body.get("content")
        if not isinstance(sender, str) or not isinstance(target, str) \
                or not isinstance(content, dict):
            raise MatrixError(400, "M_BAD_JSON", "sender, state_key and content are required")
        tpi = content.get("third_party_invite")
        signed = tpi.get("signed") if isinstance(tpi, dict) else None
        if not isinstance(signed, dict) or signed.get("mxid") != target \
                or not isinstance(signed.get("token"), str):
            raise MatrixError(400, "M_BAD_JSON", "third_party_invite.signed is incomplete")
        if server_of(target) != origin:
            raise forbidden("The invitee is not a user of the requesting server")
        pending = await self.hs.stores.state.get_current_state_event(
            room_id, "m.room.third_party_invite", signed["token"])
        if pending is None:
            raise forbidden("No pending third-party invite has that token")
        if not self.hs.is_mine(pending.sender) or pending.sender != sender:
            raise forbidden("The third-party invite was not sent by that user of this server")
        checked = await self.hs.third_party_invites.checked_invite_content(room_id, signed)
        await self.hs.event_creation.send(
            sender, room_id, "m.room.member", {**content, **checked}, state_key=target)


class _BadJoinAnswer(Exception):
    """A send_join answer we cannot join with (try another server)."""


def _refusal(error: TemplateError) -> MatrixError:
    if error.forbidden:
        return forbidden(str(error))
    return MatrixError(400, "M_BAD_JSON", str(error))


def _unknown_endpoint(error: Any) -> bool:
    """The remote does not serve that path (an older server)."""
    code = getattr(error, "code", 0)
    return code in (404, 405) or (code == 400 and
                                  getattr(error, "errcode", None) == "M_UNRECOGNIZED")


def _client_error(error: Any, server: str) -> MatrixError:
    """A remote's refusal as our client sees it: its 4xx and errcode (with
    the room version of an M_INCOMPATIBLE_ROOM_VERSION), else 502."""
    code = int(getattr(error, "code", 502))
    body = getattr(error, "body", None)
    extra: dict[str, Any] = {}
    if isinstance(body, dict) and isinstance(body.get("room_version"), str):
        extra["room_version"] = body["room_version"]
    return MatrixError(code if 400 <= code < 500 else 502,
                       getattr(error, "errcode", None) or "M_UNKNOWN",
                       _remote_message(error, server), **extra)


def _remote_message(error: Any, server: str) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return f"{server}: {body['error']}"
    return f"{server} refused: {getattr(error, 'code', '?')}"
