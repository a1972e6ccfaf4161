"""HTTP pushers: what ``POST /_matrix/push/v1/notify`` carries, and its delivery.

One :class:`HttpPusher` per pusher of kind ``http`` (run by the pool in
``push/pool.py``). It reads the user's push actions after the pusher's
``last_stream_ordering``, in order, up to the events stream's readable
position (below it every event is committed), and posts one notification
per action whose actions include ``notify``. The position advances only
after the gateway answered 2xx, so a restart neither repeats nor skips a
notification. A failing gateway is retried with exponential backoff (1 s
doubling to an hour); an action still failing after a day is skipped, as
Synapse does, so one dead gateway cannot hold a pusher forever. A pushkey
the gateway lists in ``rejected`` removes the pusher.

When a read receipt changes the badge (the unread count), a badge-only
notification (``counts`` and ``devices``, no event) is sent.

The payload follows the push gateway spec: ``event_id_only`` (``data.format``)
sends only ``event_id``, ``room_id``, ``counts``, ``prio`` and ``devices``;
the full format adds type, sender, its display name, the room's name and
alias, the content (``push.include_content``) and, for member events,
``membership`` and ``user_is_target``. ``prio`` is ``high`` when the
notification makes a sound or highlights, or the event is encrypted (its
effect unknown), else ``low`` (Synapse's rule). ``devices[0].data`` is the
pusher's data minus ``url``; ``tweaks`` come from the ``set_tweak`` actions.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

from myelin.push.pool import PusherGone, PusherWorker

if TYPE_CHECKING:
    from myelin.events.event import Event
    from myelin.federation.client import IpFilter
    from myelin.storage.stores.push import PushAction, Pusher

logger = logging.getLogger(__name__)

INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 3600.0
GIVE_UP_AFTER_S = 24 * 3600.0
# Actions read per query while catching up.
BATCH = 50


def tweaks_of(actions: Sequence[Any]) -> dict[str, Any]:
    """The tweaks a rule's actions set (``set_tweak`` without ``value`` is true)."""
    tweaks: dict[str, Any] = {}
    for action in actions:
        if isinstance(action, Mapping) and isinstance(action.get("set_tweak"), str):
            tweaks[action["set_tweak"]] = action.get("value", True)
    return tweaks


def notifies(actions: Sequence[Any]) -> bool:
    return "notify" in actions or "coalesce" in actions


def priority(event_type: str, tweaks: Mapping[str, Any]) -> str:
    if event_type == "m.room.encrypted" or tweaks.get("highlight") or tweaks.get("sound"):
        return "high"
    return "low"


def device_of(pusher: Pusher, tweaks: Mapping[str, Any]) -> dict[str, Any]:
    return {"app_id": pusher.app_id, "pushkey": pusher.pushkey,
            "pushkey_ts": pusher.created_ts // 1000,
            "data": {k: v for k, v in pusher.data.items() if k != "url"},
            "tweaks": dict(tweaks)}


def build_notification(pusher: Pusher, event: Event, actions: Sequence[Any], badge: int,
                       *, room_name: str | None = None, room_alias: str | None = None,
                       sender_display_name: str | None = None,
                       include_content: bool = True) -> dict[str, Any]:
    """The body of one ``/notify`` for ``event``."""
    tweaks = tweaks_of(actions)
    note: dict[str, Any] = {
        "event_id": event.event_id, "room_id": event.room_id,
        "counts": {"unread": badge}, "prio": priority(event.type, tweaks),
        "devices": [device_of(pusher, tweaks)]}
    if pusher.data.get("format") == "event_id_only":
        return {"notification": note}
    # Synapse's legacy name for event_id, which clients of old gateways read.
    note["id"] = event.event_id
    note["type"] = event.type
    note["sender"] = event.sender
    if sender_display_name is not None:
        note["sender_display_name"] = sender_display_name
    # A room without a name is called by its alias (as clients show it).
    if room_name is not None or room_alias is not None:
        note["room_name"] = room_name if room_name is not None else room_alias
    if room_alias is not None:
        note["room_alias"] = room_alias
    if include_content and event.content:
        note["content"] = dict(event.content)
    if event.type == "m.room.member" and event.state_key is not None:
        note["membership"] = event.content.get("membership")
        note["user_is_target"] = event.state_key == pusher.user_id
    return {"notification": note}


