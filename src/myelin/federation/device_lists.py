"""Device lists of users on other servers, cached and kept fresh by their EDUs.

A remote user's devices (and public cross-signing keys) are fetched with
``/user/devices`` the first time a local user needs them, and cached while
we share a room with that user. Their server then sends an
``m.device_list_update`` per change: one whose ``prev_id`` we have all seen
(every id at or below the position we hold) is applied as it is; one that
refers to an update we never got means we lost one, so the whole list is
fetched again. Each change applied is a ``device_lists`` stream row for the
remote user, which is how local users' ``/keys/changes`` and sync
``device_lists.changed`` learn of it. Once no local user shares a room with
the remote user any more, the cache is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from myelin.domain import server_of
from myelin.federation.client import FederationError, FederationUnreachable
from myelin.storage.stores.remote_devices import RemoteDevice, RemoteDeviceList

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer
    from myelin.storage.stream_rows import EventsRow

logger = logging.getLogger(__name__)

CROSS_SIGNING_FIELDS = {"master_key": "master", "self_signing_key": "self_signing"}


def _now() -> int:
    return int(time.time() * 1000)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_devices(devices: Any) -> list[RemoteDevice]:
    """The devices of a ``/user/devices`` answer; malformed entries are skipped.
    Device keys are kept as their server sent them: clients check the user,
    device and signatures in them themselves (as they must for any server)."""
    out = []
    for device in devices if isinstance(devices, list) else []:
        if not isinstance(device, dict) or not isinstance(device.get("device_id"), str):
            continue
        keys = device.get("keys")
        if not isinstance(keys, dict):
            keys = None
        name = device.get("device_display_name")
        out.append(RemoteDevice(device["device_id"], name if isinstance(name, str) else None,
                                keys))
    return out


def parse_cross_signing(user_id: str, body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for field, key_type in CROSS_SIGNING_FIELDS.items():
        key = body.get(field)
        if isinstance(key, dict) and key.get("user_id") == user_id:
            out[key_type] = key
    return out


def update_applies(stored: int, stream_id: int, prev_ids: Sequence[int]) -> bool | None:
    """Whether an ``m.device_list_update`` can be applied to a list held at
    position ``stored``: True (apply it), None (we have it already: ignore),
    False (an update before it was lost: resync)."""
    if stream_id <= stored:
        return None
    # The first update of a sequence has no prev_id: we cannot tell what we
    # missed before it, so only a fresh snapshot is safe.
    if not prev_ids:
        return False
    return all(p <= stored for p in prev_ids)


def as_devices_response(cached: RemoteDeviceList) -> dict[str, Any]:
    """A cached list in the shape of a ``/user/devices`` answer."""
    devices = []
    for device in cached.devices:
        entry: dict[str, Any] = {"device_id": device.device_id}
        if device.keys is not None:
            entry["keys"] = device.keys
        if device.display_name is not None:
            entry["device_display_name"] = device.display_name
        devices.append(entry)
    out: dict[str, Any] = {"user_id": cached.user_id, "stream_id": cached.stream_id,
                           "devices": devices}
    for field, key_type in CROSS_SIGNING_FIELDS.items():
        if key_type in cached.cross_signing:
            out[field] = cached.cross_signing[key_type]
    return out


class RemoteDeviceLists:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.remote_devices
        self._resyncs: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def shares_room(self, user_id: str) -> bool:
        return await self.store.shares_room_with_local_user(user_id, self.hs.server_name)

    # -- EDUs --------------------------------------------------------------------
    async def on_device_list_update(self, origin: str, content: dict[str, Any]) -> None:
        user_id = content.get("user_id")
        device_id = content.get("device_id")
        stream_id = content.get("stream_id")
        if not isinstance(user_id, str) or server_of(user_id) != origin or \
                not isinstance(device_id, str) or not isinstance(stream_id, int) \
                or isinstance(stream_id, bool):
            logger.info("ignoring a malformed m.device_list_update from %s", origin)
            return
        prev = content.get("prev_id") or []
        prev_ids = [p for p in prev if _is_int(p)] if isinstance(prev, list) else []
        if not await self.shares_room(user_id):
            return  # the spec: only for users we share a room with
        position = await self.store.get_list_position(user_id)
        if position is None or position[1]:
            self._resync_later(user_id)
            return
        verdict = update_applies(position[0], stream_id, prev_ids)
        if verdict is None:
            return
        if verdict is False:
            logger.info("device list of %s: update %s refers to %s, we hold %s: resyncing",
                        user_id, stream_id, prev_ids, position[0])
            self._resync_later(user_id)
            return
        device: RemoteDevice | None = None
        if content.get("deleted") is not True:
            keys = content.get("keys")
            if not isinstance(keys, dict):
                keys = None
            name = content.get("device_display_name")
            device = RemoteDevice(device_id, name if isinstance(name, str) else None, keys)
        if await self.store.apply_update(user_id, stream_id, device_id, device, _now()):
            await self.hs.devices.notify_device_change(user_id, device_id)

    async def on_signing_key_update(self, origin: str, content: dict[str, Any]) -> None:
        user_id = content.get("user_id")
        if not isinstance(user_id, str) or server_of(user_id) != origin:
            logger.info("ignoring a malformed m.signing_key_update from %s", origin)
            return
        if not await self.shares_room(user_id):
            return
        keys = parse_cross_signing(user_id, content)
        if not keys:
            return
        # Not cached yet: nothing to update, the next query fetches it all;
        # local users are told either way, so that they do query.
        if await self.store.get_list_position(user_id) is not None:
            await self.store.set_cross_signing_keys(user_id, keys)
        await self.hs.devices.notify_device_change(user_id, "")

    # -- reads -------------------------------------------------------------------
    async def get_devices(self, user_id: str) -> dict[str, Any]:
        """The user's devices as ``/user/devices`` answers them: from the cache
        when it is fresh, else from their server (and cached if we share a
        room). A stale cache is better than nothing when the server is down."""
        cached = await self.store.get_list(user_id)
        if cached is not None and not cached.resync_needed:
            return as_devices_response(cached)
        try:
            return await self.resync(user_id)
        except (FederationError, FederationUnreachable):
            if cached is not None and cached.devices:
                return as_devices_response(cached)
            raise

    async def resync(self, user_id: str) -> dict[str, Any]:
        """Fetch the whole list from the user's server: one fetch per user at
        a time, run as its own task so that a caller who stops waiting (a
        client's timeout) does not stop the cache being filled."""
        task = self._resyncs.get(user_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._resync(user_id))
            self._resyncs[user_id] = task
            task.add_done_callback(lambda done: self._resync_done(user_id, done))
        return await asyncio.shield(task)

    def _resync_done(self, user_id: str, task: asyncio.Task[dict[str, Any]]) -> None:
        self._resyncs.pop(user_id, None)
        if not task.cancelled():
            task.exception()  # seen here even if every caller stopped waiting

    async def _resync(self, user_id: str) -> dict[str, Any]:
        try:
            answer = await self.hs.federation_queries.user_devices(user_id)
        except (FederationError, FederationUnreachable):
            if await self.store.get_list_position(user_id) is not None:
                await self.store.mark_resync_needed(user_id, _now())
            raise
        stream_id = answer.get("stream_id")
        devices = parse_devices(answer.get("devices"))
        cross_signing = parse_cross_signing(user_id, answer)
        response = {"user_id": user_id,
                    "stream_id": stream_id if _is_int(stream_id) else 0,
                    "devices": [d for d in answer.get("devices") or []
                                if isinstance(d, dict) and isinstance(d.get("device_id"), str)],
                    **{f: k for f, k in answer.items() if f in CROSS_SIGNING_FIELDS
                       and CROSS_SIGNING_FIELDS[f] in cross_signing}}
        if await self.shares_room(user_id):
            await self.store.replace_list(user_id, response["stream_id"], devices,
                                          cross_signing, _now())
            await self.hs.devices.notify_device_change(user_id, "")
        return response

    def _resync_later(self, user_id: str) -> None:
        """Resync in the background: the transaction that brought the EDU is
        not held up by a request back to its server."""
        self._spawn(self._resync_quietly(user_id))

    async def _resync_quietly(self, user_id: str) -> None:
        try:
            await self.resync(user_id)
        except (FederationError, FederationUnreachable) as e:
            logger.info("cannot resync the device list of %s: %s", user_id, e)
        except Exception:
            logger.exception("resyncing the device list of %s failed", user_id)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- forgetting ----------------------------------------------------------------
    def on_events_rows(self, writer: str, rows: Sequence[tuple[int, EventsRow]]) -> None:
        """Leaves and bans may end the last room we share with a remote user:
        check (in the background) and drop their cached list if so."""
        rooms = {r.room_id for _, r in rows
                 if r.membership is not None and r.membership not in ("join", "invite")}
        if not rooms:
            return
        self._spawn(self._forget_strangers(rooms))

    async def _forget_strangers(self, room_ids: set[str]) -> None:
        try:
            candidates: set[str] = set()
            for room_id in room_ids:
                members = await self.hs.stores.memberships.get_members(
                    room_id, ("join", "invite", "leave", "ban", "knock"))
                candidates.update(m.user_id for m in members
                                  if not self.hs.is_mine(m.user_id))
            cached = await self.store.cached_users(sorted(candidates))
            gone = [u for u in sorted(cached) if not await self.shares_room(u)]
            if gone:
                await self.store.forget(gone)
                logger.info("forgot the device lists of %d remote users", len(gone))
        except Exception:
            logger.exception("dropping device lists of departed users failed")

    async def stop(self) -> None:
        tasks = [*self._background, *self._resyncs.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
