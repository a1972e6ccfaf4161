"""What the federation scenarios do as users, on whichever server they live.

:class:`FedUser` is a logged-in user of any peer (a Myelin monolith, a fleet,
Synapse: anything with ``register`` and a plain ``base_url``) with the client
calls the scenarios need and a sync cursor of its own, so "wait until X shows
up" reads only what is new and "exactly once" can be checked over everything
the user has been sent.

:func:`sign_request` and :func:`signed_pdu` build what a (possibly lying)
remote server would send, for the tests that forge requests.
"""

from __future__ import annotations

import base64
import hashlib
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import yaml
from canonicaljson import encode_canonical_json
from signedjson.key import read_signing_keys
from signedjson.sign import sign_json

from tests.support.fleet import User, unique

# Federation crosses two servers, nginx and TLS, on a 2-core machine shared
# with other work: generous, but finite.
DEADLINE_S = 45.0
q = urllib.parse.quote


class FedUser(User):
    """A user of ``peer`` (any server under test); requests go to ``peer.base_url``."""

    def __init__(self, peer: Any, login: dict[str, Any]) -> None:
        super().__init__(peer, login, base=peer.base_url)
        self.peer = peer
        self.since: str | None = None
        self.seen: list[dict[str, Any]] = []

    @classmethod
    def make(cls, peer: Any, prefix: str = "user") -> FedUser:
        return cls(peer, peer.register(unique(prefix)))

    @property
    def server_name(self) -> str:
        return str(self.peer.server_name)

    # -- sync ------------------------------------------------------------------------
    def wait(self, done: Callable[[list[dict[str, Any]]], Any], what: str = "",
             deadline_s: float = DEADLINE_S) -> list[dict[str, Any]]:
        """Sync on from this user's cursor until ``done(new responses)`` holds;
        returns those responses (all of them are also kept in ``seen``)."""
        new: list[dict[str, Any]] = []
        end = time.monotonic() + deadline_s
        while True:
            out = self.sync(self.since, 1000 if self.since else 0)
            self.since = out["next_batch"]
            new.append(out)
            self.seen.append(out)
            if done(new):
                return new
            if time.monotonic() > end:
                raise AssertionError(f"{self.user_id}: {what or 'condition'} not seen after "
                                     f"{deadline_s}s of /sync; last response: {out}")

    def catch_up(self) -> None:
        """Move the cursor to now (what came before is in ``seen``)."""
        self.wait(lambda _: True)

    def wait_invite(self, room_id: str) -> dict[str, Any]:
        got = self.wait(lambda rs: any(room_id in r.get("rooms", {}).get("invite", {})
                                       for r in rs), f"the invite to {room_id}")
        return next(r["rooms"]["invite"][room_id] for r in got
                    if room_id in r.get("rooms", {}).get("invite", {}))

    def wait_timeline(self, room_id: str, match: Callable[[dict[str, Any]], bool],
                      what: str = "") -> dict[str, Any]:
        """The first new timeline event of ``room_id`` that ``match``es."""
        found: list[dict[str, Any]] = []

        def done(rs: list[dict[str, Any]]) -> bool:
            found[:] = [e for e in joined_timeline(rs[-1:], room_id) if match(e)] or found
            return bool(found)

        self.wait(done, what or f"an event in {room_id}")
        return found[0]

    def wait_bodies(self, room_id: str, expected: list[str]) -> None:
        """Until every body in ``expected`` has arrived (counting everything seen)."""
        self.wait(lambda _: set(expected) <= set(self.bodies(room_id)),
                  f"messages {expected} in {room_id}")

    def bodies(self, room_id: str) -> list[str]:
        """Every m.room.message body sync has sent this user for ``room_id``, in order."""
        return [e["content"].get("body") for e in joined_timeline(self.seen, room_id)
                if e.get("type") == "m.room.message"]

    def wait_ephemeral(self, room_id: str, kind: str,
                       match: Callable[[dict[str, Any]], bool], what: str = "") -> None:
        self.wait(lambda rs: any(match(e) for r in rs for e in
                                 r.get("rooms", {}).get("join", {}).get(room_id, {})
                                 .get("ephemeral", {}).get("events", [])
                                 if e.get("type") == kind), what or kind)

    def wait_membership(self, room_id: str, user_id: str, membership: str) -> None:
        """Until the server says ``user_id``'s membership in ``room_id`` is ``membership``."""
        end = time.monotonic() + DEADLINE_S
        while True:
            status, event = self.req("GET", f"/rooms/{q(room_id)}/state/m.room.member/"
                                     f"{q(user_id)}")
            if status == 200 and event.get("membership") == membership:
                return
            if time.monotonic() > end:
                raise AssertionError(f"{self.user_id} sees {user_id} in {room_id}: "
                                     f"{status} {event}, not {membership}")
            time.sleep(0.3)

    # -- rooms -----------------------------------------------------------------------
    def join_remote(self, room_id_or_alias: str, via: list[str]) -> str:
        query = "?" + "&".join(f"server_name={q(s)}" for s in via) if via else ""
        out = self.ok("POST", f"/join/{q(room_id_or_alias)}{query}", {}, timeout=120)
        return str(out["room_id"])

    def invite(self, room_id: str, user_id: str) -> None:
        self.ok("POST", f"/rooms/{q(room_id)}/invite", {"user_id": user_id}, timeout=120)

    def leave(self, room_id: str) -> None:
        self.ok("POST", f"/rooms/{q(room_id)}/leave", {}, timeout=120)

    def ban(self, room_id: str, user_id: str, reason: str = "test") -> None:
        self.ok("POST", f"/rooms/{q(room_id)}/ban", {"user_id": user_id, "reason": reason})

    def unban(self, room_id: str, user_id: str) -> None:
        self.ok("POST", f"/rooms/{q(room_id)}/unban", {"user_id": user_id})

    def put_state(self, room_id: str, kind: str, content: dict[str, Any],
                  state_key: str = "") -> str:
        out = self.ok("PUT", f"/rooms/{q(room_id)}/state/{kind}/{q(state_key)}", content)
        return str(out["event_id"])

    def get_state(self, room_id: str, kind: str, state_key: str = "") -> tuple[int, Any]:
        return self.req("GET", f"/rooms/{q(room_id)}/state/{kind}/{q(state_key)}")

    def members(self, room_id: str) -> dict[str, str]:
        out = self.ok("GET", f"/rooms/{q(room_id)}/members")
        return {e["state_key"]: e["content"]["membership"] for e in out["chunk"]}

    def event(self, room_id: str, event_id: str) -> tuple[int, Any]:
        return self.req("GET", f"/rooms/{q(room_id)}/event/{q(event_id)}")

    def typing(self, room_id: str, typing: bool = True) -> None:
        self.ok("PUT", f"/rooms/{q(room_id)}/typing/{q(self.user_id)}",
                {"typing": typing, "timeout": 30000} if typing else {"typing": False})

    def receipt(self, room_id: str, event_id: str) -> None:
        self.ok("POST", f"/rooms/{q(room_id)}/receipt/m.read/{q(event_id)}", {})

    def set_presence(self, presence: str, status_msg: str) -> None:
        self.ok("PUT", f"/presence/{q(self.user_id)}/status",
                {"presence": presence, "status_msg": status_msg})

    def set_displayname(self, name: str) -> None:
        self.ok("PUT", f"/profile/{q(self.user_id)}/displayname", {"displayname": name})


