"""Small room builder shared by the myelin.events tests.

It creates events the way a homeserver would (auth events picked by the
auth events selection algorithm, prev_events pointing at the last event) so
that tests can focus on a single rule.
"""

from __future__ import annotations

import itertools
from typing import Any

from myelin.events.auth import StateKey, auth_types_for_event, check_auth
from myelin.events.event import Event
from myelin.events.hashing import add_content_hash
from myelin.events.room_versions import EventFormat, RoomVersion

ALICE = "@alice:a.test"  # room creator
BOB = "@bob:b.test"
CAROL = "@carol:c.test"
DAVE = "@dave:d.test"


class Room:
    """An in-memory room: all events plus the current state."""

    def __init__(
        self,
        rv: RoomVersion,
        creator: str = ALICE,
        join_rule: str = "invite",
        users: dict[str, int] | None = None,
        create_content: dict[str, Any] | None = None,
        power_levels: dict[str, Any] | None = None,
    ) -> None:
        self.rv = rv
        self.creator = creator
        self.events: dict[str, Event] = {}
        self.state: dict[StateKey, Event] = {}
        self.last: list[str] = []
        self._ts = itertools.count(1000)
        self._ids = itertools.count(1)
        self.room_id = "!room:" + creator.split(":", 1)[1]

        content: dict[str, Any] = {"room_version": rv.identifier}
        if not rv.implicit_room_creator:
            content["creator"] = creator
        content.update(create_content or {})
        self.create = self.send("m.room.create", creator, content, state_key="")
        self.room_id = self.create.room_id
        self.send("m.room.member", creator, {"membership": "join"}, state_key=creator)
        pl_users = dict(users or {})
        if not rv.creators_infinite_power:
            pl_users.setdefault(creator, 100)
        pl = {"users": pl_users, "users_default": 0}
        pl.update(power_levels or {})
        self.send("m.room.power_levels", creator, pl, state_key="")
        self.send("m.room.join_rules", creator, {"join_rule": join_rule}, state_key="")

    # -- building ------------------------------------------------------

    def make(
        self,
        type: str,
        sender: str,
        content: dict[str, Any],
        state_key: str | None = None,
        *,
        prev: list[str] | None = None,
        auth: list[str] | None = None,
        state: dict[StateKey, Event] | None = None,
        ts: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Event:
        """Build (but do not auth-check or apply) an event."""
        state = self.state if state is None else state
        if auth is None:
            keys = auth_types_for_event(type, state_key, sender, content, self.rv)
            auth = [state[k].event_id for k in keys if k in state]
        prev = self.last if prev is None else prev
        pdu: dict[str, Any] = {
            "type": type,
            "sender": sender,
            "content": content,
            "origin_server_ts": next(self._ts) if ts is None else ts,
            "depth": len(self.events) + 1,
            "hashes": {},
            "signatures": {},
        }
        if not (self.rv.room_id_is_create_event_hash and type == "m.room.create"):
            pdu["room_id"] = self.room_id
        if self.rv.event_format == EventFormat.V1:
            pdu["event_id"] = f"${next(self._ids)}:{sender.split(':', 1)[1]}"
            pdu["prev_events"] = [[e, {}] for e in prev]
            pdu["auth_events"] = [[e, {}] for e in auth]
        else:
            pdu["prev_events"] = list(prev)
            pdu["auth_events"] = list(auth)
        if state_key is not None:
            pdu["state_key"] = state_key
        pdu.update(extra or {})
        pdu = add_content_hash(pdu, self.rv)
        ev = Event(pdu, self.rv)
        self.events[ev.event_id] = ev
        return ev

    def auth_map(
        self, ev: Event, state: dict[StateKey, Event] | None = None
    ) -> dict[StateKey, Event]:
        """The state relevant to authorising ``ev`` (create always included)."""
        state = self.state if state is None else state
        keys = auth_types_for_event(ev.type, ev.state_key, ev.sender, ev.content, self.rv)
        out = {k: state[k] for k in keys if k in state}
        if ("m.room.create", "") in state:
            out[("m.room.create", "")] = state[("m.room.create", "")]
        return out

    def check(self, ev: Event) -> None:
        check_auth(ev, self.auth_map(ev))

    def apply(self, ev: Event) -> Event:
        if ev.state_key is not None:
            self.state[(ev.type, ev.state_key)] = ev
        self.last = [ev.event_id]
        return ev

    def send(
        self,
        type: str,
        sender: str,
        content: dict[str, Any],
        state_key: str | None = None,
        **kw: Any,
    ) -> Event:
        """Build, auth-check (raising on failure) and apply an event."""
        ev = self.make(type, sender, content, state_key, **kw)
        self.check(ev)
        return self.apply(ev)

    def join(self, user: str) -> Event:
        return self.send("m.room.member", user, {"membership": "join"}, state_key=user)

    def invite(self, sender: str, user: str) -> Event:
        return self.send("m.room.member", sender, {"membership": "invite"}, state_key=user)

    def member(self, user: str) -> Event:
        return self.state[("m.room.member", user)]
