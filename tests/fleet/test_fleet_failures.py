"""What users notice when parts of a fleet fail: nothing lost, nothing doubled,
no request hanging, and the fleet catching up by itself.

One fleet for the module. The tests that break something (kill a generic
worker, restart Redis, kill -9 an event persister) put it back before they
end, and run last, in that order.
"""

from __future__ import annotations

import signal
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.fleet import Fleet, User, bodies, http, timeline

q = urllib.parse.quote
PERSISTERS = ("event_persister1", "event_persister2")


@pytest.fixture(autouse=True)
def fleet_whole_afterwards(fleet: Fleet) -> Iterator[None]:
    """Whatever a test broke, the next one starts with every process (and Redis) up."""
    yield
    if fleet.redis is None or fleet.redis.proc.poll() is not None:
        from tests.support.redis import start_redis

        port = fleet.redis.port if fleet.redis else None
        fleet.redis = start_redis(port)
    for name in fleet.processes:
        if not fleet.alive(name):
            fleet.restart(name)


def pair_in_room(fleet: Fleet) -> tuple[User, User, str]:
    alice, bob = User.register(fleet, "alice"), User.register(fleet, "bob")
    room = alice.create_room(invite=[bob])
    bob.join(room)
    return alice, bob, room


def room_persister(fleet: Fleet, room_id: str) -> str:
    rows = fleet.query("SELECT DISTINCT instance_name FROM events WHERE room_id = $1", room_id)
    names = {r["instance_name"] for r in rows}
    assert len(names) == 1, (room_id, names)
    return str(names.pop())


def wait_caught_up(fleet: Fleet, deadline_s: float = 30.0) -> None:
    """Every process sees every writer of every stream where the writer itself is."""
    deadline = time.monotonic() + deadline_s
    while True:
        behind = []
        statuses = {name: fleet.status(name) for name in fleet.processes}
        for stream in ("events", "to_device", "account_data", "receipts"):
            own = {}
            for name, status in statuses.items():
                info = status["streams"].get(stream, {})
                if "written_here" in info:
                    own[name] = info["written_here"]
            for name, status in statuses.items():
                seen = status["streams"].get(stream, {}).get("writers", {})
                for writer, position in own.items():
                    key = "master" if writer == "main" else writer
                    if seen.get(key, seen.get(writer, 0)) < position:
                        behind.append((name, stream, writer, seen, position))
        if not behind:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not caught up after {deadline_s}s: {behind}")
        time.sleep(0.2)


# -- (d) replication needs the secret ---------------------------------------------------

def test_replication_refuses_without_the_secret(fleet: Fleet) -> None:
    for name in ("event_persister1", "stream_writer", "main"):
        url = fleet.replication_url(name) + "/_synapse/replication/send_event/t1"
        payload = {"room_id": "!nope:test.localhost", "sender": "@x:test.localhost",
                   "type": "m.room.message", "content": {}}
        for headers in ({}, {"Authorization": "Bearer wrong-secret"},
                        {"Authorization": fleet.replication_secret}):
            status, body = http("POST", url, payload, headers=headers, timeout=10)
            assert status == 403, (name, headers, status, body)
            status, _ = http("GET", fleet.replication_url(name) + "/_myelin/status",
                             headers=headers, timeout=10)
            assert status == 403, (name, headers, status)
        # With the secret a call is let in (and fails on its merits, not 403).
        status, body = http("POST", fleet.replication_url(name)
                            + "/_synapse/replication/no_such_endpoint/t1", {}, timeout=10,
                            headers={"Authorization": f"Bearer {fleet.replication_secret}"})
        assert status == 404, (name, status, body)
    # nginx does not expose replication at all.
    status, _ = http("POST", fleet.base_url + "/_synapse/replication/send_event/t2", {},
                     headers={"Authorization": f"Bearer {fleet.replication_secret}"})
    assert status == 404


# -- (e) concurrent state changes from two workers -----------------------------------------

