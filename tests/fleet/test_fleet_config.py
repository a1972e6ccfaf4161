"""Fleet layouts that cannot work are refused before anything starts: exit 1 and
one line saying what to fix. Only ``myelin check-config`` (and ``myelin run``,
which refuses the same way before touching the database) — no services."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from signedjson.key import generate_signing_key, write_signing_keys

MYELIN = [sys.executable, "-m", "myelin.cli"]

SHARED: dict[str, Any] = {
    "server_name": "example.org",
    "listeners": [
        {"port": 18008, "bind_addresses": ["127.0.0.1"], "type": "http",
         "resources": [{"names": ["client", "federation"]}]},
        {"port": 18093, "bind_addresses": ["127.0.0.1"], "type": "http",
         "resources": [{"names": ["replication"]}]},
    ],
    "database": {"name": "psycopg2", "args": {"user": "myelin", "host": "127.0.0.1",
                                              "port": 5432, "database": "myelin"}},
    "redis": {"enabled": True, "host": "127.0.0.1", "port": 6379},
    "worker_replication_secret": "secret",
    "instance_map": {
        "main": {"host": "127.0.0.1", "port": 18093},
        "event_persister1": {"host": "127.0.0.1", "port": 18034},
        "event_persister2": {"host": "127.0.0.1", "port": 18035},
        "stream_writer": {"host": "127.0.0.1", "port": 18036},
    },
    "stream_writers": {
        "events": ["event_persister1", "event_persister2"],
        "typing": "stream_writer", "to_device": "stream_writer",
        "account_data": "stream_writer", "receipts": "stream_writer",
        "presence": "stream_writer",
    },
    "run_background_tasks_on": "background_worker",
}


def worker(name: str, replication_port: int | None = None,
           client_port: int | None = None) -> dict[str, Any]:
    listeners: list[dict[str, Any]] = []
    if client_port:
        listeners.append({"port": client_port, "bind_addresses": ["127.0.0.1"], "type": "http",
                          "x_forwarded": True, "resources": [{"names": ["client"]}]})
    if replication_port:
        listeners.append({"port": replication_port, "bind_addresses": ["127.0.0.1"],
                          "type": "http", "resources": [{"names": ["replication"]}]})
    return {"worker_app": "synapse.app.generic_worker", "worker_name": name,
            "worker_listeners": listeners}


WORKERS = {
    "event_persister1": worker("event_persister1", 18034),
    "event_persister2": worker("event_persister2", 18035),
    "stream_writer": worker("stream_writer", 18036, 18037),
    "background_worker": worker("background_worker", 18038),
    "generic_worker1": worker("generic_worker1", 18091, 18081),
}


def write_fleet(tmp: Path, shared: dict[str, Any] | None = None,
                workers: dict[str, dict[str, Any]] | None = None) -> tuple[str, dict[str, str]]:
    key = tmp / "signing.key"
    if not key.exists():
        with open(key, "w") as f:
            write_signing_keys(f, [generate_signing_key("a")])
    data = copy.deepcopy(shared if shared is not None else SHARED)
    data["signing_key_path"] = str(key)
    shared_path = tmp / "homeserver.yaml"
    shared_path.write_text(yaml.safe_dump(data))
    (tmp / "workers").mkdir(exist_ok=True)
    paths = {}
    for name, body in (workers if workers is not None else WORKERS).items():
        path = tmp / "workers" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(body))
        paths[name] = str(path)
    return str(shared_path), paths


def myelin(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MYELIN_LOG_LEVEL": "WARNING"}
    return subprocess.run([*MYELIN, *args], capture_output=True, text=True, timeout=60,
                          env=env, check=False)


def refused(done: subprocess.CompletedProcess[str]) -> str:
    """Exit 1 with exactly one line on stderr, nothing else; returns that line."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("myelin: "), lines[0]
    assert "Traceback" not in done.stderr
    return lines[0]


def test_the_example_layout_is_accepted(tmp_path: Path) -> None:
    shared, workers = write_fleet(tmp_path)
    done = myelin("check-config", "-c", shared)
    assert done.returncode == 0, done.stderr
    for name, path in workers.items():
        done = myelin("check-config", "-c", shared, "-c", path)
        assert done.returncode == 0, (name, done.stderr)
        assert f"config OK: {name}" in done.stdout


def test_worker_on_sqlite_is_refused(tmp_path: Path) -> None:
    body = {**WORKERS["generic_worker1"],
            "database": {"name": "sqlite3", "args": {"database": str(tmp_path / "w.db")}}}
    shared, workers = write_fleet(tmp_path, workers={"generic_worker1": body})
    line = refused(myelin("check-config", "-c", shared, "-c", workers["generic_worker1"]))
    assert "SQLite" in line and "PostgreSQL" in line and "database" in line, line
    assert "generic_worker1" in line, line
    # `myelin run` refuses the same way, before opening anything.
    assert refused(myelin("run", "-c", shared, "-c", workers["generic_worker1"])) == line


def test_fleet_whose_shared_config_is_on_sqlite_is_refused(tmp_path: Path) -> None:
    data = {**SHARED, "database": {"name": "sqlite3",
                                   "args": {"database": str(tmp_path / "hs.db")}}}
    shared, workers = write_fleet(tmp_path, shared=data)
    line = refused(myelin("check-config", "-c", shared))
    assert "SQLite" in line, line
    line = refused(myelin("check-config", "-c", shared, "-c", workers["event_persister1"]))
    assert "SQLite" in line and "event_persister1" in line, line


@pytest.mark.parametrize("redis", [{"enabled": False}, None])
def test_worker_without_redis_is_refused(tmp_path: Path, redis: dict[str, Any] | None) -> None:
    data = copy.deepcopy(SHARED)
    if redis is None:
        del data["redis"]
    else:
        data["redis"] = redis
    shared, workers = write_fleet(tmp_path, shared=data)
    line = refused(myelin("check-config", "-c", shared, "-c", workers["stream_writer"]))
    assert "Redis" in line and "redis.enabled" in line, line
    # main too: its config gives work to others.
    assert "Redis" in refused(myelin("check-config", "-c", shared))


def test_stream_writer_missing_from_instance_map_is_refused(tmp_path: Path) -> None:
    data = copy.deepcopy(SHARED)
    del data["instance_map"]["stream_writer"]
    shared, workers = write_fleet(tmp_path, shared=data)
    for args in (["-c", shared], ["-c", shared, "-c", workers["generic_worker1"]]):
        line = refused(myelin("check-config", *args))
        assert "stream_writer" in line and "instance_map" in line, line


def test_two_typing_writers_are_refused(tmp_path: Path) -> None:
    data = copy.deepcopy(SHARED)
    data["stream_writers"]["typing"] = ["stream_writer", "event_persister1"]
    shared, workers = write_fleet(tmp_path, shared=data)
    for args in (["-c", shared], ["-c", shared, "-c", workers["stream_writer"]]):
        line = refused(myelin("check-config", *args))
        assert "stream_writers.typing" in line and "one writer" in line, line


def test_fleet_start_refuses_a_broken_fleet_and_starts_nothing(tmp_path: Path) -> None:
    data = copy.deepcopy(SHARED)
    data["stream_writers"]["typing"] = ["stream_writer", "event_persister1"]
    shared, _ = write_fleet(tmp_path, shared=data)
    run_dir = tmp_path / "run"
    done = myelin("fleet", "start", "-c", shared, "--workers", str(tmp_path / "workers"),
                  "--run-dir", str(run_dir), "--timeout", "5")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "stream_writers.typing" in done.stderr
    assert not list(run_dir.glob("*.pid")) if run_dir.exists() else True
