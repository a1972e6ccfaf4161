"""The notifier that wakes long-polling requests: by room, by user, and never too late."""

from __future__ import annotations

import asyncio
import time

from myelin.replication.notifier import Notifier

ALICE, BOB = "@alice:test", "@bob:test"
ROOM1, ROOM2 = "!one:test", "!two:test"


async def test_listener_registered_before_an_update_sees_it() -> None:
    """The race /sync relies on: update lands after listen() but before wait()."""
    notifier = Notifier()
    with notifier.listen(ALICE, [ROOM1]) as listener:
        notifier.notify(rooms=[ROOM1])  # e.g. while the request computes its answer
        start = time.monotonic()
        assert await listener.wait(5) is True
        assert time.monotonic() - start < 1
        assert listener.woken


async def test_wakes_by_room() -> None:
    notifier = Notifier()
    in_room1 = notifier.listen(ALICE, [ROOM1])
    in_room2 = notifier.listen(BOB, [ROOM2])
    waiter = asyncio.create_task(in_room1.wait(10))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    notifier.notify(rooms=[ROOM1])
    assert await asyncio.wait_for(waiter, 2) is True
    assert not in_room2.woken
    assert await in_room2.wait(0.05) is False


async def test_wakes_by_user() -> None:
    notifier = Notifier()
    alice = notifier.listen(ALICE, [ROOM1])
    bob = notifier.listen(BOB, [ROOM1])
    notifier.notify(users=[BOB])
    assert bob.woken and not alice.woken
    assert await bob.wait(1) is True
    # A user's notification reaches all of that user's waiting requests (devices).
    alice2 = notifier.listen(ALICE, [])
    notifier.notify(users=[ALICE])
    assert alice.woken and alice2.woken


async def test_unrelated_updates_do_not_wake() -> None:
    notifier = Notifier()
    listener = notifier.listen(ALICE, [ROOM1])
    notifier.notify(rooms=[ROOM2], users=[BOB])
    notifier.notify()
    assert not listener.woken


async def test_wait_times_out() -> None:
    notifier = Notifier()
    listener = notifier.listen(ALICE, [ROOM1])
    start = time.monotonic()
    assert await listener.wait(0.3) is False
    assert time.monotonic() - start >= 0.25
    assert await listener.wait(0) is False


async def test_close_unregisters_and_keeps_others() -> None:
    notifier = Notifier()
    first = notifier.listen(ALICE, [ROOM1, ROOM2])
    with notifier.listen(BOB, [ROOM1]) as second:
        assert notifier.waiting == 2
    assert notifier.waiting == 1
    notifier.notify(rooms=[ROOM1], users=[BOB])
    assert first.woken and not second.woken  # closed listeners are not woken
    first.close()
    first.close()  # closing twice is harmless
    assert notifier.waiting == 0
    assert not notifier._by_room and not notifier._by_user  # nothing leaks
    notifier.notify(rooms=[ROOM1, ROOM2], users=[ALICE, BOB])


async def test_notify_all_and_shutdown() -> None:
    notifier = Notifier()
    listeners = [notifier.listen(ALICE, [ROOM1]), notifier.listen(BOB, [])]
    notifier.notify_all()
    assert all(lst.woken for lst in listeners)

    notifier = Notifier()
    waiting = notifier.listen(ALICE, [ROOM1])
    task = asyncio.create_task(waiting.wait(30))
    await asyncio.sleep(0.01)
    notifier.shutdown()
    assert await asyncio.wait_for(task, 2) is True
    # Requests that start waiting during shutdown answer at once.
    late = notifier.listen(BOB, [ROOM2])
    assert late.woken and await late.wait(30) is True


async def test_many_waiters_in_one_room_all_wake() -> None:
    notifier = Notifier()
    listeners = [notifier.listen(f"@u{i}:test", [ROOM1]) for i in range(50)]
    tasks = [asyncio.create_task(lst.wait(10)) for lst in listeners]
    await asyncio.sleep(0.01)
    notifier.notify(rooms=[ROOM1])
    assert all(await asyncio.wait_for(asyncio.gather(*tasks), 2))