def test_concurrent_topic_changes_from_two_workers(fleet: Fleet) -> None:
    alice, bob, room = pair_in_room(fleet)
    bob_since = bob.sync()["next_batch"]
    via = [alice.via("generic_worker1"), alice.via("generic_worker2")]
    path = f"/rooms/{q(room)}/state/m.room.topic/"

    def put(i: int) -> tuple[int, str, float]:
        status, out = via[i % 2].req("PUT", path, {"topic": f"topic {i}"}, timeout=60)
        assert status == 200, (i, status, out)
        return i, str(out["event_id"]), time.monotonic()

    with ThreadPoolExecutor(10) as pool:
        acked = list(pool.map(put, range(20)))
    by_event = {event_id: i for i, event_id, _ in acked}
    assert len(by_event) == 20

    # The order the room got them in: by stream position.
    rows = fleet.query("SELECT event_id, stream_ordering FROM events WHERE room_id = $1 "
                       "AND type = 'm.room.topic' ORDER BY stream_ordering", room)
    assert [r["event_id"] for r in rows if r["event_id"] in by_event] and \
        len([r for r in rows if r["event_id"] in by_event]) == 20
    newest = rows[-1]["event_id"]
    expected = f"topic {by_event[newest]}"

    for name in ("generic_worker1", "generic_worker2"):
        state = alice.via(name).ok("GET", f"/rooms/{q(room)}/state")
        topics = [e for e in state if e["type"] == "m.room.topic"]
        assert [(e["event_id"], e["content"]["topic"]) for e in topics] == \
            [(newest, expected)], name
        single = alice.via(name).ok("GET", f"/rooms/{q(room)}/state/m.room.topic/")
        assert single == {"topic": expected}, name

    # bob's /sync: all 20 topic changes, in the room's order, once each.
    def all_topics(rs: list[dict[str, Any]]) -> bool:
        return len(timeline(rs, room, "m.room.topic")) >= 20

    responses, _ = bob.sync_until(all_topics, bob_since)
    got = [e["event_id"] for e in timeline(responses, room, "m.room.topic")]
    assert got == [r["event_id"] for r in rows if r["event_id"] in by_event]
    # A fresh sync's state agrees with GET /state.
    initial = bob.sync()
    joined = initial["rooms"]["join"][room]
    events = joined["state"]["events"] + joined["timeline"]["events"]
    last_topic = [e for e in events if e["type"] == "m.room.topic"][-1]
    assert last_topic["event_id"] == newest

    # The room did not fork.
    extremities = fleet.query("SELECT event_id FROM room_forward_extremities "
                              "WHERE room_id = $1", room)
    assert len(extremities) == 1, extremities

    # Strictly sequential across workers: the last acknowledged one wins, and both
    # workers say so straight away.
    via[0].ok("PUT", path, {"topic": "from worker 1"})
    via[1].ok("PUT", path, {"topic": "from worker 2"})
    for name in ("generic_worker1", "generic_worker2"):
        single = alice.via(name).ok("GET", f"/rooms/{q(room)}/state/m.room.topic/")
        assert single == {"topic": "from worker 2"}, name


# -- (c) a generic worker dies while a client long-polls it ---------------------------------

def test_generic_worker_killed_mid_long_poll(fleet: Fleet) -> None:
    alice, bob, room = pair_in_room(fleet)
    alice.send(room, "before")
    on1, on2 = bob.via("generic_worker1"), bob.via("generic_worker2")
    token = on1.sync()["next_batch"]
    result: dict[str, Any] = {}

    def long_poll() -> None:
        started = time.monotonic()
        try:
            result["response"] = on1.sync(token, timeout_ms=25000, http_timeout=40)
        except Exception as e:  # the connection dies with the worker
            result["error"] = e
        result["took"] = time.monotonic() - started

    thread = threading.Thread(target=long_poll)
    thread.start()
    time.sleep(1.0)
    fleet.kill("generic_worker1", signal.SIGKILL)
    thread.join(45)
    assert not thread.is_alive()
    assert result["took"] < 10, "the long-poll did not end when its worker died"
    if "response" in result:  # nginx-less, so an answer is unexpected but must be empty
        assert bodies(timeline([result["response"]], room)) == []

    # Meanwhile alice keeps talking (through the surviving worker).
    alice2 = alice.via("generic_worker2")
    sent = [f"while down {i}" for i in range(3)]
    for text in sent:
        alice2.send(room, text)

    # bob's client retries with the same token on the other worker: exactly the new ones.
    responses, token = on2.sync_until(lambda rs: len(bodies(timeline(rs, room))) >= 3, token)
    assert bodies(timeline(responses, room)) == sent

    # Through nginx (which hashed bob to either worker) nothing breaks either.
    alice.send(room, "via nginx")
    responses, token = bob.sync_until(lambda rs: bool(bodies(timeline(rs, room))), token)
    assert bodies(timeline(responses, room)) == ["via nginx"]

    fleet.restart("generic_worker1")
    alice.send(room, "after restart")
    responses, _ = on1.sync_until(lambda rs: bool(bodies(timeline(rs, room))), token)
    assert bodies(timeline(responses, room)) == ["after restart"]


# -- (b) Redis restarts mid-conversation --------------------------------------------------

