"""Looking rooms and events up across rooms: ``/events/{eventId}`` (deprecated,
still served) and mutual rooms (``/v1/mutual_rooms``, also under the paths
clients used before it was stable)."""

from __future__ import annotations

from typing import Any

from myelin.domain import MatrixError, invalid_param, missing_param, not_found
from myelin.http.request import Request
from myelin.http.routing import LEGACY, PathPattern, RouteTable, client_path, client_v1_path

routes = RouteTable("client")

MUTUAL_ROOMS_BATCH = 100


@routes.get(client_path("/events/{eventId}", LEGACY))
async def get_event(request: Request) -> dict[str, Any]:
    requester = await request.requester()  # not on the spec's list for guests
    event_id = request.param("eventId")
    hs = request.hs
    stored = await hs.stores.events.get_event(event_id)
    if stored is None:
        raise not_found("Event not found.")
    try:
        stored = await hs.room_reads.get_event(requester, stored.event.room_id, event_id)
    except MatrixError as e:
        if e.status == 403:  # not allowed to see the room: the same as no such event
            raise not_found("Event not found.") from None
        raise
    return await hs.serializer.serialize_one(stored, user_id=requester.user_id,
                                             device_id=requester.device_id)


@routes.get(client_v1_path("/mutual_rooms"), client_v1_path("/user/mutual_rooms"),
            PathPattern("/_matrix/client", ("unstable",),
                        "/uk.half-shot.msc2666/user/mutual_rooms"))
async def mutual_rooms(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    user_id = request.query_str("user_id")
    if not user_id:
        raise missing_param("Missing user_id")
    localpart, sep, server = user_id[1:].partition(":")
    if not user_id.startswith("@") or not sep or not localpart or not server:
        raise invalid_param("The user ID provided was invalid")
    if user_id == requester.user_id:
        raise invalid_param("You cannot ask for the rooms you share with yourself")
    after = request.query_str("from")
    if after is not None and not after.startswith("!"):
        raise invalid_param("Invalid from token")
    memberships = request.hs.stores.memberships
    mine = {m.room_id for m in await memberships.get_rooms_for_user(requester.user_id)}
    theirs = {m.room_id for m in await memberships.get_rooms_for_user(user_id)}
    shared = sorted(mine & theirs)
    # The token is the last room id of the previous batch: stable under joins
    # and leaves elsewhere in the list.
    rest = [r for r in shared if after is None or r > after]
    batch = rest[:MUTUAL_ROOMS_BATCH]
    result: dict[str, Any] = {"joined": batch, "count": len(shared)}
    if len(rest) > len(batch):
        result["next_batch"] = batch[-1]
    return result
