"""Stream position generators and ``updates_since``, on both engines."""

from __future__ import annotations

import asyncio

from myelin.replication.stream_defs import AccountDataStream, ToDeviceStream
from myelin.storage.engines import Database
from myelin.storage.id_generators import StreamIdGenerator
from myelin.storage.stores.account_data import AccountDataStore
from myelin.storage.stores.to_device import ToDeviceStore


def _generator(db: Database, name: str = "account_data") -> StreamIdGenerator:
    return StreamIdGenerator(db, name, table="account_data", column="stream_id")


async def test_position_is_only_current_once_lower_positions_committed(db: Database) -> None:
    gen = _generator(db)
    await gen.setup()
    announced: list[int] = []
    gen.add_listener(lambda _prev, new, _rows: announced.append(new))
    first_allocated = asyncio.Event()
    release_first = asyncio.Event()

    async def slow_writer() -> None:
        async with gen.transaction() as ptxn:
            await ptxn.next_position()
            first_allocated.set()
            await release_first.wait()

    slow = asyncio.create_task(slow_writer())
    await first_allocated.wait()
    if db.engine == "sqlite":
        # SQLite has one writer connection: the second transaction queues,
        # so there is never a gap to hide.
        release_first.set()
        await slow
        async with gen.transaction() as ptxn:
            await ptxn.next_position()
        assert gen.current_position == 2
        assert announced == [1, 2]
        return
    async with gen.transaction() as ptxn:
        second = await ptxn.next_position()
    # Position 2 committed while 1 is still in flight: readers must not see 2 yet.
    assert second == 2
    assert gen.current_position == 0
    release_first.set()
    await slow
    assert gen.current_position == 2
    assert announced == [2]


async def test_rolled_back_positions_do_not_block_the_stream(db: Database) -> None:
    gen = _generator(db)
    await gen.setup()
    try:
        async with gen.transaction() as ptxn:
            await ptxn.next_position()
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    async with gen.transaction() as ptxn:
        await ptxn.next_position()
    assert gen.current_position == 2


async def test_positions_survive_a_restart(db: Database) -> None:
    gen = _generator(db)
    await gen.setup()
    store = AccountDataStore(db, gen, "master")
    await store.put("@a:hs", "", "m.test", {"n": 1})
    await store.put("@a:hs", "", "m.other", {"n": 2})
    restarted = _generator(db)
    await restarted.setup()
    assert restarted.current_position == gen.current_position == 2
    again = AccountDataStore(db, restarted, "master")
    assert await again.put("@a:hs", "", "m.third", {}) == 3


async def test_updates_since_serves_live_and_catch_up_reads(db: Database) -> None:
    gen = _generator(db)
    await gen.setup()
    store = AccountDataStore(db, gen, "master")
    for index in range(5):
        await store.put("@a:hs", "", f"m.type{index}", {"i": index})
    stream = AccountDataStream(db)
    rows, upto, limited = await stream.updates_since("master", 0, 5, limit=100)
    assert [pos for pos, _ in rows] == [1, 2, 3, 4, 5] and upto == 5 and not limited
    assert rows[0][1].data_type == "m.type0"
    rows, upto, limited = await stream.updates_since("master", 0, 5, limit=2)
    assert [pos for pos, _ in rows] == [1, 2] and upto == 2 and limited
    rows, upto, _ = await stream.updates_since("master", upto, 5, limit=2)
    assert [pos for pos, _ in rows] == [3, 4]
    # Another writer's rows are not this writer's updates.
    assert (await stream.updates_since("worker1", 0, 5))[0] == []


async def test_updates_since_never_splits_one_position(db: Database) -> None:
    gen = StreamIdGenerator(db, "to_device", table="device_inbox", column="stream_id")
    await gen.setup()
    store = ToDeviceStore(db, gen, "master")
    await store.add_messages("@s:hs", "DEV", None, [("@u:hs", f"D{i}", {"i": i})
                                                     for i in range(3)])
    await store.add_messages("@s:hs", "DEV", None, [("@u:hs", "D0", {"i": 9})])
    rows, upto, limited = await ToDeviceStream(db).updates_since("master", 0, 2, limit=2)
    assert limited and upto == 1
    assert [pos for pos, _ in rows] == [1, 1, 1]