def test_health_says_when_redis_is_gone(fleet: Fleet) -> None:
    """An operator's view: while Redis is down every process's /health says so
    (503), and says OK again by itself once Redis is back."""
    fleet.expected_errors.append("lost redis")
    assert fleet.redis is not None
    port = fleet.redis.port
    fleet.redis.proc.kill()
    fleet.redis.proc.wait()
    noticed: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and len(noticed) < len(fleet.processes):
            for name in fleet.processes:
                if name in noticed:
                    continue
                status, body = http("GET", fleet.any_url(name) + "/health", timeout=5)
                if status != 200:
                    noticed[name] = f"{status} {body}"
            time.sleep(0.2)
    finally:
        from tests.support.redis import start_redis

        fleet.redis = start_redis(port)
    deadline = time.monotonic() + 30
    for name in fleet.processes:
        while http("GET", fleet.any_url(name) + "/health", timeout=5)[0] != 200:
            assert time.monotonic() < deadline, f"{name} not healthy again"
            time.sleep(0.2)
    missed = sorted(set(fleet.processes) - set(noticed))
    assert not missed, f"/health said OK for 8s with Redis down on: {missed}; noticed: {noticed}"


def test_redis_restart_mid_conversation(fleet: Fleet) -> None:
    alice, bob, room = pair_in_room(fleet)
    sender = alice.via("generic_worker1")   # alice on one worker,
    reader = bob.via("generic_worker2")     # bob syncing on the other
    since = reader.sync()["next_batch"]

    sent: list[str] = []
    statuses: list[tuple[str, int | str, float]] = []

    def send(text: str) -> None:
        started = time.monotonic()
        status: int | str
        try:
            status, _ = sender.req(
                "PUT", f"/rooms/{q(room)}/send/m.room.message/{sender.txn()}",
                {"msgtype": "m.text", "body": text}, timeout=45)
        except OSError as e:
            status = f"{type(e).__name__}"
        statuses.append((text, status, time.monotonic() - started))
        if status == 200:
            sent.append(text)

    for i in range(3):
        send(f"before {i}")
    responses, since = reader.sync_until(lambda rs: len(bodies(timeline(rs, room))) >= 3,
                                         since)
    assert bodies(timeline(responses, room)) == sent

    # Redis goes away; alice sends while it is down, then it comes back.
    redis_down = threading.Event()

    fleet.expected_errors.append("lost redis")

    def outage() -> None:
        assert fleet.redis is not None
        port = fleet.redis.port
        fleet.redis.proc.kill()
        fleet.redis.proc.wait()
        redis_down.set()
        time.sleep(3.0)
        from tests.support.redis import start_redis

        fleet.redis = start_redis(port)

    restarter = threading.Thread(target=outage)
    restarter.start()
    redis_down.wait(10)
    for i in range(2):
        send(f"during {i}")
    restarter.join(30)
    for i in range(3):
        send(f"after {i}")

    assert all(took < 40 for _, _, took in statuses), statuses
    # Sends while Redis is down may be slow, but none may fail...
    failures = [s for s in statuses if s[1] != 200]
    assert not failures, failures

    # ...and bob, on the other worker, gets every one, in order, once.
    def all_there(rs: list[dict[str, Any]]) -> bool:
        return len(bodies(timeline(rs, room))) >= len(sent) - 3

    responses, since = reader.sync_until(all_there, since, deadline_s=40)
    assert bodies(timeline(responses, room)) == sent[3:], statuses

    # Every process is back on Redis and has caught up by itself.
    deadline = time.monotonic() + 30
    while True:
        down = [n for n in fleet.processes if fleet.status(n).get("redis") is False]
        if not down:
            break
        assert time.monotonic() < deadline, f"still without redis: {down}"
        time.sleep(0.5)
    wait_caught_up(fleet)
    # Ephemeral traffic flows again too: a to-device message crosses workers.
    bob_since = reader.sync()["next_batch"]
    sender.ok("PUT", f"/sendToDevice/org.example.after_redis/{sender.txn()}",
              {"messages": {bob.user_id: {bob.device_id: {"ok": True}}}})
    reader.sync_until(lambda rs: any(e["type"] == "org.example.after_redis"
                                     for r in rs for e in r["to_device"]["events"]), bob_since)


# -- (a) an event persister is killed while clients send -----------------------------------

@dataclass
class Send:
    user: str
    room: str
    body: str
    txn: str
    status: int | str = 0
    event_id: str | None = None
    took: float = 0.0
    error: Any = None
    started: float = 0.0


def _send(user: User, s: Send) -> None:
    started = s.started = time.monotonic()
    try:
        status, out = user.req("PUT", f"/rooms/{q(s.room)}/send/m.room.message/{s.txn}",
                               {"msgtype": "m.text", "body": s.body}, timeout=45)
        s.status = status
        if status == 200:
            s.event_id = out["event_id"]
        else:
            s.error = out
    except OSError as e:  # includes timeouts: counted as a hang below
        s.status = type(e).__name__
    s.took = time.monotonic() - started


