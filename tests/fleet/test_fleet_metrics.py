"""Watching a fleet: every process's Prometheus metrics, and the status page in a browser.

One fleet whose replication listeners also serve the ``metrics`` resource.
Metrics must parse as Prometheus text and say what the fleet did (requests
by servlet, transactions by name, events persisted); the events stream's
lag must rise while a persister is stopped and fall once it runs again;
the status page, loaded in headless Chromium, shows every process and the
same stream positions as ``/_myelin/status``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fleet import Fleet, User, http
from tests.support.postgres import PostgresServer

PERSISTERS = ("event_persister1", "event_persister2")


@pytest.fixture(scope="module")
def fleet(postgres_server: PostgresServer) -> Iterator[Fleet]:
    running = Fleet(postgres_server, metrics=True)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        errors = running.all_errors()
        if errors:
            print(f"ERROR lines in the fleet's logs ({running.workdir}):\n{errors}")
        else:
            running.cleanup()


Samples = list[tuple[str, dict[str, str], float]]


def scrape(fleet: Fleet, name: str) -> Samples:
    status, body = http("GET", fleet.replication_url(name) + "/metrics")
    assert status == 200, (name, status)
    assert isinstance(body, str)
    return [(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(body) for s in family.samples]


def family_names(fleet: Fleet, name: str) -> set[str]:
    status, body = http("GET", fleet.replication_url(name) + "/metrics")
    assert status == 200 and isinstance(body, str)
    return {f.name for f in text_string_to_metric_families(body)}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    for sample_name, sample_labels, sample_value in samples:
        if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items()):
            return sample_value
    return None


def room_persister(fleet: Fleet, room_id: str) -> str:
    rows = fleet.query("SELECT DISTINCT instance_name FROM events WHERE room_id = $1", room_id)
    names = {r["instance_name"] for r in rows}
    assert len(names) == 1, names
    return str(names.pop())


def events_lag(fleet: Fleet, name: str) -> float:
    lag = value(scrape(fleet, name), "myelin_stream_lag", stream="events")
    assert lag is not None
    return lag


def wait_for(check: Any, what: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_every_process_serves_metrics_that_say_what_it_did(fleet: Fleet) -> None:
    alice = User.register(fleet, "alice")
    room = alice.create_room()
    for i in range(3):
        alice.send(room, f"counted {i}")
    persister = room_persister(fleet, room)
    for name in fleet.processes:
        samples = scrape(fleet, name)
        names = {s[0] for s in samples}
        for family in ("myelin_stream_lag", "myelin_stream_position", "myelin_cache_size",
                       "myelin_db_pool_connections", "process_cpu_seconds_total",
                       "process_resident_memory_bytes", "myelin_sync_waiting"):
            assert family in names, (name, family)
        # Every sample says which process it is from.
        myelin = [s for s in samples if s[0].startswith("myelin_")]
        assert all(s[1].get("instance") == name or
                   (name == "main" and s[1].get("instance") in ("main", "master"))
                   for s in myelin), name
        pool = value(samples, "myelin_db_pool_connections", state="max")
        assert pool is not None and pool >= 1
    persisted = scrape(fleet, persister)
    assert (value(persisted, "myelin_events_persisted_total") or 0) >= 4  # create + 3 sends
    # The persister's transactions are named, with latency histograms.
    txn_names = {s[1]["name"] for s in persisted
                 if s[0] == "myelin_db_transaction_duration_seconds_count"}
    assert txn_names, "no named transactions"
    # Some process served the sends: counted by servlet and status, with a histogram.
    sends = 0.0
    for name in fleet.processes:
        samples = scrape(fleet, name)
        for sample_name, labels, v in samples:
            if sample_name == "myelin_http_requests_total" and labels.get("method") == "PUT" \
                    and labels.get("code") == "200" and "send" in labels.get("servlet", ""):
                sends += v
                assert value(samples, "myelin_http_request_duration_seconds_count",
                             servlet=labels["servlet"], method="PUT")
    assert sends >= 3


def test_the_grafana_dashboard_only_uses_metrics_the_fleet_exports(fleet: Fleet) -> None:
    path = os.path.join(os.path.dirname(__file__), "..", "..", "contrib", "grafana",
                        "myelin.json")
    with open(path, encoding="utf-8") as f:
        dashboard = json.load(f)
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\b(?:myelin|process)_[a-z_]+", e)}
    assert len(used) >= 15
    exported: set[str] = set()
    for name in fleet.processes:
        exported |= family_names(fleet, name)
    suffixes = re.compile(r"_(total|bucket|count|sum)$")
    missing = {m for m in used if m not in exported and suffixes.sub("", m) not in exported}
    assert not missing, missing


def test_events_lag_rises_while_a_persister_is_stopped_and_falls_when_it_returns(
        fleet: Fleet) -> None:
    alice = User.register(fleet, "lagger")
    room = alice.create_room()
    busy = room_persister(fleet, room)
    idle = next(p for p in PERSISTERS if p != busy)
    watchers = ["main", "generic_worker1"]
    wait_for(lambda: all(events_lag(fleet, w) == 0 for w in watchers), "no lag to start with")
    fleet.kill(idle, signal.SIGSTOP)
    try:
        for i in range(3):
            alice.send(room, f"while {idle} is stopped {i}")
        # The stopped persister cannot say it is idle: readers' minimum stays behind.
        wait_for(lambda: all(events_lag(fleet, w) >= 3 for w in watchers), "lag to rise")
        # Main stops hearing from it, and says so.
        wait_for(lambda: heard(fleet)[idle]["silent"], f"{idle} to be marked silent", 40)
    finally:
        fleet.kill(idle, signal.SIGCONT)
    wait_for(lambda: all(events_lag(fleet, w) == 0 for w in watchers), "lag to fall")
    wait_for(lambda: not heard(fleet)[idle]["silent"], f"{idle} to be heard again", 20)


def heard(fleet: Fleet) -> dict[str, dict[str, Any]]:
    return {p["instance"]: p for p in fleet.status("main")["fleet"]}


class _Dom(HTMLParser):
    """The status page's tables, read from Chromium's DOM: data-* rows and their cells."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[dict[str, str], list[tuple[str, str]]]] = []
        self._cell: list[str] | None = None
        self._cell_class = ""
        self.writer_positions: dict[tuple[str, str], int] = {}
        self._stream = ""
        self._writer = ""
        self._in_writer_position = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "tr":
            self.rows.append((a, []))
            self._stream = a.get("data-stream", "")
        elif tag == "td":
            self._cell, self._cell_class = [], a.get("class", "")
        elif tag == "span" and "data-writer" in a:
            self._writer = a["data-writer"]
        elif tag == "span" and a.get("class") == "writer-position":
            self._in_writer_position = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self.rows:
            self.rows[-1][1].append((self._cell_class, "".join(self._cell).strip()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_writer_position:
            self.writer_positions[(self._stream, self._writer)] = int(data)
            self._in_writer_position = False


def load_in_chromium(url: str) -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium package is not installed")
    with tempfile.TemporaryDirectory(prefix="myelin-chromium-") as profile:
        done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                               f"--user-data-dir={profile}", "--dump-dom", url],
                              capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_status_page_shows_the_fleet_in_a_browser(fleet: Fleet) -> None:
    user = User.register(fleet, "watcher")
    room = user.create_room()
    for i in range(2):
        user.send(room, f"seen on the page {i}")
    # Every process publishes its summary every few seconds: wait until main has heard all.
    wait_for(lambda: {p["instance"] for p in fleet.status("main")["fleet"]}
             >= set(fleet.processes) - {"main"}, "main to hear of every process", 20)
    status = fleet.status("main")
    dom = _Dom()
    dom.feed(load_in_chromium(fleet.replication_url("main") + "/_myelin/status.html"))
    processes = {attrs["data-instance"]: dict(cells) for attrs, cells in dom.rows
                 if "process" in attrs.get("class", "")}
    assert set(fleet.processes) - {"main"} <= set(processes), processes
    assert status["instance"] in processes
    for name, cells in processes.items():
        assert "SILENT" not in cells["heard"], (name, cells)
    roles = {name: cells["roles"] for name, cells in processes.items()}
    assert "writer:events" in roles["event_persister1"]
    # Requests were served somewhere in the last minute, and the page says so.
    assert sum(float(cells["num requests"]) for cells in processes.values()) > 0
    # The events stream, each writer's position as main knows it, no earlier
    # than in the status JSON read just before.
    for writer, position in status["streams"]["events"]["writers"].items():
        assert dom.writer_positions[("events", writer)] >= position
    assert re.search(r"event_persister[12]", " ".join(w for _, w in dom.writer_positions))
