"""Unread counts as matrix-nio sees them: a mention raises bob's notification
and highlight counts on the room, and his read marker clears them."""

from __future__ import annotations

from nio import (
    AsyncClient,
    JoinResponse,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomReadMarkersResponse,
    RoomSendResponse,
    SyncResponse,
)

from tests.clients.nio_support import logged_in_pair, ok
from tests.support.server import ServerProcess


async def counts(client: AsyncClient, room_id: str) -> tuple[int, int]:
    response = ok(await client.sync(timeout=0), SyncResponse)
    room = response.rooms.join[room_id]
    # nio keeps them on its room object too, from the same response.
    assert client.rooms[room_id].unread_notifications == \
        room.unread_notifications.notification_count
    return (room.unread_notifications.notification_count,
            room.unread_notifications.highlight_count)


async def test_nio_sees_unread_counts_rise_and_clear(server: ServerProcess) -> None:
    async with logged_in_pair(server) as (alice, bob):
        room_id = ok(await alice.room_create(name="counts"), RoomCreateResponse).room_id
        ok(await alice.room_invite(room_id, bob.user_id), RoomInviteResponse)
        ok(await bob.join(room_id), JoinResponse)
        ok(await bob.sync(timeout=0), SyncResponse)
        ok(await alice.room_send(room_id, "m.room.message",
                                 {"msgtype": "m.text", "body": "plain"}), RoomSendResponse)
        sent = ok(await alice.room_send(room_id, "m.room.message", {
            "msgtype": "m.text", "body": "look here",
            "m.mentions": {"user_ids": [bob.user_id]}}), RoomSendResponse)
        assert await counts(bob, room_id) == (2, 1)
        ok(await bob.room_read_markers(room_id, sent.event_id, sent.event_id),
           RoomReadMarkersResponse)
        assert await counts(bob, room_id) == (0, 0)
        # The sender's own messages never count for her.
        response = ok(await alice.sync(timeout=0), SyncResponse)
        assert response.rooms.join[room_id].unread_notifications.notification_count == 0