def test_event_persister_killed_while_sending(fleet: Fleet) -> None:
    alice, bob = User.register(fleet, "alice"), User.register(fleet, "bob")
    users = {alice.user_id: alice, bob.user_id: bob}
    # Rooms on both persisters.
    rooms: dict[str, str] = {}
    while sorted(Counter(rooms.values()).values())[:1] < [2] or len(set(rooms.values())) < 2:
        room = alice.create_room(invite=[bob])
        bob.join(room)
        rooms[room] = room_persister(fleet, room)
        assert len(rooms) < 20, rooms
    since = {u: user.sync()["next_batch"] for u, user in users.items()}
    before = {p: fleet.writer_positions("events")[p] for p in PERSISTERS}

    # Warm up: one message in every room; both persisters' positions move.
    for room in rooms:
        alice.send(room, f"warm-up {room}")
    wait_caught_up(fleet)
    after = fleet.writer_positions("events")
    assert all(after[p] > before[p] for p in PERSISTERS), (before, after)

    victim = "event_persister1"
    sends: list[Send] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(user: User) -> None:
        n = 0
        room_list = list(rooms)
        while not stop.is_set():
            s = Send(user.user_id, room_list[n % len(room_list)],
                     f"{user.user_id} #{n}", f"kill-{n}")
            with lock:
                sends.append(s)
            _send(user, s)
            n += 1

    threads = [threading.Thread(target=client, args=(u,)) for u in (alice, bob)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        fleet.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        # Longer than the replication client's retries (about 8s): some sends fail.
        time.sleep(10.0)
        fleet.restart(victim)
        healthy_at = time.monotonic()
        restarted_in = healthy_at - killed_at
        time.sleep(2.0)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads), "a send never finished"

    # Bounded: every send ended (200 or an error) in time.
    slow = [s for s in sends if not isinstance(s.status, int) or s.took > 40]
    assert not slow, slow
    ok = [s for s in sends if s.status == 200]
    failed = [s for s in sends if s.status != 200]
    assert ok, "nothing got through"
    victim_rooms = {r for r, p in rooms.items() if p == victim}
    # Rooms on the other persister carried on during the outage.
    assert any(s.room not in victim_rooms and s.status == 200 for s in sends), \
        "the surviving persister's rooms stopped too"
    wrong = [s for s in failed if s.room not in victim_rooms]
    assert not wrong, f"sends to the surviving persister's rooms failed: {wrong[:5]}"

    first_time = {id(s) for s in ok}
    first_statuses = Counter(s.status for s in sends)
    slowest = max(s.took for s in sends)
    refused_after_restart = max((s.started + s.took - healthy_at for s in sends
                                 if s.status == 503), default=0.0)
    # The client retries what failed, with the same transaction id: one event each.
    # (A failed send may have been persisted before its persister died: then the
    # retry answers with that event, in its original place.)
    # A restarted persister answers 503 "being reconfigured" until it has heard the
    # other writers agree (up to follower.STARTUP_AGREEMENT_S): back off and retry,
    # as a client does, within a bound.
    retry_deadline = time.monotonic() + 20
    for s in failed:
        while True:
            _send(users[s.user], s)
            if s.status == 200 or time.monotonic() > retry_deadline:
                break
            time.sleep(0.5)
        assert s.status == 200, (s, fleet.all_errors())
    ok = sends

    wait_caught_up(fleet)
    for room in rooms:
        mine = [s for s in ok if s.room == room]
        history = [e for e in alice.messages(room) if e["type"] == "m.room.message"
                   and not e["content"]["body"].startswith("warm-up")]
        got = [e["content"]["body"] for e in history]
        counts = Counter(got)
        doubled = [b for b, c in counts.items() if c > 1]
        assert not doubled, (room, rooms[room], doubled)
        assert sorted(got) == sorted(s.body for s in mine), (room, rooms[room])
        # Each sender's acknowledged messages in the order they were sent (a sender's
        # sends are sequential); the retried ones are somewhere, once.
        for user_id in users:
            acked = [s.body for s in mine if s.user == user_id and id(s) in first_time]
            assert [b for b in got if b in set(acked)] == acked, (room, user_id)
        assert [e["event_id"] for e in history] == \
            [next(s.event_id for s in mine if s.body == b) for b in got], room

        # The other member's /sync: the same events, same order, once.
        for user_id, user in users.items():
            def complete(rs: list[dict[str, Any]], room: str = room,
                         n: int = len(mine)) -> bool:
                return len(bodies(timeline(rs, room))) >= n + 1

            responses, _ = user.sync_until(complete, since[user_id], deadline_s=30)
            synced = [b for b in bodies(timeline(responses, room))
                      if not b.startswith("warm-up")]
            assert synced == got, (user_id, room, rooms[room])
    print(f"{len(sends)} sends ({dict(first_statuses)}), the failed ones retried; the "
          f"persister was back {restarted_in:.1f}s after the kill; slowest send {slowest:.1f}s; "
          f"503 'being reconfigured' until {refused_after_restart:.1f}s after /health said OK")
