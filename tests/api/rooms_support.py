"""Helpers for room API tests over raw HTTP: users, rooms, and PDU verification.

Every event the server hands out through an :class:`Api` is remembered; at the
end of a test :meth:`Api.verify_all` reads the stored PDUs of those events
straight from the server's database (read-only) and checks each one
independently of Myelin: the content hash (canonical JSON + SHA-256), the
event id (the reference hash), and the server's ed25519 signature over the
redacted event (``signedjson``, with the key from ``/_matrix/key/v2/server``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import yaml
from canonicaljson import encode_canonical_json
from signedjson.key import decode_verify_key_bytes
from signedjson.sign import verify_signed_json
from unpaddedbase64 import decode_base64, encode_base64

from myelin.events.redaction import prune_event_dict
from myelin.events.room_versions import get_room_version
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"


def q(value: str) -> str:
    """Quote one path segment (room ids, aliases, event ids, user ids)."""
    return quote(value, safe="")


class Api:
    """A server plus the events it has returned to us, for verification."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.seen: dict[str, dict[str, Any]] = {}

    def request(self, method: str, path: str, body: Any = None, token: str | None = None,
                **kwargs: Any) -> tuple[int, Any]:
        status, data = self.server.request(method, path, body, token, **kwargs)
        if status == 200:
            self._collect(data)
        return status, data

    def _collect(self, obj: Any) -> None:
        if isinstance(obj, list):
            for item in obj:
                self._collect(item)
        elif isinstance(obj, dict):
            event_id = obj.get("event_id")
            if isinstance(event_id, str) and event_id.startswith("$"):
                if "type" in obj and "sender" in obj:
                    if "type" not in self.seen.get(event_id, {}):
                        self.seen[event_id] = obj
                else:  # just an id, e.g. from /send: check the stored PDU only
                    self.seen.setdefault(event_id, {})
            for value in obj.values():
                self._collect(value)

    def user(self, localpart: str, admin: bool = False) -> User:
        login = self.server.register(localpart, admin=admin)
        return User(self, login["user_id"], login["access_token"], login.get("device_id"))

    # -- verification ------------------------------------------------------
    def _database(self) -> dict[str, Any]:
        with open(self.server.config_path, encoding="utf-8") as f:
            return dict(yaml.safe_load(f)["database"])

    def load_pdus(self, event_ids: list[str]) -> dict[str, tuple[dict[str, Any], str, bool]]:
        """event id -> (stored PDU, room version, redacted?) read from the database."""
        database = self._database()
        if database["name"] == "sqlite3":
            conn = sqlite3.connect(f"file:{database['args']['database']}?mode=ro", uri=True)
            try:
                out = {}
                for event_id in event_ids:
                    row = conn.execute(
                        "SELECT e.json, r.room_version FROM events e JOIN rooms r"
                        " ON r.room_id = e.room_id WHERE e.event_id = ?", (event_id,)).fetchone()
                    if row is None:
                        continue
                    redacted = conn.execute("SELECT 1 FROM redactions WHERE redacts = ?",
                                            (event_id,)).fetchone() is not None
                    out[event_id] = (json.loads(row[0]), row[1], redacted)
                return out
            finally:
                conn.close()
        # In a thread of its own: callers may be inside a running event loop.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self._load_pdus_pg(database["args"],
                                                               event_ids)).result()

    def count_rooms(self) -> int:
        """How many rooms the server's database holds (read-only)."""
        database = self._database()
        if database["name"] == "sqlite3":
            conn = sqlite3.connect(f"file:{database['args']['database']}?mode=ro", uri=True)
            try:
                return int(conn.execute("SELECT COUNT(*) FROM rooms").fetchone()[0])
            finally:
                conn.close()

        async def count(args: dict[str, Any]) -> int:
            import asyncpg

            conn = await asyncpg.connect(user=args["user"], host=args["host"],
                                         port=args["port"], database=args["database"])
            try:
                return int(await conn.fetchval("SELECT COUNT(*) FROM rooms"))
            finally:
                await conn.close()

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, count(database["args"])).result()

    @staticmethod
    async def _load_pdus_pg(args: dict[str, Any], event_ids: list[str],
                            ) -> dict[str, tuple[dict[str, Any], str, bool]]:
        import asyncpg

        conn = await asyncpg.connect(user=args["user"], host=args["host"], port=args["port"],
                                     database=args["database"])
        try:
            rows = await conn.fetch(
                "SELECT e.event_id, e.json, r.room_version,"
                " EXISTS (SELECT 1 FROM redactions x WHERE x.redacts = e.event_id)"
                " FROM events e JOIN rooms r ON r.room_id = e.room_id"
                " WHERE e.event_id = ANY($1::text[])", event_ids)
            return {r[0]: (json.loads(r[1]), r[2], bool(r[3])) for r in rows}
        finally:
            await conn.close()

    def verify_key(self) -> Any:
        status, body = self.server.request("GET", "/_matrix/key/v2/server")
        assert status == 200, body
        [(key_id, entry)] = body["verify_keys"].items()
        return decode_verify_key_bytes(key_id, decode_base64(entry["key"]))

    def verify_all(self) -> int:
        """Check every event seen so far; returns how many were checked."""
        if not self.seen:
            return 0
        key = self.verify_key()
        pdus = self.load_pdus(list(self.seen))
        missing = set(self.seen) - set(pdus)
        assert not missing, f"events returned by the API but not stored: {missing}"
        for event_id, (pdu, version, redacted) in pdus.items():
            verify_pdu(event_id, pdu, version, key, self.server.server_name)
            client = self.seen[event_id]
            if "type" not in client:
                continue
            for field in ("type", "sender", "origin_server_ts", "state_key"):
                assert client.get(field) == pdu.get(field), (event_id, field)
            if not redacted:
                content = client["content"]
                if client["type"] == "m.room.redaction":
                    # Served with `redacts` both top-level and in content (room v11 rules).
                    target = pdu.get("redacts", pdu["content"].get("redacts"))
                    assert client["redacts"] == content["redacts"] == target, event_id
                    if "redacts" not in pdu["content"]:
                        content = {k: v for k, v in content.items() if k != "redacts"}
                assert content == pdu["content"], event_id
        return len(pdus)


