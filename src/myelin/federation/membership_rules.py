"""Pure rules of the membership handshakes (make_*/send_*, invite): no I/O.

What a joining server checks in a resident server's template before signing
it, how it builds its event from the template, how a resident checks the
signed event it gets back, and which events of a send_join answer pass the
auth rules (each against its own auth events, from the answer itself).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from myelin.domain import server_of
from myelin.events.auth import AuthError, check_auth
from myelin.events.event import Event, InvalidEventError
from myelin.events.room_versions import EventFormat, RoomVersion

# The template keys a joining server must not keep: it signs the event itself.
_DROPPED_TEMPLATE_KEYS = ("signatures", "hashes", "unsigned", "event_id")


class TemplateError(ValueError):
    """A make_join/make_leave/make_knock template we will not sign, or a
    membership event we will not take. ``forbidden``: the requesting server
    speaks for a user that is not its own (403 rather than 400)."""

    def __init__(self, message: str, *, forbidden: bool = False) -> None:
        super().__init__(message)
        self.forbidden = forbidden


def check_template(template: Any, room_id: str, user_id: str, membership: str) -> None:
    """The resident's template is a membership event for exactly this user,
    room and membership, with the fields a PDU needs; otherwise
    :class:`TemplateError` (the joining server tries another resident)."""
    if not isinstance(template, dict):
        raise TemplateError("the template is not an object")
    if template.get("type") != "m.room.member":
        raise TemplateError("the template is not an m.room.member event")
    if template.get("room_id") != room_id:
        raise TemplateError("the template is for another room")
    if template.get("sender") != user_id or template.get("state_key") != user_id:
        raise TemplateError("the template is for another user")
    content = template.get("content")
    if not isinstance(content, dict) or content.get("membership") != membership:
        raise TemplateError(f"the template's membership is not {membership}")
    for key in ("prev_events", "auth_events"):
        if not isinstance(template.get(key), list):
            raise TemplateError(f"the template has no {key} list")
    depth = template.get("depth")
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise TemplateError("the template has no integer depth")


def event_from_template(template: dict[str, Any], room_version: RoomVersion, origin: str,
                        content: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    """Our unsigned event from a checked template: our content on top of the
    template's (its membership and ``join_authorised_via_users_server`` win),
    our origin and timestamp, and in room versions 1-2 an event id of ours."""
    pdu = {k: v for k, v in template.items() if k not in _DROPPED_TEMPLATE_KEYS}
    merged = dict(content)
    merged.update(template["content"])
    pdu["content"] = merged
    pdu["origin_server_ts"] = now_ms
    if "origin" in template or not room_version.implicit_room_creator:
        pdu["origin"] = origin
    if room_version.event_format == EventFormat.V1:
        pdu["event_id"] = f"${secrets.token_urlsafe(18)}:{origin}"
    return pdu


def check_membership_event(event: Event, *, origin: str, room_id: str, event_id: str,
                           membership: str) -> None:
    """A send_join/send_leave/send_knock body is the event the path names, a
    membership of its own sender (a user of the sending server) in this room.
    Raises :class:`TemplateError` with what is wrong."""
    if event.event_id != event_id:
        raise TemplateError("the event id does not match the path")
    if event.room_id != room_id:
        raise TemplateError("the event is for another room")
    if event.type != "m.room.member":
        raise TemplateError("the event is not an m.room.member event")
    if event.membership != membership:
        raise TemplateError(f"the event's membership is not {membership}")
    if event.state_key != event.sender:
        raise TemplateError("the event's state_key is not its sender")
    if server_of(event.sender) != origin:
        raise TemplateError("the event's sender is not a user of the requesting server",
                            forbidden=True)


def check_invite_event(event: Event, *, origin: str, room_id: str, event_id: str,
                       is_mine: Any) -> None:
    """An incoming invite: the event the path names, an invite of one of our
    users sent by a user of the requesting server."""
    if event.event_id != event_id:
        raise TemplateError("the event id does not match the path")
    if event.room_id != room_id:
        raise TemplateError("the event is for another room")
    if event.type != "m.room.member" or event.membership != "invite":
        raise TemplateError("the event is not an invite")
    if event.state_key is None or not is_mine(event.state_key):
        raise TemplateError("the invitee is not a user of this server", forbidden=True)
    if server_of(event.sender) != origin:
        raise TemplateError("the inviter is not a user of the requesting server",
                            forbidden=True)


def parse_events(raw: Any, room_version: RoomVersion, room_id: str) -> list[Event]:
    """PDUs of a send_join answer: the well-formed ones of this room."""
    out: list[Event] = []
    if not isinstance(raw, list):
        return out
    for pdu in raw:
        try:
            event = Event(pdu, room_version)
        except (InvalidEventError, TypeError, ValueError, KeyError):
            continue
        if event.room_id == room_id:
            out.append(event)
    return out


def authorised_events(events: Iterable[Event]) -> dict[str, Event]:
    """The events (state and auth chain of a join) that pass the auth rules
    against their own auth events, which must themselves be among them and
    pass: an event resting on a missing or failing one is left out."""
    by_id = {e.event_id: e for e in events}
    verdict: dict[str, bool] = {}

    def passes(event_id: str, path: frozenset[str]) -> bool:
        known = verdict.get(event_id)
        if known is not None:
            return known
        event = by_id.get(event_id)
        if event is None or event_id in path:
            return False
        inner = path | {event_id}
        auth: dict[tuple[str, str], Event] = {}
        ok = True
        for auth_id in event.auth_event_ids:
            auth_event = by_id.get(auth_id)
            if auth_event is None or auth_event.state_key is None \
                    or not passes(auth_id, inner):
                ok = False
                break
            auth[(auth_event.type, auth_event.state_key)] = auth_event
        if ok and event.room_version.room_id_is_create_event_hash \
                and event.type != "m.room.create":
            # v12: the create event is implied by the room id.
            create = by_id.get("$" + event.room_id[1:])
            if create is None or not passes(create.event_id, inner):
                ok = False
            else:
                auth[("m.room.create", "")] = create
        if ok:
            try:
                check_auth(event, auth)
            except AuthError:
                ok = False
        verdict[event_id] = ok
        return ok

    # Walk from the shallowest events so the recursion stays shallow.
    for event in sorted(by_id.values(), key=lambda e: e.depth):
        passes(event.event_id, frozenset())
    return {eid: by_id[eid] for eid, ok in verdict.items() if ok}


def state_map(events: Sequence[Event]) -> dict[tuple[str, str], Event]:
    return {(e.type, e.state_key): e for e in events if e.state_key is not None}


def servers_in_room(state: Mapping[tuple[str, str], Event]) -> list[str]:
    """The servers with a joined member in this state, sorted."""
    return sorted({server_of(e.state_key) for (etype, _), e in state.items()
                   if etype == "m.room.member" and e.membership == "join"
                   and e.state_key is not None})
