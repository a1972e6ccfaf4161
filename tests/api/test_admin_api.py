"""The Synapse-compatible admin API (``/_synapse/admin``) over HTTP, called as
synapse-admin and admin scripts call it: users, rooms, history purges,
registration tokens, server notices, event reports; and a non-admin is
refused on every route."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from myelin.api.admin import media, notices, reports, rooms, server, stats, tokens, users
from tests.support.client import LoggedIn
from tests.support.server import ServerProcess, launch_server

V1 = "/_synapse/admin/v1"
V2 = "/_synapse/admin/v2"
NOTICES = {"system_mxid_localpart": "notices", "system_mxid_display_name": "Server Notices",
           "room_name": "Server Notices"}
_ids = itertools.count()


def q(value: str) -> str:
    return quote(value, safe="")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def hs(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    pg = request.getfixturevalue("postgres_server") if request.param == "postgres" else None
    proc = launch_server(request.param, pg, {"server_notices": NOTICES})
    try:
        yield proc
    finally:
        proc.stop()


class Client(LoggedIn):
    PREFIX = "user"

    def admin_req(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.hs.request(method, path, body, token=self.token)

    def aok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        got, out = self.admin_req(method, path, body)
        assert got == status, (method, path, got, out)
        return out

    def aerr(self, method: str, path: str, body: Any = None, *, status: int,
             errcode: str) -> Any:
        got, out = self.admin_req(method, path, body)
        assert (got, out.get("errcode")) == (status, errcode), (method, path, got, out)
        return out

    def room(self, **body: Any) -> str:
        return str(self.ok("POST", "/createRoom", body)["room_id"])

    def send(self, room_id: str, text: str) -> str:
        return str(self.ok("PUT", f"/rooms/{q(room_id)}/send/m.room.message/t{next(_ids)}",
                           {"msgtype": "m.text", "body": text})["event_id"])

    def texts(self, room_id: str) -> list[str]:
        out = self.ok("GET", f"/rooms/{q(room_id)}/messages?dir=b&limit=100")
        return [e["content"].get("body") for e in out["chunk"]
                if e["type"] == "m.room.message"]


def wait_for(check: Any, what: str) -> Any:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def login(hs: ServerProcess, user_id: str, password: str) -> tuple[int, Any]:
    return hs.request("POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id},
        "password": password})


# -- authorisation -------------------------------------------------------------------
ADMIN_MODULES = (users, rooms, tokens, notices, reports, stats, server, media)
PUBLIC = {("GET", "/_synapse/admin/v1/server_version")}  # unauthenticated in Synapse too


def _admin_routes() -> list[tuple[str, str]]:
    out = []
    for module in ADMIN_MODULES:
        for route in module.routes.routes:
            pattern = route.pattern
            path = re.sub(r"\{(\w+)\??\}", lambda m: q({
                "userId": "@someone:test.localhost", "roomId": "!room:test.localhost",
                "roomIdOrAlias": "!room:test.localhost", "eventId": "$event",
                "serverName": "test.localhost",
            }.get(m.group(1), "x1")), pattern.prefix + pattern.path)
            if (route.method, path) not in PUBLIC:
                out.append((route.method, path))
    return out


def test_every_admin_route_refuses_a_non_admin(hs: ServerProcess) -> None:
    user = Client.new(hs)
    routes = _admin_routes()
    assert len(routes) > 40
    for method, path in routes:
        body = {} if method in ("POST", "PUT", "DELETE") else None
        status, out = hs.request(method, path, body, token=user.token)
        assert (status, out.get("errcode")) == (403, "M_FORBIDDEN"), (method, path, out)
        status, out = hs.request(method, path, body)
        assert status == 401, (method, path, out)


def test_server_version(hs: ServerProcess) -> None:
    status, out = hs.request("GET", f"{V1}/server_version")
    assert status == 200 and isinstance(out["server_version"], str)


# -- users ---------------------------------------------------------------------------
def test_list_users_pages_filters_and_orders(hs: ServerProcess) -> None:
    boss = Client.new(hs, admin=True, name="listadmin")
    mine = [Client.new(hs, name="zlist") for _ in range(3)]
    out = boss.aok("GET", f"{V2}/users?user_id=zlist&limit=2")
    assert out["total"] == 3 and len(out["users"]) == 2
    names = [u["name"] for u in out["users"]]
    out2 = boss.aok("GET", f"{V2}/users?user_id=zlist&limit=2&from={out['next_token']}")
    assert "next_token" not in out2
    assert sorted(names + [u["name"] for u in out2["users"]]) == sorted(
        c.user_id for c in mine)
    backwards = boss.aok("GET", f"{V2}/users?user_id=zlist&dir=b")["users"]
    assert [u["name"] for u in backwards] == sorted((c.user_id for c in mine), reverse=True)
    entry = backwards[0]
    for key in ("name", "is_guest", "admin", "deactivated", "shadow_banned", "displayname",
                "avatar_url", "creation_ts", "user_type", "locked"):
        assert key in entry
    # creation_ts in seconds, as Synapse answers it.
    assert abs(entry["creation_ts"] - time.time()) < 3600
    admins = boss.aok("GET", f"{V2}/users?admins=true")["users"]
    assert boss.user_id in [u["name"] for u in admins]
    assert not any(u["name"] == mine[0].user_id for u in admins)
    # Locked users are left out unless asked for (locked=true), as in Synapse.
    boss.aok("PUT", f"{V2}/users/{q(mine[0].user_id)}", {"locked": True})
    unlocked = boss.aok("GET", f"{V2}/users?user_id=zlist")["users"]
    assert mine[0].user_id not in [u["name"] for u in unlocked]
    everyone = boss.aok("GET", f"{V2}/users?user_id=zlist&locked=true")["users"]
    assert [u["locked"] for u in everyone if u["name"] == mine[0].user_id] == [True]
    boss.aerr("GET", f"{V2}/users?order_by=password", status=400, errcode="M_INVALID_PARAM")
    boss.aerr("GET", f"{V2}/users?from=-1", status=400, errcode="M_INVALID_PARAM")


def test_create_and_edit_a_user(hs: ServerProcess) -> None:
    boss = Client.new(hs, admin=True)
    user_id = f"@made{next(_ids)}:test.localhost"
    created = boss.aok("PUT", f"{V2}/users/{q(user_id)}", {
        "password": "first pass", "displayname": "Made", "threepids": [
            {"medium": "email", "address": "made@example.org"}]}, status=201)
    assert created["name"] == user_id and created["displayname"] == "Made"
    assert [t["address"] for t in created["threepids"]] == ["made@example.org"]
    assert login(hs, user_id, "first pass")[0] == 200

    edited = boss.aok("PUT", f"{V2}/users/{q(user_id)}", {
        "password": "second pass", "admin": True, "displayname": "Renamed"})
    assert edited["admin"] is True and edited["displayname"] == "Renamed"
    assert login(hs, user_id, "first pass")[0] == 403
    assert login(hs, user_id, "second pass")[0] == 200
    assert boss.aok("GET", f"{V1}/users/{q(user_id)}/admin") == {"admin": True}
    boss.aok("PUT", f"{V1}/users/{q(user_id)}/admin", {"admin": False})
    assert boss.aok("GET", f"{V2}/users/{q(user_id)}")["admin"] is False

    # Bad input changes nothing.
    boss.aerr("PUT", f"{V2}/users/{q(user_id)}", {"admin": "yes", "displayname": "X"},
              status=400, errcode="M_BAD_JSON")
    assert boss.aok("GET", f"{V2}/users/{q(user_id)}")["displayname"] == "Renamed"
    boss.aerr("GET", f"{V2}/users/{q('@nobody:test.localhost')}", status=404,
              errcode="M_NOT_FOUND")
    boss.aerr("PUT", f"{V1}/users/{q(boss.user_id)}/admin", {"admin": False}, status=400,
              errcode="M_UNKNOWN")


def test_deactivate_and_reset_password(hs: ServerProcess) -> None:
    boss, victim, other = Client.new(hs, admin=True), Client.new(hs), Client.new(hs)
    room = other.room(preset="public_chat")
    victim.ok("POST", f"/join/{q(room)}", {})
    victim.ok("PUT", f"/profile/{q(victim.user_id)}/displayname", {"displayname": "V"})

    boss.aok("POST", f"{V1}/reset_password/{q(other.user_id)}",
             {"new_password": "brand new", "logout_devices": False})
    assert login(hs, other.user_id, "brand new")[0] == 200
    other.ok("GET", "/account/whoami")  # still logged in

    out = boss.aok("POST", f"{V1}/deactivate/{q(victim.user_id)}", {"erase": True})
    assert out == {"id_server_unbind_result": "success"}
    victim.err("GET", "/account/whoami", status=401)
    assert login(hs, victim.user_id, "correct horse")[0] == 403
    info = boss.aok("GET", f"{V2}/users/{q(victim.user_id)}")
    assert info["deactivated"] is True and info["displayname"] is None
    members = boss.aok("GET", f"{V1}/rooms/{q(room)}/members")["members"]
    assert victim.user_id not in members
    listed = boss.aok("GET", f"{V2}/users?user_id={q(victim.user_id)}")["users"]
    assert listed == []
    listed = boss.aok("GET", f"{V2}/users?user_id={q(victim.user_id)}&deactivated=true")
    assert [u["name"] for u in listed["users"]] == [victim.user_id]


def test_login_as_user_whois_devices_and_joined_rooms(hs: ServerProcess) -> None:
    boss, user = Client.new(hs, admin=True), Client.new(hs)
    room = user.room()
    out = boss.aok("POST", f"{V1}/users/{q(user.user_id)}/login", {})
    puppet = Client(hs, {"user_id": user.user_id, "access_token": out["access_token"]})
    assert puppet.ok("GET", "/account/whoami")["user_id"] == user.user_id
    puppet.send(room, "sent by the admin")
    boss.aerr("POST", f"{V1}/users/{q(boss.user_id)}/login", {}, status=400,
              errcode="M_UNKNOWN")

    assert boss.aok("GET", f"{V1}/users/{q(user.user_id)}/joined_rooms") == {
        "joined_rooms": [room], "total": 1}
    devices = boss.aok("GET", f"{V2}/users/{q(user.user_id)}/devices")
    assert devices["total"] == 1  # the puppet token has no device
    device_id = devices["devices"][0]["device_id"]
    assert boss.aok("GET", f"{V1}/whois/{q(user.user_id)}")["user_id"] == user.user_id
    assert boss.aok("GET", f"{V1}/users/{q(user.user_id)}/pushers") == {
        "pushers": [], "total": 0}
    user.ok("PUT", f"/user/{q(user.user_id)}/account_data/org.example.pref", {"x": 1})
    user.ok("PUT", f"/user/{q(user.user_id)}/rooms/{q(room)}/tags/u.work", {})
    data = boss.aok("GET", f"{V1}/users/{q(user.user_id)}/accountdata")["account_data"]
    assert data["global"]["org.example.pref"] == {"x": 1}
    assert "u.work" in data["rooms"][room]["m.tag"]["tags"]
    path = f"{V2}/users/{q(user.user_id)}/devices/{q(device_id)}"
    boss.aok("PUT", path, {"display_name": "renamed by admin"})
    assert boss.aok("GET", path)["display_name"] == "renamed by admin"
    boss.aok("POST", f"{V2}/users/{q(user.user_id)}/devices", {"device_id": "PRECREATED"},
             status=201)
    listed = boss.aok("GET", f"{V2}/users/{q(user.user_id)}/devices")["devices"]
    assert sorted(d["device_id"] for d in listed) == sorted([device_id, "PRECREATED"])
    boss.aok("POST", f"{V2}/users/{q(user.user_id)}/delete_devices", {"devices": [device_id]})
    boss.aerr("GET", path, status=404, errcode="M_NOT_FOUND")
    user.err("GET", "/account/whoami", status=401)


def test_username_available_shadow_ban_and_ratelimit_override(hs: ServerProcess) -> None:
    boss, user, friend = Client.new(hs, admin=True), Client.new(hs), Client.new(hs)
    assert boss.aok("GET", f"{V1}/username_available?username=free{next(_ids)}") == {
        "available": True}
    boss.aerr("GET", f"{V1}/username_available?username={user.user_id[1:].split(':')[0]}",
              status=400, errcode="M_USER_IN_USE")

    room = friend.room(preset="public_chat")
    user.ok("POST", f"/join/{q(room)}", {})
    boss.aok("POST", f"{V1}/users/{q(user.user_id)}/shadow_ban", {})
    assert boss.aok("GET", f"{V2}/users/{q(user.user_id)}")["shadow_banned"] is True
    user.send(room, "nobody hears this")  # succeeds for the sender...
    assert "nobody hears this" not in friend.texts(room)  # ...and reaches nobody
    user.ok("PUT", f"/rooms/{q(room)}/state/org.example.state/", {"v": 1})
    friend.err("GET", f"/rooms/{q(room)}/state/org.example.state/", status=404,
               errcode="M_NOT_FOUND")
    stranger = Client.new(hs)
    user.ok("POST", f"/rooms/{q(room)}/invite", {"user_id": stranger.user_id})
    assert room not in stranger.ok("GET", "/sync").get("rooms", {}).get("invite", {})
    boss.aok("DELETE", f"{V1}/users/{q(user.user_id)}/shadow_ban")
    user.send(room, "heard again")
    assert "heard again" in friend.texts(room)

    path = f"{V1}/users/{q(user.user_id)}/override_ratelimit"
    assert boss.aok("GET", path) == {}
    boss.aerr("POST", path, {"messages_per_second": -1}, status=400,
              errcode="M_INVALID_PARAM")
    assert boss.aok("GET", path) == {}
    assert boss.aok("POST", path, {"messages_per_second": 0, "burst_count": 1}) == {
        "messages_per_second": 0, "burst_count": 1}
    user.send(room, "one")
    user.err("PUT", f"/rooms/{q(room)}/send/m.room.message/over{next(_ids)}",
             {"msgtype": "m.text", "body": "two"}, status=429, errcode="M_LIMIT_EXCEEDED")
    boss.aok("DELETE", path)
    user.send(room, "three")


# -- rooms ---------------------------------------------------------------------------------
def test_list_and_inspect_rooms(hs: ServerProcess) -> None:
    boss, alice, bob = Client.new(hs, admin=True), Client.new(hs), Client.new(hs)
    tag = f"roomlist{next(_ids)}"
    big = alice.room(preset="public_chat", name=f"{tag} big")
    small = alice.room(name=f"{tag} small")
    bob.ok("POST", f"/join/{q(big)}", {})

    out = boss.aok("GET", f"{V1}/rooms?search_term={tag}&order_by=joined_members")
    assert [r["room_id"] for r in out["rooms"]] == [big, small]
    assert out["total_rooms"] == 2 and out["offset"] == 0
    out = boss.aok("GET", f"{V1}/rooms?search_term={tag}&order_by=name&dir=b&limit=1")
    assert [r["room_id"] for r in out["rooms"]] == [small] and out["next_batch"] == 1
    details = boss.aok("GET", f"{V1}/rooms/{q(big)}")
    assert details["name"] == f"{tag} big" and details["joined_members"] == 2
    assert details["join_rules"] == "public" and details["creator"] == alice.user_id
    members = boss.aok("GET", f"{V1}/rooms/{q(big)}/members")
    assert sorted(members["members"]) == sorted([alice.user_id, bob.user_id])
    state = boss.aok("GET", f"{V1}/rooms/{q(big)}/state")["state"]
    assert {e["type"] for e in state} >= {"m.room.create", "m.room.power_levels"}
    alice.send(small, "admin reads this")
    chunk = boss.aok("GET", f"{V1}/rooms/{q(small)}/messages?limit=5")["chunk"]
    assert chunk[0]["content"]["body"] == "admin reads this"
    extremities = boss.aok("GET", f"{V1}/rooms/{q(small)}/forward_extremities")
    assert extremities["count"] == 1
    assert extremities["results"][0]["event_id"] == chunk[0]["event_id"]
    boss.aerr("GET", f"{V1}/rooms/{q('!nope:test.localhost')}", status=404,
              errcode="M_NOT_FOUND")
    boss.aerr("GET", f"{V1}/rooms?order_by=nonsense", status=400, errcode="M_INVALID_PARAM")


def test_block_and_force_join(hs: ServerProcess) -> None:
    boss, alice, bob = Client.new(hs, admin=True), Client.new(hs), Client.new(hs)
    room = alice.room(preset="private_chat")
    boss.aerr("POST", f"{V1}/join/{q(room)}", {"user_id": bob.user_id}, status=403,
              errcode="M_FORBIDDEN")  # the admin is not in the private room
    public = alice.room(preset="public_chat")
    assert boss.aok("POST", f"{V1}/join/{q(public)}", {"user_id": bob.user_id}) == {
        "room_id": public}
    assert public in bob.ok("GET", "/joined_rooms")["joined_rooms"]

    assert boss.aok("GET", f"{V1}/rooms/{q(public)}/block") == {"block": False}
    assert boss.aok("PUT", f"{V1}/rooms/{q(public)}/block", {"block": True}) == {
        "block": True}
    assert boss.aok("GET", f"{V1}/rooms/{q(public)}/block") == {
        "block": True, "user_id": boss.user_id}
    carol = Client.new(hs)
    carol.err("POST", f"/join/{q(public)}", {}, status=403, errcode="M_FORBIDDEN")
    boss.aok("PUT", f"{V1}/rooms/{q(public)}/block", {"block": False})
    carol.ok("POST", f"/join/{q(public)}", {})


def test_make_room_admin(hs: ServerProcess) -> None:
    boss, alice = Client.new(hs, admin=True), Client.new(hs)
    room = alice.room(preset="public_chat")
    boss.ok("POST", f"/join/{q(room)}", {})
    boss.aok("POST", f"{V1}/rooms/{q(room)}/make_room_admin", {})
    levels = alice.ok("GET", f"/rooms/{q(room)}/state/m.room.power_levels/")
    assert levels["users"][boss.user_id] == 100


def test_delete_room_in_the_background(hs: ServerProcess) -> None:
    boss, alice, bob = Client.new(hs, admin=True), Client.new(hs), Client.new(hs)
    room = alice.room(preset="public_chat")
    alias = f"#gone{next(_ids)}:test.localhost"
    alice.ok("PUT", f"/directory/room/{q(alias)}", {"room_id": room})
    bob.ok("POST", f"/join/{q(room)}", {})
    alice.send(room, "soon gone")

    boss.aerr("DELETE", f"{V2}/rooms/{q(room)}", {"block": "yes"}, status=400,
              errcode="M_BAD_JSON")
    assert room in bob.ok("GET", "/joined_rooms")["joined_rooms"]  # nothing happened

    out = boss.aok("DELETE", f"{V2}/rooms/{q(room)}", {
        "block": True, "new_room_user_id": boss.user_id, "message": "Moved"})
    delete_id = out["delete_id"]

    def done() -> Any:
        status = boss.aok("GET", f"{V2}/rooms/delete_status/{q(delete_id)}")
        return status if status["status"] in ("complete", "failed") else None

    status = wait_for(done, "the deletion")
    assert status["status"] == "complete", status
    shutdown = status["shutdown_room"]
    assert sorted(shutdown["kicked_users"]) == sorted([alice.user_id, bob.user_id])
    assert shutdown["local_aliases"] == [alias]
    new_room = shutdown["new_room_id"]
    assert new_room is not None
    assert bob.ok("GET", "/joined_rooms")["joined_rooms"] == [new_room]
    assert "Moved" in bob.texts(new_room)
    by_room = boss.aok("GET", f"{V2}/rooms/{q(room)}/delete_status")["results"]
    assert [r["delete_id"] for r in by_room] == [delete_id]
    boss.aerr("GET", f"{V1}/rooms/{q(room)}", status=404, errcode="M_NOT_FOUND")
    # The old room's address now leads to the new room.
    assert alice.ok("GET", f"/directory/room/{q(alias)}")["room_id"] == new_room
    assert boss.aok("GET", f"{V1}/rooms/{q(room)}/block")["block"] is True
    assert room not in [r["room_id"] for r in boss.aok("GET", f"{V1}/rooms")["rooms"]]


def test_purge_history(hs: ServerProcess) -> None:
    boss, alice = Client.new(hs, admin=True), Client.new(hs)
    room = alice.room(preset="public_chat", name="kept name")
    for i in range(3):
        alice.send(room, f"old {i}")
    point = alice.send(room, "the point")
    alice.send(room, "new")

    since = alice.ok("GET", "/sync")["next_batch"]
    boss.aerr("POST", f"{V1}/purge_history/{q(room)}", {}, status=400,
              errcode="M_MISSING_PARAM")
    out = boss.aok("POST", f"{V1}/purge_history/{q(room)}/{q(point)}",
                   {"delete_local_events": True})
    purge_id = out["purge_id"]
    # Only active/complete/failed, as Synapse: tools poll while "active".
    assert boss.aok("GET", f"{V1}/purge_history_status/{q(purge_id)}")["status"] in (
        "active", "complete")
    wait_for(lambda: boss.aok("GET", f"{V1}/purge_history_status/{q(purge_id)}")["status"]
             == "complete", "the purge")
    assert alice.texts(room) == ["new", "the point"]
    # A sync from before the purge goes on (nothing new in the room).
    assert room not in alice.ok("GET", f"/sync?since={since}").get("rooms", {}).get("join", {})
    joined = alice.ok("GET", "/sync")["rooms"]["join"][room]
    timeline = [e["content"].get("body") for e in joined["timeline"]["events"]
                if e["type"] == "m.room.message"]
    assert timeline == ["the point", "new"]
    # The state before the point is kept, out of the timeline: in the sync's state.
    assert [e["type"] for e in joined["timeline"]["events"]] == ["m.room.message"] * 2
    kept = {e["type"] for e in joined["state"]["events"]}
    assert kept >= {"m.room.create", "m.room.member", "m.room.power_levels", "m.room.name"}
    # The room still works: its state is kept, and it takes new messages.
    assert boss.aok("GET", f"{V1}/rooms/{q(room)}")["name"] == "kept name"
    alice.send(room, "after the purge")
    assert alice.texts(room)[0] == "after the purge"
    boss.aerr("GET", f"{V1}/purge_history_status/nosuchpurge", status=404,
              errcode="M_NOT_FOUND")


# -- registration tokens ---------------------------------------------------------------------
def test_registration_tokens_crud(hs: ServerProcess) -> None:
    boss = Client.new(hs, admin=True)
    base = f"{V1}/registration_tokens"
    name = f"tok{next(_ids)}"
    made = boss.aok("POST", f"{base}/new", {"token": name, "uses_allowed": 2})
    assert made == {"token": name, "uses_allowed": 2, "pending": 0, "completed": 0,
                    "expiry_time": None}
    generated = boss.aok("POST", f"{base}/new", {"length": 10})
    assert len(generated["token"]) == 10
    boss.aerr("POST", f"{base}/new", {"token": name}, status=400, errcode="M_INVALID_PARAM")
    boss.aerr("POST", f"{base}/new", {"token": "bad token!"}, status=400,
              errcode="M_INVALID_PARAM")
    boss.aerr("POST", f"{base}/new", {"uses_allowed": -1}, status=400,
              errcode="M_INVALID_PARAM")
    assert boss.aok("GET", f"{base}/{name}") == made
    updated = boss.aok("PUT", f"{base}/{name}", {"uses_allowed": 0})
    assert updated["uses_allowed"] == 0
    invalid = [t["token"] for t in boss.aok("GET", f"{base}?valid=false")[
        "registration_tokens"]]
    valid = [t["token"] for t in boss.aok("GET", f"{base}?valid=true")["registration_tokens"]]
    assert name in invalid and name not in valid and generated["token"] in valid
    boss.aok("DELETE", f"{base}/{name}")
    boss.aerr("GET", f"{base}/{name}", status=404, errcode="M_NOT_FOUND")
    boss.aerr("DELETE", f"{base}/{name}", status=404, errcode="M_NOT_FOUND")


# -- server notices -------------------------------------------------------------------------
def test_send_server_notice(hs: ServerProcess) -> None:
    boss, user = Client.new(hs, admin=True), Client.new(hs)
    first = boss.aok("POST", f"{V1}/send_server_notice", {
        "user_id": user.user_id,
        "content": {"msgtype": "m.text", "body": "Maintenance tonight"}})
    sync = user.ok("GET", "/sync")
    invites = sync["rooms"]["invite"]
    assert len(invites) == 1
    room_id = next(iter(invites))
    user.ok("POST", f"/join/{q(room_id)}", {})
    tags = user.ok("GET", f"/user/{q(user.user_id)}/rooms/{q(room_id)}/tags")["tags"]
    assert "m.server_notice" in tags
    assert user.texts(room_id) == ["Maintenance tonight"]
    second = boss.aok("POST", f"{V1}/send_server_notice", {
        "user_id": user.user_id,
        "content": {"msgtype": "m.text", "body": "Done", "server_notice_type": "m.x"}})
    assert second["event_id"] != first["event_id"]
    assert user.texts(room_id) == ["Done", "Maintenance tonight"]  # the same room
    # The user cannot answer in the notices room.
    user.err("PUT", f"/rooms/{q(room_id)}/send/m.room.message/t{next(_ids)}",
             {"msgtype": "m.text", "body": "hi"}, status=403, errcode="M_FORBIDDEN")
    boss.aerr("POST", f"{V1}/send_server_notice", {"user_id": user.user_id}, status=400,
              errcode="M_MISSING_PARAM")
    boss.aerr("POST", f"{V1}/send_server_notice", {
        "user_id": "@someone:elsewhere.example", "content": {"body": "x"}}, status=400,
        errcode="M_UNKNOWN")


# -- event reports, statistics, background updates ---------------------------------------------
def test_event_reports(hs: ServerProcess) -> None:
    boss, alice, mallory = Client.new(hs, admin=True), Client.new(hs), Client.new(hs)
    room = alice.room(preset="public_chat", name="reported room")
    mallory.ok("POST", f"/join/{q(room)}", {})
    bad = mallory.send(room, "awful")
    alice.ok("POST", f"/rooms/{q(room)}/report/{q(bad)}", {"reason": "spam", "score": -50})
    listed = boss.aok("GET", f"{V1}/event_reports?room_id={q(room)}")
    assert listed["total"] == 1
    report = listed["event_reports"][0]
    assert (report["event_id"], report["user_id"], report["sender"], report["name"],
            report["reason"]) == (bad, alice.user_id, mallory.user_id, "reported room", "spam")
    detail = boss.aok("GET", f"{V1}/event_reports/{report['id']}")
    assert detail["event_json"]["content"]["body"] == "awful"
    boss.aok("DELETE", f"{V1}/event_reports/{report['id']}")
    boss.aerr("GET", f"{V1}/event_reports/{report['id']}", status=404, errcode="M_NOT_FOUND")
    assert boss.aok("GET", f"{V1}/event_reports?room_id={q(room)}")["total"] == 0


def test_statistics_and_background_updates(hs: ServerProcess) -> None:
    boss, user = Client.new(hs, admin=True), Client.new(hs)
    status, _ = hs.request("POST", "/_matrix/media/v3/upload", raw=b"12345",
                           headers={"Content-Type": "text/plain"}, token=user.token)
    assert status == 200
    stats_out = boss.aok("GET", f"{V1}/statistics/users/media?search_term={user.user_id[1:]}")
    assert stats_out["users"] == [{"user_id": user.user_id, "displayname": user.user_id[1:]
                                   .split(":")[0], "media_count": 1, "media_length": 5}]
    assert boss.aok("GET", f"{V1}/background_updates/enabled") == {"enabled": True}
    assert boss.aok("GET", f"{V1}/background_updates/status")["current_updates"] == {}
    assert boss.aok("GET", f"{V1}/federation/destinations") == {"destinations": [], "total": 0}


def test_shutdown_room_v1_without_purge(hs: ServerProcess) -> None:
    """sytest's "Shutdown room", less its remote user: v1 answers at once."""
    boss, user, dummy = Client.new(hs, admin=True), Client.new(hs), Client.new(hs)
    alias = f"#shut{next(_ids)}:test.localhost"
    room = user.room(room_alias_name=alias[1:].split(":")[0])
    out = boss.aok("DELETE", f"{V1}/rooms/{q(room)}", {
        "new_room_user_id": dummy.user_id, "block": True, "purge": False})
    new_room = out["new_room_id"]
    assert out["kicked_users"] == [user.user_id] and out["local_aliases"] == [alias]
    user.err("PUT", f"/rooms/{q(room)}/send/m.room.message/t{next(_ids)}",
             {"msgtype": "m.text", "body": "Hello"}, status=403, errcode="M_FORBIDDEN")
    user.err("POST", f"/join/{q(room)}", {}, status=403, errcode="M_FORBIDDEN")
    assert user.ok("GET", f"/directory/room/{q(alias)}")["room_id"] == new_room
    user.ok("GET", f"/rooms/{q(new_room)}/state/m.room.name/")
    user.err("PUT", f"/rooms/{q(new_room)}/send/m.room.message/t{next(_ids)}",
             {"msgtype": "m.text", "body": "Hello"}, status=403, errcode="M_FORBIDDEN")
    # Not purged: the admin still sees the room, now empty of local members.
    assert boss.aok("GET", f"{V1}/rooms/{q(room)}")["joined_local_members"] == 0