def verify_pdu(event_id: str, pdu: dict[str, Any], version: str, verify_key: Any,
               server_name: str) -> None:
    # 1. content hash: SHA-256 over the canonical event minus unsigned/signatures/hashes.
    stripped = {k: v for k, v in pdu.items() if k not in ("unsigned", "signatures", "hashes")}
    digest = hashlib.sha256(encode_canonical_json(stripped)).digest()
    assert decode_base64(pdu["hashes"]["sha256"]) == digest, f"bad content hash: {event_id}"
    # 2. the event id is the reference hash of the redacted event (room v3+:
    #    standard base64 in v3, URL-safe from v4); v1 and v2 carry it in the PDU.
    pruned = prune_event_dict(pdu, get_room_version(version))
    if version in ("1", "2"):
        assert pdu["event_id"] == event_id and event_id.endswith(":" + server_name)
    else:
        reference = {k: v for k, v in pruned.items() if k not in ("signatures", "unsigned")}
        digest = hashlib.sha256(encode_canonical_json(reference)).digest()
        expected_id = "$" + encode_base64(digest, urlsafe=version != "3")
        assert expected_id == event_id, f"event id is not the reference hash: {event_id}"
    # 3. our server's signature over the redacted event.
    verify_signed_json(pruned, server_name, verify_key)


@dataclass
class User:
    api: Api
    user_id: str
    token: str
    device_id: str | None = None

    def req(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        if not path.startswith("/_matrix"):
            path = V3 + path
        return self.api.request(method, path, body, self.token, **kwargs)

    def ok(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        status, data = self.req(method, path, body, **kwargs)
        assert status == 200, (method, path, status, data)
        return data

    def err(self, method: str, path: str, body: Any = None, *, status: int,
            errcode: str | tuple[str, ...] | None = None, **kwargs: Any) -> Any:
        got, data = self.req(method, path, body, **kwargs)
        assert got == status, (method, path, got, data)
        if errcode is not None:
            codes = (errcode,) if isinstance(errcode, str) else errcode
            assert data["errcode"] in codes, (method, path, data)
        return data

    # -- rooms ---------------------------------------------------------------
    def create_room(self, **body: Any) -> str:
        return str(self.ok("POST", "/createRoom", body)["room_id"])

    def send(self, room_id: str, body: str = "hello", txn_id: str | None = None,
             etype: str = "m.room.message", content: dict[str, Any] | None = None) -> str:
        content = content if content is not None else {"msgtype": "m.text", "body": body}
        if txn_id is None:
            data = self.ok("POST", f"/rooms/{q(room_id)}/send/{etype}", content)
        else:
            data = self.ok("PUT", f"/rooms/{q(room_id)}/send/{etype}/{q(txn_id)}", content)
        return str(data["event_id"])

    def put_state(self, room_id: str, etype: str, content: dict[str, Any],
                  state_key: str = "") -> str:
        path = f"/rooms/{q(room_id)}/state/{etype}"
        if state_key:
            path += f"/{q(state_key)}"
        return str(self.ok("PUT", path, content)["event_id"])

    def get_state(self, room_id: str, etype: str, state_key: str = "") -> Any:
        return self.ok("GET", f"/rooms/{q(room_id)}/state/{etype}/{q(state_key)}")

    def state_map(self, room_id: str) -> dict[tuple[str, str], dict[str, Any]]:
        events = self.ok("GET", f"/rooms/{q(room_id)}/state")
        return {(e["type"], e["state_key"]): e for e in events}

    def state_ids(self, room_id: str) -> dict[tuple[str, str], str]:
        return {k: e["event_id"] for k, e in self.state_map(room_id).items()}

    def join(self, room_id: str) -> None:
        self.ok("POST", f"/join/{q(room_id)}", {})

    def leave(self, room_id: str) -> None:
        self.ok("POST", f"/rooms/{q(room_id)}/leave", {})

    def invite(self, room_id: str, user_id: str) -> None:
        self.ok("POST", f"/rooms/{q(room_id)}/invite", {"user_id": user_id})

    def messages(self, room_id: str, **params: Any) -> Any:
        if "filter" in params and not isinstance(params["filter"], str):
            params["filter"] = json.dumps(params["filter"])
        query = urlencode(params)
        return self.ok("GET", f"/rooms/{q(room_id)}/messages?{query}")

    def all_messages(self, room_id: str, limit: int = 1000, **params: Any) -> list[Any]:
        return list(self.messages(room_id, dir="b", limit=limit, **params)["chunk"])

    def membership(self, room_id: str, user_id: str) -> str | None:
        state = self.state_map(room_id)
        event = state.get(("m.room.member", user_id))
        return None if event is None else str(event["content"]["membership"])
