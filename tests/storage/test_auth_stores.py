"""The threepid and registration-token stores on both engines: what the admin
API (a later issue) will call."""

from __future__ import annotations

from myelin.storage.engines import Database
from myelin.storage.stores.registration_tokens import RegistrationTokenStore
from myelin.storage.stores.threepids import ThreepidStore


async def test_threepids(db: Database) -> None:
    store = ThreepidStore(db)
    assert await store.add_threepid("@a:x", "email", "A@Example.org", validated_at=1,
                                    added_at=2)
    assert await store.add_threepid("@a:x", "msisdn", "447700900000")
    # One address, one user.
    assert not await store.add_threepid("@b:x", "email", "a@example.org")
    assert await store.user_by_threepid("email", "a@EXAMPLE.org") == "@a:x"
    assert await store.user_by_threepid("email", "nobody@example.org") is None
    listed = await store.get_threepids("@a:x")
    assert (listed[0].medium, listed[0].address) == ("email", "a@example.org")
    assert listed[0].to_json() == {"medium": "email", "address": "a@example.org",
                                   "validated_at": 1, "added_at": 2}
    assert await store.get_threepids("@b:x") == []
    assert not await store.remove_threepid("@b:x", "email", "a@example.org")
    assert await store.remove_threepid("@a:x", "email", "a@example.org")
    assert [t.medium for t in await store.get_threepids("@a:x")] == ["msisdn"]
    await store.remove_all_threepids("@a:x")
    assert await store.get_threepids("@a:x") == []


async def test_registration_tokens(db: Database) -> None:
    store = RegistrationTokenStore(db)
    once = await store.create_token("once", uses_allowed=1)
    assert once is not None and once.to_json() == {
        "token": "once", "uses_allowed": 1, "pending": 0, "completed": 0, "expiry_time": None}
    assert await store.create_token("once") is None
    random = await store.create_token(length=20)
    assert random is not None and len(random.token) == 20
    assert await store.is_valid("once")
    assert await store.take_pending_use("once")
    # The one use is held by a session: nobody else may take it.
    assert not await store.take_pending_use("once")
    assert not await store.is_valid("once")
    await store.complete_use("once")
    token = await store.get_token("once")
    assert token is not None and (token.pending, token.completed) == (0, 1)
    expired = await store.create_token("old", expiry_time=1)
    assert expired is not None and not await store.is_valid("old")
    assert not await store.take_pending_use("old")
    updated = await store.update_token("old", expiry_time=None, uses_allowed=5)
    assert updated is not None and updated.uses_allowed == 5 and await store.is_valid("old")
    assert {t.token for t in await store.list_tokens(valid=False)} == {"once"}
    assert await store.delete_token("old") and not await store.delete_token("old")
    assert await store.update_token("old", uses_allowed=1) is None
    assert not await store.is_valid("missing")
