"""Syncing through a real client library: two matrix-nio AsyncClients, on both engines.

Bob runs nio's own sync loop (``sync_forever``) with callbacks while alice
talks, types, sends receipts and to-device messages; bob must see each
message once, in sending order, and the ephemeral events and to-device
messages as nio parses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from nio import (
    AsyncClient,
    JoinResponse,
    MatrixRoom,
    ReceiptEvent,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomMessageText,
    RoomSendResponse,
    RoomTypingResponse,
    SyncResponse,
    ToDeviceMessage,
    ToDeviceResponse,
    TypingNoticeEvent,
    UnknownToDeviceEvent,
    UpdateReceiptMarkerResponse,
)

from tests.clients.nio_support import logged_in_pair, ok
from tests.support.server import ServerProcess


@pytest.fixture
async def clients(server: ServerProcess) -> AsyncIterator[tuple[AsyncClient, AsyncClient]]:
    async with logged_in_pair(server) as pair:
        yield pair


async def shared_room(alice: AsyncClient, bob: AsyncClient) -> str:
    room_id = ok(await alice.room_create(name="nio sync"), RoomCreateResponse).room_id
    ok(await alice.room_invite(room_id, bob.user_id), RoomInviteResponse)
    ok(await bob.join(room_id), JoinResponse)
    return str(room_id)


async def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def syncing(client: AsyncClient) -> AsyncIterator[None]:
    """Run nio's sync loop in the background (long-polls of 3 s)."""
    first = asyncio.Event()

    async def mark(_: SyncResponse) -> None:
        first.set()

    client.add_response_callback(mark, SyncResponse)
    task = asyncio.create_task(client.sync_forever(timeout=3000))
    try:
        await asyncio.wait_for(first.wait(), 20)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_nio_sync_loop_gets_messages_in_order_exactly_once(
        clients: tuple[AsyncClient, AsyncClient]) -> None:
    alice, bob = clients
    room_id = await shared_room(alice, bob)
    received: list[tuple[str, str]] = []

    def on_message(room: MatrixRoom, event: RoomMessageText) -> None:
        if room.room_id == room_id:
            received.append((event.event_id, event.body))

    bob.add_event_callback(on_message, RoomMessageText)
    sent: list[tuple[str, str]] = []
    before = await alice.room_send(room_id, "m.room.message",
                                   {"msgtype": "m.text", "body": "before bob syncs"})
    sent.append((ok(before, RoomSendResponse).event_id, "before bob syncs"))

    async with syncing(bob):
        # Bursts while bob is long-polling, with pauses in between.
        for burst in range(4):
            for i in range(3):
                body = f"burst {burst} message {i}"
                response = await alice.room_send(room_id, "m.room.message",
                                                 {"msgtype": "m.text", "body": body})
                sent.append((ok(response, RoomSendResponse).event_id, body))
            await asyncio.sleep(0.3 * burst)
        await until(lambda: len(received) >= len(sent), 30, "bob receives every message")
        await asyncio.sleep(1.5)  # keep syncing: duplicates would show up now

    assert received == sent
    # nio's room model agrees.
    room = bob.rooms[room_id]
    assert alice.user_id in room.users and bob.user_id in room.users
    assert room.name == "nio sync"


async def test_nio_typing_and_receipt_callbacks(
        clients: tuple[AsyncClient, AsyncClient]) -> None:
    alice, bob = clients
    room_id = await shared_room(alice, bob)
    typing_seen: list[list[str]] = []
    receipts_seen: list[tuple[str, str, str]] = []

    def on_typing(room: MatrixRoom, event: TypingNoticeEvent) -> None:
        if room.room_id == room_id:
            typing_seen.append(sorted(event.users))

    def on_receipt(room: MatrixRoom, event: ReceiptEvent) -> None:
        if room.room_id == room_id:
            receipts_seen.extend((r.event_id, r.receipt_type, r.user_id) for r in event.receipts)

    bob.add_ephemeral_callback(on_typing, TypingNoticeEvent)
    bob.add_ephemeral_callback(on_receipt, ReceiptEvent)
    sent = ok(await bob.room_send(room_id, "m.room.message",
                                   {"msgtype": "m.text", "body": "read this, alice"}),
               RoomSendResponse)

    async with syncing(bob):
        ok(await alice.room_typing(room_id, True, timeout=20000), RoomTypingResponse)
        await until(lambda: [alice.user_id] in typing_seen, 15, "bob sees alice typing")
        assert alice.user_id in bob.rooms[room_id].typing_users
        ok(await alice.room_typing(room_id, False), RoomTypingResponse)
        await until(lambda: typing_seen[-1] == [], 15, "bob sees alice stop typing")

        ok(await alice.update_receipt_marker(room_id, sent.event_id),
            UpdateReceiptMarkerResponse)
        await until(lambda: (sent.event_id, "m.read", alice.user_id) in receipts_seen, 15,
                    "bob sees alice's read receipt")
        await asyncio.sleep(1.0)

    assert receipts_seen.count((sent.event_id, "m.read", alice.user_id)) == 1
    assert [alice.user_id] in typing_seen and typing_seen[-1] == []


async def test_nio_to_device_delivered_once(clients: tuple[AsyncClient, AsyncClient]) -> None:
    alice, bob = clients
    got: list[tuple[str, dict[str, Any]]] = []

    def on_to_device(event: UnknownToDeviceEvent) -> None:
        got.append((event.sender, event.source.get("content", {})))

    bob.add_to_device_callback(on_to_device, UnknownToDeviceEvent)
    async with syncing(bob):
        for n in (1, 2):
            message = ToDeviceMessage("org.example.nio", bob.user_id, bob.device_id, {"n": n})
            ok(await alice.to_device(message, tx_id=f"nio-{n}"), ToDeviceResponse)
        # A retried transaction is not delivered twice.
        message = ToDeviceMessage("org.example.nio", bob.user_id, bob.device_id, {"n": 1})
        ok(await alice.to_device(message, tx_id="nio-1"), ToDeviceResponse)
        await until(lambda: len(got) >= 2, 15, "bob receives the to-device messages")
        await asyncio.sleep(1.5)

    assert got == [(alice.user_id, {"n": 1}), (alice.user_id, {"n": 2})]
