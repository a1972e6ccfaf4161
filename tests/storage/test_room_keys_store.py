"""The key backup store on both engines under concurrency: several processes of
a fleet may write one user's backup at once (the database is what keeps the
rules, not a process-local lock)."""

from __future__ import annotations

import asyncio

import pytest

from myelin.storage.engines import Database
from myelin.storage.stores.reports import ReportStore
from myelin.storage.stores.room_keys import RoomKey, RoomKeyStore, WrongVersion

USER = "@alice:test.localhost"
ROOM = "!r:test.localhost"


def key(first: int, forwarded: int = 0, verified: bool = False) -> RoomKey:
    return RoomKey(first_message_index=first, forwarded_count=forwarded, is_verified=verified,
                   session_data={"ciphertext": f"{first}-{forwarded}-{verified}"})


async def test_concurrent_uploads_keep_the_best_key(db: Database) -> None:
    store = RoomKeyStore(db)
    version = await store.create_version(USER, "m.megolm_backup.v1.curve25519-aes-sha2", {})
    candidates = [key(i % 7, i % 3) for i in range(20)] + [key(9, 9, verified=True)]
    await asyncio.gather(*(store.upload_keys(USER, version, [(ROOM, "s", k)])
                           for k in candidates))
    stored = (await store.get_keys(USER, version))[ROOM]["s"]
    assert stored == key(9, 9, verified=True)
    count, etag = await store.count_and_etag(USER, version)
    assert count == 1 and etag >= 1


async def test_concurrent_creates_get_distinct_versions(db: Database) -> None:
    store = RoomKeyStore(db)
    versions = await asyncio.gather(*(store.create_version(USER, "alg", {"n": i})
                                      for i in range(6)))
    assert sorted(versions) == list(range(1, 7))
    assert await store.current_version(USER) == 6


async def test_upload_to_superseded_or_deleted_version_fails(db: Database) -> None:
    store = RoomKeyStore(db)
    first = await store.create_version(USER, "alg", {})
    second = await store.create_version(USER, "alg", {})
    with pytest.raises(WrongVersion) as raised:
        await store.upload_keys(USER, first, [(ROOM, "s", key(0))])
    assert raised.value.current == second
    assert await store.delete_version(USER, second) is True
    assert await store.delete_version(USER, second) is False
    assert await store.delete_version(USER, 99) is None
    with pytest.raises(WrongVersion) as raised:
        await store.upload_keys(USER, second, [(ROOM, "s", key(0))])
    assert raised.value.current == first
    assert await store.get_keys(USER, first) == {}


async def test_reports_listed_for_the_admin_api(db: Database) -> None:
    store = ReportStore(db)
    ids = [await store.add_event_report(received_ts=1000 + i, room_id=ROOM, event_id=f"$e{i}",
                                        user_id=USER if i % 2 else "@bob:test.localhost",
                                        reason=f"r{i}", content={"reason": f"r{i}", "score": -i})
           for i in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    page, total = await store.list_event_reports(limit=2)
    assert total == 5 and [r.id for r in page] == ids[::-1][:2]
    page, total = await store.list_event_reports(start=1, limit=10, newest_first=False,
                                                 user_id=USER)
    assert total == 2 and [r.event_id for r in page] == ["$e3"]
    report = await store.get_event_report(ids[2])
    assert report is not None and report.to_json() == {
        "id": ids[2], "received_ts": 1002, "room_id": ROOM, "event_id": "$e2",
        "user_id": "@bob:test.localhost", "reason": "r2", "score": -2}
    assert await store.delete_event_report(ids[2]) is True
    assert await store.delete_event_report(ids[2]) is False
    assert await store.get_event_report(ids[2]) is None

    room_id = await store.add_room_report(received_ts=5, room_id=ROOM, user_id=USER,
                                          reason="")
    user_id = await store.add_user_report(received_ts=6, target_user_id="@spam:x",
                                          user_id=USER, reason="spam")
    rooms, _ = await store.list_room_reports()
    users, _ = await store.list_user_reports(target_user_id="@spam:x")
    assert [r.to_json() for r in rooms] == [{"id": room_id, "received_ts": 5, "room_id": ROOM,
                                             "user_id": USER, "reason": ""}]
    assert [u.id for u in users] == [user_id]
