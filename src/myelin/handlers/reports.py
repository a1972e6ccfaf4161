"""Reporting content to the server's admins: events, rooms and users.

What a reporter may learn is limited on purpose: an event report answers
the same 404 whether the event does not exist, is in another room, or the
reporter is not joined or may not see it; a report about an unknown local
user is accepted (200) and dropped, so reports cannot probe for accounts.
Rooms may be reported without being joined (spec, v1.13).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from myelin.domain import Requester, bad_json, invalid_param, missing_param, not_found

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

# Synapse's range for the (now unspecified, still sent by clients) score.
SCORE_RANGE = range(-100, 1)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _reason(body: dict[str, Any], *, required: bool) -> str | None:
    reason = body.get("reason")
    if reason is None:
        if required:
            raise missing_param("Missing reason")
        return None
    if not isinstance(reason, str):
        raise bad_json("reason must be a string")
    return reason


def _valid_user_id(user_id: str) -> bool:
    localpart, sep, server = user_id[1:].partition(":")
    return user_id.startswith("@") and bool(sep) and bool(localpart) and bool(server)


class ReportHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.reports

    async def report_event(self, requester: Requester, room_id: str, event_id: str,
                           body: dict[str, Any]) -> None:
        reason = _reason(body, required=False)
        score = body.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, int)
                                  or score not in SCORE_RANGE):
            raise invalid_param("score must be an integer in the range [-100, 0]")
        hidden = not_found("The event was not found or you are not joined to the room.")
        membership = await self.hs.stores.memberships.get_membership(room_id,
                                                                     requester.user_id)
        if membership is None or membership.membership != "join":
            raise hidden
        stored = await self.hs.stores.events.get_event(event_id)
        if stored is None or stored.event.room_id != room_id or \
                not await self.hs.visibility.can_see_event(requester.user_id, stored):
            raise hidden
        content = {k: v for k, v in (("reason", reason), ("score", score)) if v is not None}
        await self.store.add_event_report(received_ts=_now_ms(), room_id=room_id,
                                          event_id=event_id, user_id=requester.user_id,
                                          reason=reason, content=content)

    async def report_room(self, requester: Requester, room_id: str,
                          body: dict[str, Any]) -> None:
        reason = _reason(body, required=True)
        if await self.hs.stores.rooms.get_room_version(room_id) is None:
            raise not_found("The room was not found.")
        await self.store.add_room_report(received_ts=_now_ms(), room_id=room_id,
                                         user_id=requester.user_id, reason=reason)

    async def report_user(self, requester: Requester, user_id: str,
                          body: dict[str, Any]) -> None:
        reason = _reason(body, required=True)
        if not _valid_user_id(user_id):
            raise invalid_param(f"{user_id!r} is not a user ID")
        if self.hs.is_mine(user_id) and await self.hs.stores.accounts.get_user(user_id) is None:
            return  # the same answer as for a real user: do not reveal who exists
        await self.store.add_user_report(received_ts=_now_ms(), target_user_id=user_id,
                                         user_id=requester.user_id, reason=reason)
