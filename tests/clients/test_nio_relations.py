"""Relations, threads and spaces through matrix-nio, on both engines: nio's
relation and thread iterators page through everything, an edit comes back
bundled on the original, and nio reads a space's hierarchy."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from nio import (
    AsyncClient,
    JoinResponse,
    RoomCreateResponse,
    RoomGetEventResponse,
    RoomPutStateResponse,
    RoomSendResponse,
    SpaceGetHierarchyResponse,
)
from nio.api import RelationshipType, ThreadInclusion

from tests.clients.nio_support import logged_in_pair, ok
from tests.support.server import ServerProcess


@pytest.fixture
async def clients(server: ServerProcess) -> AsyncIterator[tuple[AsyncClient, AsyncClient]]:
    async with logged_in_pair(server) as pair:
        yield pair


async def send(client: AsyncClient, room: str, content: dict[str, object]) -> str:
    sent = ok(await client.room_send(room, "m.room.message", content), RoomSendResponse)
    return str(sent.event_id)


async def test_nio_relations_and_threads(clients: tuple[AsyncClient, AsyncClient]) -> None:
    alice, bob = clients
    room = ok(await alice.room_create(invite=[bob.user_id]), RoomCreateResponse).room_id
    ok(await bob.join(room), JoinResponse)
    root = await send(alice, room, {"msgtype": "m.text", "body": "root"})
    replies = [await send(bob if i % 2 else alice, room, {
        "msgtype": "m.text", "body": f"reply {i}",
        "m.relates_to": {"rel_type": "m.thread", "event_id": root}}) for i in range(7)]
    edit = await send(alice, room, {
        "msgtype": "m.text", "body": "* root, edited",
        "m.new_content": {"msgtype": "m.text", "body": "root, edited"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": root}})

    # nio follows next_batch with a small page size until the end.
    threaded = [e.event_id async for e in bob.room_get_event_relations(
        room, root, RelationshipType.thread, limit=2)]
    assert threaded == list(reversed(replies))
    everything = [e.event_id async for e in bob.room_get_event_relations(room, root, limit=3)]
    assert everything == [edit, *reversed(replies)]

    fetched = ok(await bob.room_get_event(room, root), RoomGetEventResponse).event
    relations = fetched.source["unsigned"]["m.relations"]
    assert relations["m.replace"]["event_id"] == edit
    assert relations["m.thread"]["count"] == 7
    assert relations["m.thread"]["latest_event"]["event_id"] == replies[-1]
    assert relations["m.thread"]["current_user_participated"] is True

    roots = [e.event_id async for e in bob.room_get_threads(room)]
    assert roots == [root]
    mine = [e.event_id async for e in alice.room_get_threads(
        room, ThreadInclusion.participated)]
    assert mine == [root]


async def test_nio_space_hierarchy(server: ServerProcess,
                                   clients: tuple[AsyncClient, AsyncClient]) -> None:
    alice, _ = clients
    space = ok(await alice.room_create(space=True, name="nio space"),
               RoomCreateResponse).room_id
    child = ok(await alice.room_create(name="nio child"), RoomCreateResponse).room_id
    ok(await alice.room_put_state(space, "m.space.child", {"via": [server.server_name]},
                                  state_key=child), RoomPutStateResponse)
    answer = ok(await alice.space_get_hierarchy(space), SpaceGetHierarchyResponse)
    assert [r["room_id"] for r in answer.rooms] == [space, child]
    assert answer.rooms[0]["room_type"] == "m.space"
    assert [s["state_key"] for s in answer.rooms[0]["children_state"]] == [child]