def build_badge(pusher: Pusher, badge: int) -> dict[str, Any]:
    """A badge-only notification: no event, the new unread count."""
    return {"notification": {"counts": {"unread": badge},
                             "devices": [device_of(pusher, {})]}}


class HttpPusher(PusherWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_badge: int | None = None

    async def process(self) -> None:
        actions_store = self.hs.stores.push_actions
        while True:
            upto = self.hs.streams.view.position("events")
            actions = [a for a in await actions_store.get_for_user(
                self.pusher.user_id, after=self.pusher.last_stream_ordering, limit=BATCH)
                if a.stream_ordering <= upto]
            if not actions:
                break
            for action in actions:
                if notifies(action.actions):
                    await self._with_retries(self._notify, action)
                await self.advance(action.stream_ordering)
        if self.badge_wanted:
            self.badge_wanted = False
            badge = await self.pool.badge_count(self.pusher.user_id)
            if badge != self.last_badge:
                await self._with_retries(self._post_badge, badge)

    async def _with_retries(self, attempt: Callable[[Any], Awaitable[None]], arg: Any) -> None:
        backoff = INITIAL_BACKOFF_S
        first_failure: float | None = None
        while True:
            try:
                await attempt(arg)
                return
            except (PusherGone, asyncio.CancelledError):
                raise
            except Exception as e:
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                if now - first_failure >= GIVE_UP_AFTER_S:
                    logger.warning("pusher %s/%s: giving up on a notification after %ds: %s",
                                   self.pusher.user_id, self.pusher.app_id,
                                   int(now - first_failure), e)
                    return
                logger.info("pusher %s/%s: push failed (%s); retrying in %ds",
                            self.pusher.user_id, self.pusher.app_id, e, int(backoff))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                # The pusher may have been removed or changed meanwhile.
                await self.reload()

    async def _notify(self, action: PushAction) -> None:
        stored = await self.hs.stores.events.get_event(action.event_id)
        if stored is None:
            return
        event = stored.event
        badge = await self.pool.badge_count(self.pusher.user_id)
        name, alias, sender_name = await self.pool.room_labels(event)
        body = build_notification(self.pusher, event, action.actions, badge, room_name=name,
                                  room_alias=alias, sender_display_name=sender_name,
                                  include_content=self.hs.config.push.include_content)
        await self._post(body, badge)

    async def _post_badge(self, badge: int) -> None:
        await self._post(build_badge(self.pusher, badge), badge)

    async def _post(self, body: dict[str, Any], badge: int) -> None:
        url = self.pusher.data.get("url")
        if not isinstance(url, str):
            raise PusherGone()
        if literal_host_blocked(url, self.pool.ip_filter):
            raise RuntimeError(f"{url} is in ip_range_blocklist")
        async with self.pool.http.post(url, json=body) as response:
            if response.status // 100 != 2:
                raise RuntimeError(f"push gateway answered {response.status}")
            try:
                answer = await response.json(content_type=None)
            except ValueError:
                answer = {}
        self.last_badge = badge
        rejected = answer.get("rejected") if isinstance(answer, dict) else None
        if isinstance(rejected, list) and self.pusher.pushkey in rejected:
            logger.info("pusher %s/%s: the gateway rejected the pushkey; removing it",
                        self.pusher.user_id, self.pusher.app_id)
            await self.pool.remove(self.pusher)
            raise PusherGone()


def make_session(ip_filter: IpFilter, insecure_tls: bool = False) -> aiohttp.ClientSession:
    """The pool's HTTP client: push gateways' names resolve only to allowed
    addresses (``ip_range_blocklist``, as Synapse applies it to pushers)."""
    from myelin.federation.client import BlocklistResolver

    connector = aiohttp.TCPConnector(resolver=BlocklistResolver(ip_filter),
                                     ssl=False if insecure_tls else True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30),
                                 headers={"User-Agent": "Myelin push"})


def literal_host_blocked(url: str, ip_filter: IpFilter) -> bool:
    """An IP-literal URL the resolver never sees, checked here."""
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return not ip_filter.allowed(host)
