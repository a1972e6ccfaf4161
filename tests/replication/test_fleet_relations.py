"""Bundled aggregations in a fleet of two (main and an event persister): main
caches a parent's aggregation, the persister writes a new child or a
redaction, and main's next answer has it — invalidated by the ``events`` rows
main follows, not by the persister's memory."""

from __future__ import annotations

from typing import Any

from myelin.app.homeserver import HomeServer
from myelin.domain import Requester
from tests.replication.test_inprocess_fleet import _user, fleet

__all__ = ["fleet"]


async def _relations(hs: HomeServer, who: Requester, room_id: str,
                     event_id: str) -> dict[str, Any]:
    stored = await hs.room_reads.get_event(who, room_id, event_id)
    served = await hs.serializer.serialize_one(stored, user_id=who.user_id)
    return dict(served["unsigned"].get("m.relations", {}))


async def test_main_sees_new_children_and_redactions_the_persister_wrote(
        fleet: tuple[HomeServer, HomeServer]) -> None:
    main, persister = fleet
    alice = await _user(main, "relalice")
    room_id, _ = await main.room_creation.create_room(alice, {"name": "threads"})
    root = (await main.event_creation.send(alice.user_id, room_id, "m.room.message", {
        "msgtype": "m.text", "body": "root"})).event.event_id
    assert await _relations(main, alice, room_id, root) == {}  # cached on main: nothing
    reply = await main.event_creation.send(alice.user_id, room_id, "m.room.message", {
        "msgtype": "m.text", "body": "reply",
        "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
    writer = await main.db.fetchval("SELECT instance_name FROM events WHERE event_id = ?",
                                    reply.event.event_id)
    assert writer == "persister"
    thread = (await _relations(main, alice, room_id, root))["m.thread"]
    assert thread["count"] == 1 and thread["latest_event"]["event_id"] == reply.event.event_id
    await main.redactions.redact(alice, room_id, reply.event.event_id, {}, None)
    assert await _relations(main, alice, room_id, root) == {}
    # The persister's own answer agrees.
    assert await _relations(persister, alice, room_id, root) == {}