def joined_timeline(responses: list[dict[str, Any]], room_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for response in responses:
        room = response.get("rooms", {}).get("join", {}).get(room_id, {})
        out.extend(room.get("timeline", {}).get("events", []))
    return out


# -- what a remote server sends ---------------------------------------------------------

def signing_key(path: str) -> Any:
    with open(path) as f:
        return read_signing_keys(f)[0]


def sign_request(key: Any, origin: str, destination: str, method: str, uri: str,
                 content: Any = None) -> str:
    """The ``Authorization: X-Matrix ...`` header ``origin`` would send."""
    request: dict[str, Any] = {"method": method, "uri": uri, "origin": origin,
                               "destination": destination}
    if content is not None:
        request["content"] = content
    signed = sign_json(request, origin, key)
    key_id = f"{key.alg}:{key.version}"
    sig = signed["signatures"][origin][key_id]
    return (f'X-Matrix origin="{origin}",destination="{destination}",key="{key_id}",'
            f'sig="{sig}"')


# The keys a redacted event keeps (room versions 11 and later; the message
# events signed here have nothing else in them).
_REDACTED_KEEP = ("event_id", "type", "room_id", "sender", "state_key", "content", "hashes",
                  "signatures", "depth", "prev_events", "auth_events", "origin_server_ts")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def signed_pdu(event: dict[str, Any], server_name: str, key: Any) -> dict[str, Any]:
    """``event`` with its content hash and ``server_name``'s signature (over the
    redacted form), as the spec defines them for a message event."""
    pdu = {k: v for k, v in event.items() if k not in ("unsigned", "signatures", "hashes")}
    pdu["hashes"] = {"sha256": _b64(hashlib.sha256(encode_canonical_json(pdu)).digest())}
    redacted = {k: v for k, v in pdu.items() if k in _REDACTED_KEEP}
    redacted["content"] = {}
    signature = sign_json(redacted, server_name, key)["signatures"]
    pdu["signatures"] = signature
    return pdu


def event_id_of(pdu: dict[str, Any]) -> str:
    """The reference-hash event id (room versions 4 and later)."""
    redacted = {k: v for k, v in pdu.items() if k in _REDACTED_KEEP and k not in
                ("signatures", "unsigned")}
    redacted["content"] = {}
    digest = hashlib.sha256(encode_canonical_json(redacted)).digest()
    return "$" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def rows_mentioning(peer: Any, event_id: str) -> dict[str, int]:
    """``{table.column: rows}`` for every column of ``peer``'s database named
    like an event id that holds ``event_id`` (SQLite file or the fleet's
    PostgreSQL): "stored nowhere" checked where it is stored."""
    found: dict[str, int] = {}
    if hasattr(peer, "query"):  # a fleet
        columns = peer.query("SELECT table_name, column_name FROM information_schema.columns "
                             "WHERE table_schema = 'public' AND column_name LIKE '%event_id%'")
        for row in columns:
            table, column = row["table_name"], row["column_name"]
            count = peer.query(f'SELECT COUNT(*) AS n FROM "{table}" WHERE "{column}"::text = $1',
                               event_id)[0]["n"]
            if count:
                found[f"{table}.{column}"] = int(count)
        return found
    import sqlite3

    with open(peer.config_path) as f:
        path = yaml.safe_load(f)["database"]["args"]["database"]
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]:
                if "event_id" not in column:
                    continue
                (count,) = conn.execute(f'SELECT COUNT(*) FROM "{table}" WHERE "{column}" = ?',
                                        (event_id,)).fetchone()
                if count:
                    found[f"{table}.{column}"] = int(count)
    finally:
        conn.close()
    return found
