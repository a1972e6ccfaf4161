"""The admin API's room management: listing and inspecting rooms, blocking,
forcing a user in, and the two background jobs — deleting a room (everyone
local leaves, optionally moved to a new room, then its rows are purged) and
purging history before a point.

Jobs run as tasks of the process that took the request (admin routes are
``main_only``, so the main process); their status lives in ``admin_jobs`` so
it outlives the task and reads the same from any process."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError, Requester, forbidden, invalid_param, not_found

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)

ROOM_ORDER = {"alphabetical": "name", "size": "joined_members", "name": "name",
              "canonical_alias": "canonical_alias", "joined_members": "joined_members",
              "joined_local_members": "joined_local_members", "version": "version",
              "creator": "creator", "encryption": "encryption", "federatable": "federatable",
              "public": "public", "join_rules": "join_rules", "guest_access": "guest_access",
              "history_visibility": "history_visibility", "state_events": "state_events"}

# The room's caches that hold rows a deletion or purge removed.
ROOM_CACHES = ("room_versions", "current_state", "forward_extremities", "room_timelines",
               "room_members")


class AdminRoomsHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.admin
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: set[str] = set()

    # -- reading ----------------------------------------------------------------
    async def details(self, room_id: str) -> dict[str, Any] | None:
        hs = self.hs
        row = await self.store.room_row(room_id)
        if row is None:
            return None
        version, creator, public, _created = row
        ids = await hs.stores.state.get_current_state_ids(room_id)
        wanted = {k: v for k, v in ids.items() if k[1] == "" and k[0] in (
            "m.room.name", "m.room.canonical_alias", "m.room.join_rules",
            "m.room.guest_access", "m.room.history_visibility", "m.room.encryption",
            "m.room.create", "m.room.avatar", "m.room.topic")}
        events = await hs.stores.events.get_events(list(wanted.values()))
        content = {k[0]: events[v].event.content for k, v in wanted.items() if v in events}
        members = await hs.stores.memberships.get_members(room_id)
        create = content.get("m.room.create", {})
        return {
            "room_id": room_id,
            "name": content.get("m.room.name", {}).get("name"),
            "topic": content.get("m.room.topic", {}).get("topic"),
            "avatar": content.get("m.room.avatar", {}).get("url"),
            "canonical_alias": content.get("m.room.canonical_alias", {}).get("alias"),
            "joined_members": len(members),
            "joined_local_members": sum(1 for m in members if hs.is_mine(m.user_id)),
            "joined_local_devices": 0,
            "version": version,
            "creator": creator or create.get("creator"),
            "encryption": content.get("m.room.encryption", {}).get("algorithm"),
            "federatable": create.get("m.federate", True) is not False,
            "public": public,
            "join_rules": content.get("m.room.join_rules", {}).get("join_rule"),
            "guest_access": content.get("m.room.guest_access", {}).get("guest_access"),
            "history_visibility": content.get("m.room.history_visibility", {}).get(
                "history_visibility"),
            "state_events": len(ids),
            "room_type": create.get("type"),
        }

    async def require(self, room_id: str) -> dict[str, Any]:
        details = await self.details(room_id)
        if details is None:
            raise not_found("Room not found")
        return details

    async def list_rooms(self, *, start: int, limit: int, order_by: str, forwards: bool,
                         search_term: str | None, public_rooms: bool | None,
                         empty_rooms: bool | None) -> dict[str, Any]:
        rooms = [d for room_id in await self.store.all_room_ids()
                 if (d := await self.details(room_id)) is not None]
        if search_term:
            needle = search_term.lower()
            rooms = [r for r in rooms if needle in (r["name"] or "").lower()
                     or needle in (r["canonical_alias"] or "").lower()
                     or needle in r["room_id"].lower()]
        if public_rooms is not None:
            rooms = [r for r in rooms if r["public"] == public_rooms]
        if empty_rooms is not None:
            rooms = [r for r in rooms if (r["joined_members"] == 0) == empty_rooms]
        field = ROOM_ORDER[order_by]
        numeric = field in ("joined_members", "joined_local_members", "state_events")
        # Synapse lists the biggest rooms first for the size orders when dir=f.
        reverse = (not forwards) != numeric

        def key(r: dict[str, Any]) -> tuple[Any, ...]:
            value = r[field]
            return (value is not None, value if value is not None else "", r["room_id"])

        rooms.sort(key=key, reverse=reverse)
        page = rooms[start:start + limit]
        body: dict[str, Any] = {"rooms": page, "offset": start, "total_rooms": len(rooms)}
        if start + len(page) < len(rooms):
            body["next_batch"] = start + len(page)
        if start > 0:
            body["prev_batch"] = max(0, start - limit)
        return body

    async def members(self, room_id: str) -> dict[str, Any]:
        await self.require(room_id)
        members = await self.hs.stores.memberships.get_members(room_id)
        return {"members": [m.user_id for m in members], "total": len(members)}

    async def state(self, room_id: str) -> dict[str, Any]:
        await self.require(room_id)
        ids = await self.hs.stores.state.get_current_state_ids(room_id)
        events = await self.hs.stores.events.get_events(list(ids.values()))
        return {"state": await self.hs.serializer.serialize(list(events.values()))}

    async def messages(self, room_id: str, *, from_token: str | None, direction: str,
                       limit: int) -> dict[str, Any]:
        """The room's timeline as a member would page it, whoever the admin is:
        read through a member's eyes would hide history, so an admin reads
        everything (visibility is not applied)."""
        await self.require(room_id)
        forwards = direction == "f"
        try:
            position = int(from_token.lstrip("s")) if from_token else None
        except ValueError:
            raise invalid_param("Invalid from token") from None
        ids = await self.hs.stores.events.get_room_stream_ids(
            room_id, from_pos=position, to_pos=None, limit=limit, backwards=not forwards)
        events = await self.hs.stores.events.get_events([i for i, _ in ids])
        ordered = [events[i] for i, _ in ids if i in events]
        body: dict[str, Any] = {"chunk": await self.hs.serializer.serialize(ordered),
                                "start": from_token or ""}
        if ordered:
            last = ordered[-1].stream_ordering
            body["end"] = f"s{last if forwards else last - 1}"
        return body

    # -- blocking, joining ----------------------------------------------------------
    async def get_block(self, room_id: str) -> dict[str, Any]:
        by = await self.store.get_block(room_id)
        return {"block": True, "user_id": by} if by is not None else {"block": False}

    async def check_not_blocked(self, room_id: str) -> None:
        if await self.store.get_block(room_id) is not None:
            raise forbidden("This room has been blocked on this server")

    async def force_join(self, requester: Requester, room_id_or_alias: str,
                         user_id: str) -> str:
        """Join a local user to a room: directly if they may, else invited by
        the admin (who must then be in the room with power to invite)."""
        hs = self.hs
        if not hs.is_mine(user_id):
            raise MatrixError(400, "M_UNKNOWN", "This endpoint can only be used with local users")
        if await hs.stores.accounts.get_user(user_id) is None:
            raise not_found("User not found")
        room_id = await hs.membership.resolve_room(room_id_or_alias)
        await self.require(room_id)
        target = Requester(user_id, None, "")
        try:
            await hs.membership.update_membership(target, room_id, user_id, "join",
                                                  ratelimit=False)
        except MatrixError as e:
            if e.status != 403:
                raise
            await hs.membership.update_membership(requester, room_id, user_id, "invite",
                                                  ratelimit=False)
            await hs.membership.update_membership(target, room_id, user_id, "join",
                                                  ratelimit=False)
        return room_id

    async def make_room_admin(self, requester: Requester, room_id: str,
                              user_id: str) -> None:
        """Give ``user_id`` the room's highest power level, sent by the local
        member who has it (Synapse's rule: only if such a member exists)."""
        hs = self.hs
        await self.require(room_id)
        pl_event = await hs.stores.state.get_current_state_event(room_id, "m.room.power_levels")
        if pl_event is None:
            raise MatrixError(400, "M_UNKNOWN", "No power levels in room")
        content = dict(pl_event.content)
        users = dict(content.get("users", {}))
        levels: dict[str, float] = {uid: level for uid, level in users.items()
                                    if isinstance(level, int)}
        create = await hs.stores.state.get_current_state_event(room_id, "m.room.create")
        if create is not None and "creator" not in create.content:
            # Rooms whose creators are privileged (v12): they outrank any level.
            for creator in [create.sender, *create.content.get("additional_creators", [])]:
                levels[creator] = float("inf")
        local_admins: list[tuple[float, str]] = []
        for uid, level in levels.items():
            if not hs.is_mine(uid):
                continue
            member = await hs.stores.memberships.get_membership(room_id, uid)
            if member is not None and member.membership == "join":
                local_admins.append((level, uid))
        local_admins.sort(reverse=True)
        if not local_admins:
            raise MatrixError(400, "M_UNKNOWN", "No local admin user in room")
        _best, admin_id = local_admins[0]
        level = max([v for v in users.values() if isinstance(v, int)] + [100])
        membership = await hs.stores.memberships.get_membership(room_id, user_id)
        if membership is None or membership.membership != "join":
            join_rule = (await self.require(room_id))["join_rules"]
            if join_rule != "public":
                await hs.membership.update_membership(Requester(admin_id, None, ""), room_id,
                                                      user_id, "invite", ratelimit=False)
        users[user_id] = level
        content["users"] = users
        await hs.event_creation.send(admin_id, room_id, "m.room.power_levels", content,
                                     state_key="")

    # -- deleting a room -------------------------------------------------------------------
    async def start_delete(self, requester: Requester, room_id: str,
                           body: dict[str, Any]) -> str:
        self._check_delete_body(body)
        if not room_id.startswith("!"):
            raise invalid_param(f"{room_id} is not a legal room ID")
        # Only this process runs deletions (main): a job it is not running
        # was cut short by a restart and blocks nothing.
        running = [j for j in await self.store.get_jobs(room_id=room_id, kind="delete")
                   if j["status"] in ("scheduled", "active") and j["job_id"] in self._running]
        if running:
            raise MatrixError(400, "M_UNKNOWN", f"Room {room_id} is already being deleted")
        delete_id = secrets.token_urlsafe(12)
        await self.store.add_job(delete_id, "delete", room_id)
        self._running.add(delete_id)
        self._spawn(self._run_delete(delete_id, requester, room_id, body))
        return delete_id

    @staticmethod
    def _check_delete_body(body: dict[str, Any]) -> None:
        for key in ("block", "purge", "force_purge"):
            if key in body and not isinstance(body[key], bool):
                raise MatrixError(400, "M_BAD_JSON", f"Param '{key}' must be a boolean, if given")
        new_owner = body.get("new_room_user_id")
        if new_owner is not None and not isinstance(new_owner, str):
            raise MatrixError(400, "M_BAD_JSON", "new_room_user_id must be a string")

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_delete(self, delete_id: str, requester: Requester, room_id: str,
                          body: dict[str, Any]) -> None:
        self._running.add(delete_id)
        try:
            await self.store.update_job(delete_id, "active")
            try:
                result = await self.delete_room(requester, room_id, body)
            except MatrixError as e:
                await self.store.update_job(delete_id, "failed", error=e.message)
            except Exception as e:
                logger.exception("deleting room %s failed", room_id)
                await self.store.update_job(delete_id, "failed", error=str(e))
            else:
                await self.store.update_job(delete_id, "complete", result=result)
        finally:
            self._running.discard(delete_id)

    async def delete_room(self, requester: Requester, room_id: str,
                          body: dict[str, Any]) -> dict[str, Any]:
        """Shut the room down: block it if asked, make every local member
        leave (and join them to a new room if ``new_room_user_id``), remove
        its local aliases, then (``purge``, the default) remove its rows."""
        hs = self.hs
        if body.get("block"):
            await self.store.set_block(room_id, requester.user_id, True)
        known = await self.store.room_row(room_id) is not None
        result: dict[str, Any] = {"kicked_users": [], "failed_to_kick_users": [],
                                  "local_aliases": [], "new_room_id": None}
        if not known:
            return result
        new_room_id = None
        new_owner = body.get("new_room_user_id")
        if new_owner:
            new_room_id = await self._new_room(new_owner, body)
            result["new_room_id"] = new_room_id
        members = await hs.stores.memberships.get_members(room_id, ("join", "invite", "knock"))
        for member in members:
            user_id = member.user_id
            if not hs.is_mine(user_id) or user_id == new_owner:
                continue
            try:
                target = Requester(user_id, None, "")
                await hs.membership.update_membership(target, room_id, user_id, "leave",
                                                      ratelimit=False)
                if new_room_id is not None and new_owner:
                    await hs.membership.update_membership(Requester(new_owner, None, ""),
                                                          new_room_id, user_id, "invite",
                                                          ratelimit=False)
                    await hs.membership.update_membership(target, new_room_id, user_id,
                                                          "join", ratelimit=False)
                result["kicked_users"].append(user_id)
            except MatrixError:
                result["failed_to_kick_users"].append(user_id)
        if new_owner and hs.is_mine(new_owner):
            membership = await hs.stores.memberships.get_membership(room_id, new_owner)
            if membership is not None and membership.membership == "join":
                await hs.membership.update_membership(Requester(new_owner, None, ""), room_id,
                                                      new_owner, "leave", ratelimit=False)
        aliases = await hs.stores.rooms.get_aliases_for_room(room_id)
        for alias in aliases:
            await hs.stores.rooms.delete_alias(alias)
            if new_room_id is not None and new_owner:
                # The room's addresses lead its former members to the new room.
                await hs.stores.rooms.create_alias(alias, new_room_id, new_owner)
        result["local_aliases"] = aliases
        await hs.stores.rooms.set_room_public(room_id, False)
        if body.get("purge", True):
            await self.store.delete_room_rows(room_id)
            await self._invalidate_room(room_id)
        return result

    async def _new_room(self, owner: str, body: dict[str, Any]) -> str:
        hs = self.hs
        if not hs.is_mine(owner) or await hs.stores.accounts.get_user(owner) is None:
            raise MatrixError(400, "M_UNKNOWN", "User must be our own: " + owner)
        name = body.get("room_name") or "Content Violation Notification"
        message = body.get("message") or ("Sharing illegal content on this server is not "
                                          "permitted and rooms in violation will be blocked.")
        room_id, _alias = await hs.room_creation.create_room(
            Requester(owner, None, ""), {"preset": "public_chat", "name": name,
                                         "power_level_content_override": {"users_default": -10}})
        await hs.event_creation.send(owner, room_id, "m.room.message",
                                     {"msgtype": "m.text", "body": message})
        return room_id

    async def _invalidate_room(self, room_id: str) -> None:
        for cache in ROOM_CACHES:
            await self.hs.invalidate_cache(cache, [room_id])
        await self.hs.invalidate_cache("events", None)
        await self.hs.invalidate_cache("user_memberships", None)

    async def delete_status(self, *, room_id: str | None = None,
                            delete_id: str | None = None) -> list[dict[str, Any]]:
        jobs = await self.store.get_jobs(room_id=room_id, job_id=delete_id, kind="delete")
        out = []
        for job in jobs:
            entry: dict[str, Any] = {"delete_id": job["job_id"], "room_id": job["room_id"],
                                     "status": job["status"]}
            if job["error"]:
                entry["error"] = job["error"]
            entry["shutdown_room"] = job["result"] or {
                "kicked_users": [], "failed_to_kick_users": [], "local_aliases": [],
                "new_room_id": None}
            out.append(entry)
        return out

    # -- purging history -----------------------------------------------------------------
    async def start_purge(self, room_id: str, event_id: str | None,
                          body: dict[str, Any]) -> str:
        if await self.store.room_row(room_id) is None:
            raise not_found("Room not found")
        event_id = event_id or body.get("purge_up_to_event_id")
        if event_id is not None:
            found = await self.store.stream_ordering_of(event_id)
            if found is None or found[0] != room_id:
                raise MatrixError(400, "M_UNKNOWN", "Event is for wrong room.")
            before = found[1]
        elif isinstance(body.get("purge_up_to_ts"), int):
            ordering = await self.store.last_ordering_before_ts(room_id, body["purge_up_to_ts"])
            if ordering is None:
                raise MatrixError(404, "M_NOT_FOUND",
                                  "there is no event to be purged")
            before = ordering
        else:
            raise MatrixError(400, "M_MISSING_PARAM",
                              "must specify purge_up_to_event_id or purge_up_to_ts")
        delete_local = body.get("delete_local_events", False)
        if not isinstance(delete_local, bool):
            raise MatrixError(400, "M_BAD_JSON", "delete_local_events must be a boolean")
        # Synapse keeps local events as outliers unless delete_local_events,
        # out of every timeline all the same; with no outliers to keep them
        # as, we remove them either way (what clients see is the same).
        purge_id = secrets.token_urlsafe(12)
        await self.store.add_job(purge_id, "purge", room_id)
        self._spawn(self._run_purge(purge_id, room_id, before, None))
        return purge_id

    async def _run_purge(self, purge_id: str, room_id: str, before: int,
                         keep_local_of: str | None) -> None:
        await self.store.update_job(purge_id, "active")
        try:
            await self.store.purge_history(room_id, before, keep_local_of)
            await self._invalidate_room(room_id)
        except Exception as e:
            logger.exception("purging history of %s failed", room_id)
            await self.store.update_job(purge_id, "failed", error=str(e))
        else:
            await self.store.update_job(purge_id, "complete")

    async def purge_status(self, purge_id: str) -> dict[str, Any]:
        jobs = await self.store.get_jobs(job_id=purge_id, kind="purge")
        if not jobs:
            raise not_found(f"purge id '{purge_id}' not found")
        # Synapse's purge statuses are active/complete/failed: queued is active.
        status = "active" if jobs[0]["status"] == "scheduled" else jobs[0]["status"]
        out: dict[str, Any] = {"status": status}
        if jobs[0]["error"]:
            out["error"] = jobs[0]["error"]
        return out
