#!/usr/bin/env python3
"""Load generator for a Matrix homeserver over the client-server API.

Registers a fresh set of users (unique prefix per run), creates rooms, joins
every user to every room, then runs concurrent senders
(``PUT /rooms/{id}/send/m.room.message/{txn}``) while every user long-polls
``/sync``. For each message a receiver sees it records the delivery latency,
and it checks exactly-once and in-order delivery per receiver per room.

Timing: the sender writes its wall-clock send-start time into the message
content and records the moment the PUT returned (send completion) in a table
shared with the receivers (same process). A receiver stamps arrival when the
/sync response body has been read. Both clocks are ``time.time()`` on the same
machine. A receiver can see an event *before* the sender's PUT has returned
(the server wakes /sync when it persists, then writes the PUT response), so
"delivery from send completion" can be negative; those are counted as
``delivered_before_ack`` and kept in the percentiles as they are.

Examples::

    python bench/loadgen.py --base-url http://127.0.0.1:8008 --shared-secret S \\
        --users 20 --rooms 5 --senders 10 --duration 30 --rate 0
    python bench/loadgen.py --base-url http://127.0.0.1:8008 --register-open \\
        --rate 5 --duration 20          # light load: the "delivery in a few ms" figure

Bounded by design: ``--duration`` and ``--max-events`` stop the senders, the
drain phase is bounded by ``--drain-timeout``, and only loopback hosts are
accepted unless ``--allow-remote`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import ipaddress
import json
import math
import os
import resource
import secrets
import socket
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

try:
    import orjson

    def jdumps(v: Any) -> bytes:
        return orjson.dumps(v)

    def jloads(raw: bytes) -> Any:
        return orjson.loads(raw)
except ImportError:  # pragma: no cover
    def jdumps(v: Any) -> bytes:
        return json.dumps(v).encode()

    def jloads(raw: bytes) -> Any:
        return json.loads(raw)

BENCH_MSGTYPE = "m.text"


# ---------------------------------------------------------------------------
# small helpers

def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank-with-interpolation percentile of an already sorted list."""
    if not sorted_values:
        return None
    if len(sorted_values) == 1:
        return sorted_values[0]
    k = (len(sorted_values) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return sorted_values[lo]
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summarize_ms(values_s: list[float]) -> dict[str, Any]:
    """Latency summary in milliseconds from a list of seconds."""
    v = sorted(x * 1000.0 for x in values_s)
    out: dict[str, Any] = {"count": len(v)}
    for name, p in (("p50", 50), ("p95", 95), ("p99", 99)):
        q = percentile(v, p)
        out[name] = None if q is None else round(q, 3)
    out["min"] = round(v[0], 3) if v else None
    out["max"] = round(v[-1], 3) if v else None
    out["mean"] = round(sum(v) / len(v), 3) if v else None
    return out


def is_loopback(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback
                       for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


class HttpError(Exception):
    def __init__(self, status: int, body: Any, what: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {str(body)[:300]}")
        self.status = status
        self.body = body


# ---------------------------------------------------------------------------
# state

@dataclass
class User:
    index: int
    user_id: str
    token: str
    device_id: str | None = None
    next_batch: str | None = None


@dataclass
class Sent:
    """One message a sender put: where, when it started and when the PUT returned."""

    room_index: int
    sender_index: int
    seq: int
    t_start: float
    t_done: float | None = None
    event_id: str | None = None


@dataclass
class Stats:
    send_latency: list[float] = field(default_factory=list)
    deliver_from_start: list[float] = field(default_factory=list)
    deliver_from_done: list[float] = field(default_factory=list)
    # arrivals whose PUT had not returned yet when /sync delivered them;
    # their from-completion latency is filled in after the run
    pending_done: list[tuple[str, float]] = field(default_factory=list)
    delivered: int = 0
    delivered_during_send_phase: int = 0
    delivered_before_ack: int = 0
    via_backfill: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    foreign: int = 0  # bench-looking events not from this run's table
    sync_requests: int = 0
    sync_empty: int = 0
    sync_limited_rooms: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base = args.base_url.rstrip("/")
        self.prefix = args.prefix or f"bench{secrets.token_hex(3)}"
        self.users: list[User] = []
        self.rooms: list[str] = []
        self.room_index: dict[str, int] = {}
        self.members: dict[int, set[int]] = defaultdict(set)  # room -> user indices
        self.sent: dict[str, Sent] = {}  # key "s<sender>-<seq>" -> Sent
        self.stats = Stats()
        self.send_phase_over = asyncio.Event()
        self.stop_sync = asyncio.Event()
        self.send_started = 0.0
        self.send_ended = 0.0
        self.sent_ok = 0
        self.sent_failed = 0
        self.attempted = 0
        # per receiver: event ids seen; per (receiver, room, sender): last seq
        self.seen: list[set[str]] = []
        self.last_seq: dict[tuple[int, int, int], int] = {}
        # per (receiver, room): event ids in arrival order (for the order check)
        self.order: dict[tuple[int, int], list[str]] = defaultdict(list)
        self.received_keys: dict[int, set[str]] = defaultdict(set)
        self.session: aiohttp.ClientSession | None = None
        self._sched_next = 0

    # -- HTTP ---------------------------------------------------------------
    async def call(self, method: str, path: str, body: Any = None, token: str | None = None,
                   params: dict[str, str] | None = None, total_s: float = 60.0,
                   what: str = "") -> tuple[Any, float]:
        """One JSON request; returns (decoded body, wall time when the body was read)."""
        assert self.session is not None
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = jdumps(body)
            headers["Content-Type"] = "application/json"
        async with self.session.request(method, self.base + path, data=data, headers=headers,
                                        params=params,
                                        timeout=aiohttp.ClientTimeout(total=total_s)) as resp:
            raw = await resp.read()
            t = time.time()
            try:
                decoded = jloads(raw) if raw else None
            except ValueError:
                decoded = raw[:200].decode("utf-8", "replace")
            if resp.status != 200:
                raise HttpError(resp.status, decoded, what or f"{method} {path}")
            return decoded, t

    def note_error(self, phase: str, exc: BaseException) -> None:
        if isinstance(exc, HttpError):
            code = exc.body.get("errcode") if isinstance(exc.body, dict) else None
            key = f"{phase}:HTTP{exc.status}{':' + code if code else ''}"
        else:
            key = f"{phase}:{type(exc).__name__}"
        self.stats.errors[key] += 1
        if self.stats.errors[key] <= 3 and not self.args.quiet:
            print(f"  error [{key}] {exc!s:.300}", file=sys.stderr)

    # -- setup --------------------------------------------------------------
    async def register(self, i: int) -> User:
        localpart = f"{self.prefix}_u{i}"
        password = "bench-" + self.prefix
        if self.args.shared_secret:
            nonce_body, _ = await self.call("GET", "/_synapse/admin/v1/register",
                                            what="register nonce")
            nonce = nonce_body["nonce"]
            mac = hmac.new(self.args.shared_secret.encode(), digestmod=hashlib.sha1)
            mac.update(nonce.encode() + b"\x00" + localpart.encode() + b"\x00"
                       + password.encode() + b"\x00" + b"notadmin")
            body, _ = await self.call("POST", "/_synapse/admin/v1/register", {
                "nonce": nonce, "username": localpart, "password": password, "admin": False,
                "mac": mac.hexdigest()}, what="shared-secret register")
        else:
            body, _ = await self.call("POST", "/_matrix/client/v3/register", {
                "username": localpart, "password": password,
                "auth": {"type": "m.login.dummy"}}, what="open register")
        return User(i, body["user_id"], body["access_token"], body.get("device_id"))

    async def gather_bounded(self, coros: list[Any], limit: int = 8) -> list[Any]:
        sem = asyncio.Semaphore(limit)

        async def one(c: Any) -> Any:
            async with sem:
                return await c
        return await asyncio.gather(*(one(c) for c in coros))

    async def setup(self) -> None:
        a = self.args
        t0 = time.monotonic()
        self.users = await self.gather_bounded([self.register(i) for i in range(a.users)])
        self.seen = [set() for _ in self.users]
        t_reg = time.monotonic()

        async def create(r: int) -> str:
            creator = self.users[r % len(self.users)]
            body, _ = await self.call("POST", "/_matrix/client/v3/createRoom", {
                "preset": "public_chat", "name": f"{self.prefix} room {r}",
                "visibility": "private"}, token=creator.token, what="createRoom")
            self.members[r].add(creator.index)
            return str(body["room_id"])
        self.rooms = await self.gather_bounded([create(r) for r in range(a.rooms)], 4)
        self.room_index = {room_id: r for r, room_id in enumerate(self.rooms)}

        async def join(u: User, r: int) -> None:
            await self.call("POST", f"/_matrix/client/v3/join/{quote(self.rooms[r], safe='')}",
                            {}, token=u.token, what="join")
            self.members[r].add(u.index)
        await self.gather_bounded([join(u, r) for r in range(a.rooms) for u in self.users
                                   if u.index not in self.members[r]])
        t_join = time.monotonic()

        # Initial sync for everyone, so the measured phase is incremental syncs only.
        async def initial(u: User) -> None:
            body, _ = await self.call("GET", "/_matrix/client/v3/sync", token=u.token,
                                      params={"filter": self.filter_json(), "timeout": "0"},
                                      what="initial sync")
            u.next_batch = body["next_batch"]
        await self.gather_bounded([initial(u) for u in self.users])
        t_sync = time.monotonic()
        self.setup_times = {"register_s": round(t_reg - t0, 3),
                            "rooms_and_joins_s": round(t_join - t_reg, 3),
                            "initial_sync_s": round(t_sync - t_join, 3)}

    def filter_json(self) -> str:
        f = {
            "room": {
                "timeline": {"limit": self.args.timeline_limit},
                "state": {"lazy_load_members": True},
                "ephemeral": {"not_types": ["*"]},
                "account_data": {"not_types": ["*"]},
            },
            "presence": {"not_types": ["*"]},
            "account_data": {"not_types": ["*"]},
        }
        return json.dumps(f, separators=(",", ":"))

    # -- receivers ----------------------------------------------------------
    def record(self, u: User, room_idx: int, event: dict[str, Any], arrival: float,
               backfill: bool) -> None:
        if event.get("type") != "m.room.message":
            return
        content = event.get("content") or {}
        mark = content.get("bench")
        if not isinstance(mark, dict):
            return
        if mark.get("run") != self.prefix:
            self.stats.foreign += 1
            return
        key = mark.get("k")
        sent = self.sent.get(key) if isinstance(key, str) else None
        if sent is None or not isinstance(key, str):
            self.stats.foreign += 1
            return
        event_id = event.get("event_id", "")
        st = self.stats
        if event_id in self.seen[u.index]:
            st.duplicates += 1
            return
        self.seen[u.index].add(event_id)
        self.received_keys[u.index].add(key)
        self.order[(u.index, room_idx)].append(event_id)
        slot = (u.index, room_idx, sent.sender_index)
        last = self.last_seq.get(slot, -1)
        if sent.seq <= last:
            st.out_of_order += 1
        else:
            self.last_seq[slot] = sent.seq
        st.delivered += 1
        if backfill:
            st.via_backfill += 1
        if not self.send_phase_over.is_set():
            st.delivered_during_send_phase += 1
        st.deliver_from_start.append(arrival - sent.t_start)
        if sent.t_done is None:
            st.delivered_before_ack += 1
            st.pending_done.append((key, arrival))
        else:
            st.deliver_from_done.append(arrival - sent.t_done)

    async def backfill(self, u: User, room_id: str, prev_batch: str, since: str,
                       arrival: float) -> list[dict[str, Any]]:
        """Fetch events a limited timeline skipped: /messages back to the last token."""
        out: list[dict[str, Any]] = []
        token = prev_batch
        for _ in range(100):  # bounded
            body, _ = await self.call(
                "GET", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/messages",
                token=u.token, params={"from": token, "to": since, "dir": "b", "limit": "100"},
                what="messages backfill")
            chunk = body.get("chunk") or []
            out.extend(chunk)
            end = body.get("end")
            if not chunk or not end or end == token:
                break
            token = end
        out.reverse()  # oldest first
        return out

    async def sync_loop(self, u: User) -> None:
        params = {"filter": self.filter_json(), "timeout": str(self.args.sync_timeout_ms)}
        st = self.stats
        while not self.stop_sync.is_set():
            since = u.next_batch
            assert since is not None
            try:
                body, arrival = await self.call(
                    "GET", "/_matrix/client/v3/sync", token=u.token,
                    params={**params, "since": since},
                    total_s=self.args.sync_timeout_ms / 1000 + 30, what="sync")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.note_error("sync", e)
                await asyncio.sleep(0.2)
                continue
            st.sync_requests += 1
            joined = (body.get("rooms") or {}).get("join") or {}
            if not joined:
                st.sync_empty += 1
            for room_id, room in joined.items():
                r = self.room_index.get(room_id)
                if r is None:
                    continue
                timeline = room.get("timeline") or {}
                events = timeline.get("events") or []
                if timeline.get("limited") and timeline.get("prev_batch"):
                    st.sync_limited_rooms += 1
                    try:
                        missed = await self.backfill(u, room_id, timeline["prev_batch"], since,
                                                     arrival)
                    except Exception as e:
                        self.note_error("backfill", e)
                        missed = []
                    t_bf = time.time()
                    have = {e.get("event_id") for e in events}
                    for event in missed:
                        if event.get("event_id") not in have:
                            self.record(u, r, event, t_bf, backfill=True)
                for event in events:
                    self.record(u, r, event, arrival, backfill=False)
            u.next_batch = body.get("next_batch", since)

    # -- senders ------------------------------------------------------------
    async def next_slot(self) -> bool:
        """Wait for this sender's next turn; False when the send phase is over."""
        a = self.args
        now = time.monotonic()
        if now >= self.deadline or (a.max_events and self.attempted >= a.max_events):
            return False
        self.attempted += 1
        if a.rate > 0:
            slot = self.start_mono + self._sched_next / a.rate
            self._sched_next += 1
            if slot >= self.deadline:
                return False
            delay = slot - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        return True

    async def sender(self, s: int) -> None:
        u = self.users[s % len(self.users)]
        seq = 0
        # each sender walks the rooms round-robin starting at its own offset
        rooms_for_me = [r for r in range(len(self.rooms)) if u.index in self.members[r]]
        while await self.next_slot():
            r = rooms_for_me[(s + seq) % len(rooms_for_me)]
            key = f"s{s}-{seq}"
            txn = f"{self.prefix}-{key}"
            t_start = time.time()
            sent = Sent(r, s, seq, t_start)
            self.sent[key] = sent
            content = {"msgtype": BENCH_MSGTYPE, "body": f"bench {key}",
                       "bench": {"run": self.prefix, "k": key, "ts_us": int(t_start * 1e6)}}
            seq += 1
            try:
                body, t_done = await self.call(
                    "PUT", f"/_matrix/client/v3/rooms/{quote(self.rooms[r], safe='')}"
                           f"/send/m.room.message/{txn}", content, token=u.token,
                    what="send")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.note_error("send", e)
                self.sent_failed += 1
                del self.sent[key]
                await asyncio.sleep(0.05)
                continue
            sent.t_done = t_done
            sent.event_id = body.get("event_id")
            self.sent_ok += 1
            self.stats.send_latency.append(t_done - t_start)

    # -- the run ------------------------------------------------------------
    def expected_deliveries(self) -> int:
        return sum(len(self.members[s.room_index]) for s in self.sent.values()
                   if s.t_done is not None)

    async def run(self) -> dict[str, Any]:
        a = self.args
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        async with aiohttp.ClientSession(connector=connector) as session:
            self.session = session
            await self.setup()
            syncers = [asyncio.create_task(self.sync_loop(u)) for u in self.users]
            await asyncio.sleep(a.settle)  # let every long-poll reach the server
            self.start_mono = time.monotonic()
            self.deadline = self.start_mono + a.duration
            self.send_started = time.time()
            senders = [asyncio.create_task(self.sender(s)) for s in range(a.senders)]
            # senders stop on their own at the deadline; bound the wait anyway
            _, pending = await asyncio.wait(senders, timeout=a.duration + 120)
            for t in pending:
                t.cancel()
            self.send_ended = time.time()
            self.send_phase_over.set()
            send_secs = time.monotonic() - self.start_mono
            # drain: wait for outstanding deliveries, bounded
            expected = self.expected_deliveries()
            drain_deadline = time.monotonic() + a.drain_timeout
            while self.stats.delivered < expected and time.monotonic() < drain_deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            drain_secs = time.time() - self.send_ended
            self.stop_sync.set()
            for t in syncers:
                t.cancel()
            await asyncio.gather(*syncers, return_exceptions=True)
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        return self.summary(send_secs, drain_secs, expected, cpu)

    def summary(self, send_secs: float, drain_secs: float, expected: int,
                loadgen_cpu: float) -> dict[str, Any]:
        st = self.stats
        for key, arrival in st.pending_done:
            sent = self.sent.get(key)
            if sent is not None and sent.t_done is not None:
                st.deliver_from_done.append(arrival - sent.t_done)
        # missing deliveries: a successfully sent event a room member never saw
        missing = 0
        for s_key, s in self.sent.items():
            if s.t_done is None:
                continue
            for ui in self.members[s.room_index]:
                if s_key not in self.received_keys[ui]:
                    missing += 1
        # total order: every member of a room saw that room's events in the same order
        order_mismatch_rooms = 0
        for r in range(len(self.rooms)):
            seqs = [self.order.get((ui, r), []) for ui in sorted(self.members[r])]
            ref = max(seqs, key=len) if seqs else []
            pos = {e: i for i, e in enumerate(ref)}
            for seq in seqs:
                idx = [pos.get(e, -1) for e in seq]
                if any(i < 0 for i in idx) or idx != sorted(idx):
                    order_mismatch_rooms += 1
                    break
        a = self.args
        return {
            "base_url": self.base,
            "prefix": self.prefix,
            "params": {"users": a.users, "rooms": a.rooms, "senders": a.senders,
                       "duration_s": a.duration, "rate": a.rate, "max_events": a.max_events,
                       "timeline_limit": a.timeline_limit,
                       "sync_timeout_ms": a.sync_timeout_ms,
                       "members_per_room": {str(r): len(m) for r, m in self.members.items()}},
            "setup": self.setup_times,
            "send_started": self.send_started,
            "send_ended": self.send_ended,
            "send_phase_s": round(send_secs, 3),
            "drain_s": round(drain_secs, 3),
            "sent_ok": self.sent_ok,
            "sent_failed": self.sent_failed,
            "sent_per_s": round(self.sent_ok / send_secs, 2) if send_secs else None,
            "expected_deliveries": expected,
            "delivered": st.delivered,
            "delivered_per_s": round(st.delivered_during_send_phase / send_secs, 2)
            if send_secs else None,
            "delivered_per_s_incl_drain": round(st.delivered / (send_secs + drain_secs), 2),
            "missing": missing,
            "duplicates": st.duplicates,
            "out_of_order": st.out_of_order,
            "order_mismatch_rooms": order_mismatch_rooms,
            "foreign": st.foreign,
            "delivered_before_ack": st.delivered_before_ack,
            "via_backfill": st.via_backfill,
            "sync_requests": st.sync_requests,
            "sync_empty": st.sync_empty,
            "sync_limited_rooms": st.sync_limited_rooms,
            "send_latency_ms": summarize_ms(st.send_latency),
            "delivery_from_send_start_ms": summarize_ms(st.deliver_from_start),
            "delivery_from_send_done_ms": summarize_ms(st.deliver_from_done),
            "errors": dict(st.errors),
            "error_count": sum(st.errors.values()),
            "loadgen_cpu_s": round(loadgen_cpu, 2),
            "ok": missing == 0 and st.duplicates == 0 and st.out_of_order == 0
            and order_mismatch_rooms == 0 and self.sent_failed == 0,
        }


def print_report(s: dict[str, Any]) -> None:
    def lat(name: str) -> str:
        v = s[name]
        return f"p50 {v['p50']} / p95 {v['p95']} / p99 {v['p99']} ms  (n={v['count']})"
    print(f"run {s['prefix']} against {s['base_url']}  params {s['params']}")
    print(f"  setup: {s['setup']}")
    print(f"  sent: {s['sent_ok']} ok, {s['sent_failed']} failed in {s['send_phase_s']} s"
          f" -> {s['sent_per_s']} events/s")
    print(f"  delivered: {s['delivered']} of {s['expected_deliveries']} expected"
          f" ({s['delivered_per_s']} /s during send phase; drain {s['drain_s']} s)")
    print(f"  send latency:             {lat('send_latency_ms')}")
    print(f"  delivery from send start: {lat('delivery_from_send_start_ms')}")
    print(f"  delivery from send done:  {lat('delivery_from_send_done_ms')}")
    print(f"  checks: missing {s['missing']}, duplicates {s['duplicates']}, out_of_order"
          f" {s['out_of_order']}, order_mismatch_rooms {s['order_mismatch_rooms']},"
          f" delivered_before_ack {s['delivered_before_ack']}, via_backfill"
          f" {s['via_backfill']}")
    print(f"  syncs: {s['sync_requests']} ({s['sync_empty']} empty, "
          f"{s['sync_limited_rooms']} limited room timelines); loadgen CPU"
          f" {s['loadgen_cpu_s']} s")
    print(f"  errors: {s['error_count']} {s['errors'] or ''}")
    print(f"  OK: {s['ok']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8008")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--shared-secret", help="registration_shared_secret (admin register API)")
    g.add_argument("--register-open", action="store_true",
                   help="use open registration (m.login.dummy)")
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--rooms", type=int, default=5)
    p.add_argument("--senders", type=int, default=10, help="concurrent sending tasks")
    p.add_argument("--duration", type=float, default=30.0, help="send phase, seconds")
    p.add_argument("--rate", type=float, default=0.0,
                   help="total events/s over all senders; 0 = as fast as possible")
    p.add_argument("--max-events", type=int, default=100_000,
                   help="hard cap on messages sent (0 = no cap)")
    p.add_argument("--timeline-limit", type=int, default=50,
                   help="sync filter room.timeline.limit (gaps are backfilled via /messages)")
    p.add_argument("--sync-timeout-ms", type=int, default=30_000)
    p.add_argument("--drain-timeout", type=float, default=20.0,
                   help="after sending stops, wait at most this long for deliveries")
    p.add_argument("--settle", type=float, default=0.5,
                   help="pause between starting the /sync loops and the senders")
    p.add_argument("--prefix", help="user localpart prefix (default: random per run)")
    p.add_argument("--json-out", help="write the JSON summary here")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback base URL (off by default)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if not args.allow_remote and not is_loopback(args.base_url):
        p.error(f"{args.base_url} is not a loopback address; pass --allow-remote to insist")
    if args.users < 1 or args.rooms < 1 or args.senders < 1 or args.duration <= 0:
        p.error("users, rooms, senders and duration must be positive")
    return args


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    return await Run(args).run()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    summary = asyncio.run(amain(args))
    if not args.quiet:
        print_report(summary)
    if args.json_out:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
        with open(args.json_out, "w") as f:
            json.dump(summary, f, indent=2)
    return 0 if summary["ok"] and summary["error_count"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
