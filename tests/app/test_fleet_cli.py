"""``myelin fleet start|stop|status``, run as a real subprocess.

Workers cannot run on SQLite, so the happy path is a fleet of one (main on
SQLite, an empty workers directory); a worker whose database is unreachable
shows how a failing process is reported.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from myelin.app.fleet import FleetRunner
from myelin.app.routing_plan import compact_roles
from tests.support.postgres import free_port
from tests.support.server import make_server_config


def myelin(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "myelin", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def one_process_fleet(tmp_path: Path) -> Iterator[dict[str, Any]]:
    config, _, port = make_server_config("sqlite", None, str(tmp_path))
    config_path = tmp_path / "homeserver.yaml"
    config_path.write_text(yaml.safe_dump(config))
    workers = tmp_path / "workers"
    workers.mkdir()
    run_dir = tmp_path / "run"
    args = ["-c", str(config_path), "--workers", str(workers), "--run-dir", str(run_dir)]
    yield {"args": args, "run_dir": run_dir, "workers": workers, "port": port,
           "config": config, "config_path": config_path, "tmp": tmp_path}
    # Whatever a test left running.
    myelin("fleet", "stop", *args, "--timeout", "20")


def test_start_status_stop_one_process(one_process_fleet: dict[str, Any]) -> None:
    args, run_dir = one_process_fleet["args"], one_process_fleet["run_dir"]
    started = myelin("fleet", "start", *args, "--timeout", "60")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "main: started (pid" in started.stdout
    pid = int((run_dir / "main.pid").read_text())
    assert _alive(pid)
    assert (run_dir / "main.log").exists()

    again = myelin("fleet", "start", *args)
    assert again.returncode == 0, again.stderr
    assert f"main: already running (pid {pid})" in again.stdout
    assert int((run_dir / "main.pid").read_text()) == pid

    status = myelin("fleet", "status", *args)
    assert status.returncode == 0, status.stdout + status.stderr
    header, row = status.stdout.splitlines()[:2]
    assert header.split()[:6] == ["NAME", "PID", "STATE", "APP", "ROLES", "HEALTH"]
    assert row.split()[:4] == ["main", str(pid), "alive", "homeserver"]
    assert "writes all streams" in row and "OK" in row

    stopped = myelin("fleet", "stop", *args)
    assert stopped.returncode == 0, stopped.stderr
    assert f"main: stopped (pid {pid})" in stopped.stdout
    assert not (run_dir / "main.pid").exists()
    assert not _alive(pid)

    after = myelin("fleet", "status", *args)
    assert after.returncode == 1
    assert after.stdout.splitlines()[1].split()[:3] == ["main", "-", "dead"]
    assert "nothing to stop" in myelin("fleet", "stop", *args).stdout


def test_failing_worker_fails_start_with_its_log(one_process_fleet: dict[str, Any]) -> None:
    args, run_dir = one_process_fleet["args"], one_process_fleet["run_dir"]
    # Valid as config (PostgreSQL, Redis), but nothing listens on that port.
    (one_process_fleet["workers"] / "broken.yaml").write_text(yaml.safe_dump({
        "worker_app": "synapse.app.generic_worker",
        "worker_name": "broken",
        "database": {"name": "psycopg2", "args": {"host": "127.0.0.1", "port": free_port(),
                                                  "database": "nowhere", "user": "nobody"}},
        "redis": {"enabled": True},
        "worker_listeners": [{"port": free_port(), "bind_addresses": ["127.0.0.1"],
                              "type": "http", "resources": [{"names": ["client"]}]}],
    }))
    result = myelin("fleet", "start", *args, "--timeout", "60")
    assert result.returncode != 0
    assert "myelin: broken exited with code 1" in result.stderr
    assert "last " in result.stderr and "broken.log" in result.stderr
    assert "cannot start: cannot open the postgres database" in result.stderr
    assert not (run_dir / "broken.pid").exists()
    # Main came up first and is left running for the admin to fix the worker.
    assert (run_dir / "main.pid").exists()
    stopped = myelin("fleet", "stop", *args)
    assert stopped.returncode == 0 and "main: stopped" in stopped.stdout


def test_bad_worker_file_starts_nothing(one_process_fleet: dict[str, Any]) -> None:
    args, run_dir = one_process_fleet["args"], one_process_fleet["run_dir"]
    (one_process_fleet["workers"] / "nameless.yaml").write_text(
        "worker_app: synapse.app.generic_worker\n")
    result = myelin("fleet", "start", *args)
    assert result.returncode == 1
    assert "nameless.yaml" in result.stderr and "worker_name" in result.stderr
    assert "nothing started" in result.stderr
    assert not (run_dir / "main.pid").exists()


def test_stop_removes_stale_pid_files(one_process_fleet: dict[str, Any]) -> None:
    run_dir = one_process_fleet["run_dir"]
    run_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_dir / "main.pid").write_text(f"{dead.pid}\n")
    (run_dir / "gone.pid").write_text("not a pid\n")
    result = myelin("fleet", "stop", *one_process_fleet["args"])
    assert result.returncode == 0, result.stderr
    assert "main: not running" in result.stdout and "gone: not running" in result.stdout
    assert list(run_dir.glob("*.pid")) == []


# -- status from /_myelin/status -------------------------------------------------------

class _StatusStub:
    """A fake main: an aiohttp server answering /_myelin/status on a port."""

    def __init__(self, port: int, body: dict[str, Any]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner: web.AppRunner | None = None

        async def status(request: web.Request) -> web.Response:
            return web.json_response(body)

        async def health(request: web.Request) -> web.Response:
            return web.Response(text="OK")

        async def start() -> None:
            app = web.Application()
            app.router.add_get("/_myelin/status", status)
            app.router.add_get("/health", health)
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", port).start()

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    def close(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_status_shows_streams_from_the_status_endpoint(tmp_path: Path) -> None:
    config, _, _ = make_server_config("sqlite", None, str(tmp_path))
    replication = free_port()
    config["listeners"].append({"port": replication, "bind_addresses": ["127.0.0.1"],
                                "type": "http", "resources": [{"names": ["replication"]}]})
    config_path = tmp_path / "homeserver.yaml"
    config_path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # Something alive whose command line says myelin stands in for main.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                "myelin-stand-in"])
    stub = _StatusStub(replication, {
        "instance": "master", "app": "synapse.app.homeserver",
        "roles": ["main", "writer:events", "pusher"], "database": True, "redis": None,
        "streams": {"events": {"position": 42, "writers": {"master": 42}, "lag": 0},
                    "receipts": {"position": 7, "writers": {"master": 5, "other": 7},
                                 "lag": 2}}})
    try:
        (run_dir / "main.pid").write_text(f"{sleeper.pid}\n")
        out, err = io.StringIO(), io.StringIO()
        code = FleetRunner([str(config_path)], None, str(run_dir), out=out, err=err).status()
        text = out.getvalue()
        assert code == 0, text + err.getvalue()
        lines = text.splitlines()
        assert lines[1].split()[:3] == ["main", str(sleeper.pid), "alive"]
        assert "main, writes events, pusher" in lines[1]
        events = next(line for line in lines if line.startswith("events"))
        receipts = next(line for line in lines if line.startswith("receipts"))
        assert events.split() == ["events", "42"]
        assert "7 (lag 2)" in receipts and "main=5" in receipts and "other=7" in receipts
    finally:
        stub.close()
        sleeper.send_signal(signal.SIGTERM)
        sleeper.wait(10)


def test_compact_roles() -> None:
    assert compact_roles(["generic"]) == "generic"
    assert compact_roles(["writer:typing", "writer:presence"]) == "writes typing+presence"
    assert compact_roles(["background_tasks"]) == "background_tasks"


def test_start_times_out_on_a_silent_process(tmp_path: Path) -> None:
    """A process that never answers /health fails start after --timeout."""
    config, _, _ = make_server_config("sqlite", None, str(tmp_path))
    config_path = tmp_path / "homeserver.yaml"
    config_path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    runner = FleetRunner([str(config_path)], None, str(run_dir), timeout=0.1,
                         out=io.StringIO(), err=io.StringIO())
    started = time.monotonic()
    assert runner.start() == 1
    assert time.monotonic() - started < 30
    err = runner.err.getvalue()  # type: ignore[attr-defined]
    assert "main did not answer GET /health within 0.1s" in err
    stopper = FleetRunner([str(config_path)], None, str(run_dir), timeout=20,
                          out=io.StringIO(), err=io.StringIO())
    assert stopper.stop() == 0
    assert list(run_dir.glob("*.pid")) == []
