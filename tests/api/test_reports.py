"""Reporting events, rooms and users over HTTP on both engines; what is stored is
read back through the store the admin API will use."""

from __future__ import annotations

import asyncio
import itertools
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

from myelin.config import load_config
from myelin.storage.engines import open_database
from myelin.storage.stores.reports import EventReport, ReportStore, RoomReport, UserReport
from tests.support.client import LoggedIn
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"
_ids = itertools.count()


def q(value: str) -> str:
    return quote(value, safe="")


class Client(LoggedIn):
    PREFIX = "reporter"

    def send(self, room_id: str, body: str) -> str:
        return str(self.ok("PUT", f"/rooms/{q(room_id)}/send/m.room.message/t{next(_ids)}",
                           {"msgtype": "m.text", "body": body})["event_id"])


Reports = tuple[list[EventReport], list[RoomReport], list[UserReport]]


def stored_reports(hs: ServerProcess, reporter: str) -> Reports:
    """The reports ``reporter`` made, as the admin API will list them."""
    async def read() -> Reports:
        config = load_config([hs.config_path])
        db = await open_database(config.database)
        try:
            store = ReportStore(db)
            events, _ = await store.list_event_reports(user_id=reporter, newest_first=False)
            rooms, _ = await store.list_room_reports(user_id=reporter, newest_first=False)
            users, _ = await store.list_user_reports(user_id=reporter, newest_first=False)
            return events, rooms, users
        finally:
            await db.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, read()).result()


def test_report_event(hs: ServerProcess) -> None:
    alice, mallory = Client.new(hs), Client.new(hs)
    room = alice.room(preset="public_chat")
    mallory.ok("POST", f"/join/{q(room)}", {})
    bad = mallory.send(room, "something awful")

    alice.ok("POST", f"/rooms/{q(room)}/report/{q(bad)}", {"reason": "awful", "score": -100})
    alice.ok("POST", f"/rooms/{q(room)}/report/{q(bad)}", {})  # reason is optional
    events, _, _ = stored_reports(hs, alice.user_id)
    assert [(r.room_id, r.event_id, r.reason, r.score) for r in events] == [
        (room, bad, "awful", -100), (room, bad, None, None)]
    first = events[0].to_json()
    assert set(first) == {"id", "received_ts", "room_id", "event_id", "user_id", "reason",
                          "score"}
    assert first["user_id"] == alice.user_id and first["received_ts"] > 0


def test_report_event_hides_what_the_reporter_cannot_see(hs: ServerProcess) -> None:
    alice, bob, eve = Client.new(hs), Client.new(hs), Client.new(hs)
    private = alice.room(preset="private_chat")
    secret = alice.send(private, "private")
    public = alice.room(preset="public_chat")
    hello = alice.send(public, "hello")
    bob.ok("POST", f"/join/{q(public)}", {})
    bob.ok("POST", f"/rooms/{q(public)}/leave", {})
    eve.ok("POST", f"/join/{q(public)}", {})

    hidden = [
        (eve, private, secret),                   # not in the room
        (eve, public, secret),                    # event of another room
        (eve, public, "$nosuchevent"),            # no such event
        (eve, "!nosuchroom:test.localhost", secret),  # no such room
        (bob, public, hello),                     # left the room
    ]
    answers = []
    for who, room, event in hidden:
        got = who.err("POST", f"/rooms/{q(room)}/report/{q(event)}", {"reason": "x"},
                      status=404, errcode="M_NOT_FOUND")
        answers.append(got["error"])
    # One answer for all of them: nothing tells an existing event from a missing one.
    assert len(set(answers)) == 1
    assert stored_reports(hs, eve.user_id) == ([], [], [])
    assert stored_reports(hs, bob.user_id) == ([], [], [])


def test_report_event_bad_input_changes_nothing(hs: ServerProcess) -> None:
    alice = Client.new(hs)
    room = alice.room()
    event = alice.send(room, "x")
    for body, errcode in (({"reason": 5}, "M_BAD_JSON"), ({"score": 1}, "M_INVALID_PARAM"),
                          ({"score": -101}, "M_INVALID_PARAM"),
                          ({"score": "-5"}, "M_INVALID_PARAM")):
        alice.err("POST", f"/rooms/{q(room)}/report/{q(event)}", body, status=400,
                  errcode=errcode)
    status, out = hs.request("POST", f"{V3}/rooms/{q(room)}/report/{q(event)}",
                             raw=b"not json", token=alice.token)
    assert (status, out["errcode"]) == (400, "M_NOT_JSON")
    status, _ = hs.request("POST", f"{V3}/rooms/{q(room)}/report/{q(event)}", {})
    assert status == 401
    assert stored_reports(hs, alice.user_id) == ([], [], [])


def test_report_room(hs: ServerProcess) -> None:
    alice, eve = Client.new(hs), Client.new(hs)
    room = alice.room(preset="private_chat")
    # Not joined: rooms may still be reported (spec v1.13); blank reasons are allowed.
    eve.ok("POST", f"/rooms/{q(room)}/report", {"reason": "spam room"})
    eve.ok("POST", f"/rooms/{q(room)}/report", {"reason": ""})
    eve.err("POST", f"/rooms/{q('!nosuch:test.localhost')}/report", {"reason": "x"},
            status=404, errcode="M_NOT_FOUND")
    eve.err("POST", f"/rooms/{q(room)}/report", {}, status=400, errcode="M_MISSING_PARAM")
    eve.err("POST", f"/rooms/{q(room)}/report", {"reason": ["x"]}, status=400,
            errcode="M_BAD_JSON")
    _, rooms, _ = stored_reports(hs, eve.user_id)
    assert [(r.room_id, r.reason) for r in rooms] == [(room, "spam room"), (room, "")]


def test_report_user(hs: ServerProcess) -> None:
    alice, spammer = Client.new(hs), Client.new(hs)
    alice.ok("POST", f"/users/{q(spammer.user_id)}/report", {"reason": "spam"})
    # Unknown local users get the same answer, and nothing is stored about them.
    alice.ok("POST", f"/users/{q('@ghost:test.localhost')}/report", {"reason": "who?"})
    alice.ok("POST", f"/users/{q('@someone:elsewhere.example')}/report", {"reason": "remote"})
    alice.err("POST", f"/users/{q('not-a-user')}/report", {"reason": "x"}, status=400,
              errcode="M_INVALID_PARAM")
    alice.err("POST", f"/users/{q(spammer.user_id)}/report", {}, status=400,
              errcode="M_MISSING_PARAM")
    _, _, users = stored_reports(hs, alice.user_id)
    assert [(u.target_user_id, u.reason) for u in users] == [
        (spammer.user_id, "spam"), ("@someone:elsewhere.example", "remote")]
    status, _ = hs.request("POST", f"{V3}/users/{q(spammer.user_id)}/report", {"reason": "x"})
    assert status == 401
