"""Run a whole Myelin fleet (main + six workers) on loopback behind a real nginx.

The layout is the seed's example fleet (contrib/fleet-example): main,
two event persisters, one stream writer for the small streams, a background
worker and two generic workers, all on one fresh PostgreSQL database and one
Redis of the fleet's own (so a test may restart it). The processes are started
with the real ``myelin fleet start``; nginx gets its whole config from
``myelin routes --nginx --full``.

``Fleet.stop()`` ends everything that was started, whatever state it is in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from signedjson.key import generate_signing_key, write_signing_keys

from myelin.app.fleet import pid_alive
from tests.support.postgres import PostgresServer, free_port
from tests.support.redis import RedisServer, start_redis
from tests.support.server import SERVER_NAME, ServerProcess
from tests.support.server import http as server_http

MYELIN = [sys.executable, "-m", "myelin.cli"]
REGISTRATION_SECRET = "fleet-registration-secret"
REPLICATION_SECRET = "fleet-replication-secret"
HTTP_TIMEOUT = 60.0

# name -> which listeners it has (client listener, replication listener)
LAYOUT: dict[str, tuple[bool, bool]] = {
    "main": (True, True),
    "event_persister1": (False, True),
    "event_persister2": (False, True),
    "stream_writer": (True, True),
    "background_worker": (False, True),
    "generic_worker1": (True, True),
    "generic_worker2": (True, True),
}
WORKERS = [name for name in LAYOUT if name != "main"]
STREAM_WRITERS: dict[str, Any] = {
    "events": ["event_persister1", "event_persister2"],
    "typing": "stream_writer", "to_device": "stream_writer",
    "account_data": "stream_writer", "receipts": "stream_writer",
    "presence": "stream_writer"}


def http(method: str, url: str, body: Any = None, token: str | None = None,
         headers: dict[str, str] | None = None, timeout: float = HTTP_TIMEOUT,
         ) -> tuple[int, Any]:
    """A blocking JSON request with a timeout; (status, decoded JSON or text).

    Connection failures and timeouts raise (OSError / TimeoutError)."""
    return server_http(method, url, body, token, headers=headers, timeout=timeout)


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our child (processes ``restart`` started are)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def _run_db(coro_factory: Any) -> Any:
    """Run an asyncpg coroutine on a fresh loop in a thread (safe inside async tests)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_factory())).result(timeout=60)


def create_c_database(pg: PostgresServer, name: str) -> None:
    """A fresh database with C collation (what Synapse requires of its database)."""
    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(user=pg.user, host=pg.host, port=pg.port,
                                     database="postgres")
        try:
            await conn.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 "
                               "ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'")
        finally:
            await conn.close()

    _run_db(create)


def start_nginx(nginx_dir: str, conf_text: str, port: int) -> subprocess.Popen[bytes]:
    """Write ``conf_text`` to ``nginx_dir/nginx.conf`` and run nginx on it (in the
    foreground, as our child) until it listens on ``port``."""
    os.makedirs(nginx_dir, exist_ok=True)
    conf = os.path.join(nginx_dir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(conf_text)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    error_log = os.path.join(nginx_dir, "error.log")
    stderr_log = os.path.join(nginx_dir, "stderr.log")
    with open(stderr_log, "ab") as stderr:
        proc = subprocess.Popen(
            [nginx, "-p", nginx_dir, "-e", error_log, "-c", conf, "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=stderr)
    if not _wait_port(port, 15) or proc.poll() is not None:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise RuntimeError(f"nginx did not start:\n{Fleet._read(error_log)}"
                           f"{Fleet._read(stderr_log)}")
    return proc


class FleetEndpoint(ServerProcess):
    """One way into the fleet (nginx, or a process's client listener directly),
    usable wherever tests take a ServerProcess (TokenClient, nio helpers).
    Registration always goes to main, the only process that serves it."""

    fleet: Fleet

    def register(self, localpart: str, password: str = "correct horse",
                 admin: bool = False) -> dict[str, Any]:
        return self.fleet.register(localpart, password, admin)

    def start(self) -> None:  # the fleet starts and stops its processes
        raise NotImplementedError("use Fleet.restart")

    def stop(self) -> int | None:
        return None


@dataclass
class Process:
    name: str
    client_port: int | None
    replication_port: int | None
    config_paths: list[str]


class Fleet:
    """The seed's example fleet in a temp dir. Use as a context manager, or call
    ``start()`` and (always) ``stop()``."""

    def __init__(self, pg: PostgresServer, *, log_level: str = "INFO",
                 extra_shared: dict[str, Any] | None = None,
                 layout: dict[str, tuple[bool, bool]] | None = None,
                 stream_writers: dict[str, Any] | None = None,
                 metrics: bool = False, server_name: str | None = None,
                 nginx_port: int | None = None,
                 nginx_rewrite: Callable[[str], str] | None = None) -> None:
        """``layout``: process name -> (has a client listener, has a replication
        listener), main included; the seed's example fleet by default.
        ``metrics``: every replication listener also serves the ``metrics``
        resource (Prometheus text and the status page).
        ``server_name``/``nginx_port``: chosen by the caller (a federating fleet
        is named after its TLS port); ``nginx_rewrite`` edits the generated
        nginx.conf before nginx starts (e.g. to add a TLS listener)."""
        self.metrics = metrics
        self.pg = pg
        self.layout = layout or LAYOUT
        self.stream_writers = stream_writers or STREAM_WRITERS
        self.workers = [name for name in self.layout if name != "main"]
        self.log_level = log_level
        self.extra_shared = extra_shared or {}
        self.workdir = tempfile.mkdtemp(prefix="myelin-fleet-")
        self.run_dir = os.path.join(self.workdir, "run")
        self.workers_dir = os.path.join(self.workdir, "workers")
        self.nginx_dir = os.path.join(self.workdir, "nginx")
        self.shared_path = os.path.join(self.workdir, "homeserver.yaml")
        self.database = f"fleet_{os.getpid()}_{int(time.time() * 1000) % 10_000_000}"
        self.redis: RedisServer | None = None
        self.nginx: subprocess.Popen[bytes] | None = None
        self.nginx_port = nginx_port or free_port()
        self.nginx_rewrite = nginx_rewrite
        self.processes: dict[str, Process] = {}
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self.server_name = server_name or SERVER_NAME
        self.shared_secret = REGISTRATION_SECRET
        self.replication_secret = REPLICATION_SECRET
        # Substrings of ERROR lines a test provoked on purpose (all_errors skips them).
        self.expected_errors: list[str] = []

    # -- configuration ---------------------------------------------------------------
    def _ports(self) -> None:
        used: set[int] = {self.nginx_port}

        def port() -> int:
            while True:
                p = free_port()
                if p not in used:
                    used.add(p)
                    return p

        for name, (client, replication) in self.layout.items():
            paths = [self.shared_path]
            if name != "main":
                paths.append(os.path.join(self.workers_dir, f"{name}.yaml"))
            self.processes[name] = Process(name, port() if client else None,
                                           port() if replication else None, paths)

    def _listeners(self, process: Process) -> list[dict[str, Any]]:
        out = []
        if process.client_port:
            names = ["client"] if process.name == "stream_writer" else ["client", "federation"]
            out.append({"port": process.client_port, "bind_addresses": ["127.0.0.1"],
                        "type": "http", "x_forwarded": True, "resources": [{"names": names}]})
        if process.replication_port:
            names = ["replication", "metrics"] if self.metrics else ["replication"]
            out.append({"port": process.replication_port, "bind_addresses": ["127.0.0.1"],
                        "type": "http", "resources": [{"names": names}]})
        return out

    def write_config(self) -> None:
        os.makedirs(self.workers_dir, exist_ok=True)
        os.makedirs(self.run_dir, exist_ok=True)
        self._ports()
        key_path = os.path.join(self.workdir, "signing.key")
        with open(key_path, "w") as f:
            write_signing_keys(f, [generate_signing_key("fleet")])
        assert self.redis is not None
        lenient = {"per_second": 10000, "burst_count": 10000}
        main = self.processes["main"]
        writers = {w for ws in self.stream_writers.values()
                   for w in ([ws] if isinstance(ws, str) else ws)}
        shared: dict[str, Any] = {
            "server_name": self.server_name,
            "public_baseurl": f"http://127.0.0.1:{self.nginx_port}/",
            "listeners": self._listeners(main),
            "database": {"name": "psycopg2", "args": {
                "user": self.pg.user, "host": self.pg.host, "port": self.pg.port,
                "database": self.database, "cp_min": 1, "cp_max": 5}},
            "redis": {"enabled": True, "host": "127.0.0.1", "port": self.redis.port},
            "worker_replication_secret": self.replication_secret,
            "instance_map": {
                name: {"host": "127.0.0.1", "port": p.replication_port}
                for name, p in self.processes.items()
                if name == "main" or name in writers},
            "stream_writers": self.stream_writers,
            "run_background_tasks_on": ("background_worker" if "background_worker"
                                        in self.layout else "main"),
            "signing_key_path": key_path,
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "registration_shared_secret": self.shared_secret,
            "media_store_path": os.path.join(self.workdir, "media"),
            "rc_message": lenient, "rc_registration": lenient,
            "rc_login": {"address": lenient, "account": lenient, "failed_attempts": lenient},
            "rc_joins": {"local": lenient}, "rc_invites": {"per_room": lenient},
            **self.extra_shared,
        }
        with open(self.shared_path, "w") as f:
            yaml.safe_dump(shared, f)
        for name in self.workers:
            process = self.processes[name]
            worker = {"worker_app": "synapse.app.generic_worker", "worker_name": name,
                      "worker_listeners": self._listeners(process)}
            with open(process.config_paths[1], "w") as f:
                yaml.safe_dump(worker, f)

    # -- life cycle -----------------------------------------------------------------
    def __enter__(self) -> Fleet:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _env(self) -> dict[str, str]:
        return {**os.environ, "MYELIN_LOG_LEVEL": self.log_level}

    def start(self) -> None:
        self.redis = start_redis()
        create_c_database(self.pg, self.database)
        self.write_config()
        done = subprocess.run(
            [*MYELIN, "fleet", "start", "-c", self.shared_path, "--workers", self.workers_dir,
             "--run-dir", self.run_dir, "--timeout", "90"],
            capture_output=True, text=True, env=self._env(), timeout=150, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"myelin fleet start failed ({done.returncode}):\n"
                               f"{done.stdout}\n{done.stderr}\n{self.all_errors()}")
        for name in self.layout:
            self.wait_healthy(name, 30)
        self.start_nginx()

    def start_nginx(self) -> None:
        os.makedirs(self.nginx_dir, exist_ok=True)
        command = [*MYELIN, "routes", "--nginx", "--full", "--prefix", self.nginx_dir,
                   "-c", self.shared_path, "--workers", self.workers_dir,
                   "--listen", f"127.0.0.1:{self.nginx_port}"]
        if os.geteuid() == 0:
            command += ["--user", "root"]
        done = subprocess.run(command, capture_output=True, text=True, env=self._env(),
                              timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"myelin routes failed: {done.stderr}")
        text = self.nginx_rewrite(done.stdout) if self.nginx_rewrite else done.stdout
        self.nginx = start_nginx(self.nginx_dir, text, self.nginx_port)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                status, _ = http("GET", self.base_url + "/_matrix/client/versions", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("nginx does not reach the workers")

    def stop(self) -> None:
        """Stop nginx, every fleet process (also ones restarted by hand) and Redis."""
        if self.nginx is not None:
            if self.nginx.poll() is None:
                self.nginx.terminate()
                try:
                    self.nginx.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.nginx.kill()
                    self.nginx.wait()
            self.nginx = None
        if os.path.isdir(self.run_dir):
            with contextlib.suppress(Exception):
                subprocess.run([*MYELIN, "fleet", "stop", "-c", self.shared_path,
                                "--workers", self.workers_dir, "--run-dir", self.run_dir,
                                "--timeout", "20"],
                               capture_output=True, env=self._env(), timeout=90, check=False)
        # Whatever survived (stop failed, a pid file was lost): SIGKILL by pid.
        for name in self.layout:
            pid = self.pid(name)
            if pid is not None and pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for child in self._children.values():
            if child.poll() is None:
                child.kill()
            with contextlib.suppress(Exception):
                child.wait(timeout=10)
        self._children.clear()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- one process ----------------------------------------------------------------
    def pid(self, name: str) -> int | None:
        try:
            with open(os.path.join(self.run_dir, f"{name}.pid"), encoding="ascii") as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def alive(self, name: str) -> bool:
        pid = self.pid(name)
        if pid is None:
            return False
        _reap(pid)
        return pid_alive(pid)

    def kill(self, name: str, sig: int = signal.SIGKILL, wait: float = 20.0) -> None:
        """Send ``sig``; for SIGKILL/SIGTERM wait until the process is gone."""
        pid = self.pid(name)
        assert pid is not None, f"{name} has no pid file"
        os.kill(pid, sig)
        if sig not in (signal.SIGKILL, signal.SIGTERM):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not pid_alive(pid):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{name} (pid {pid}) still alive {wait}s after signal {sig}")

    def restart(self, name: str, timeout: float = 60.0) -> None:
        """Start ``name`` again by hand: ``myelin run -c shared [-c worker]``."""
        if self.alive(name):
            self.kill(name, signal.SIGTERM, wait=30)
        process = self.processes[name]
        command = [*MYELIN, "run"]
        for path in process.config_paths:
            command += ["-c", path]
        log_path = self.log_path(name)
        with open(log_path, "ab") as log:
            log.write(f"--- restarted by the test: {' '.join(command)}\n".encode())
            log.flush()
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     env=self._env())
        old = self._children.pop(name, None)
        if old is not None:
            with contextlib.suppress(Exception):
                old.wait(timeout=1)
        self._children[name] = child
        with open(os.path.join(self.run_dir, f"{name}.pid"), "w", encoding="ascii") as f:
            f.write(f"{child.pid}\n")
        self.wait_healthy(name, timeout)

    def wait_healthy(self, name: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        url = self.any_url(name) + "/health"
        while time.monotonic() < deadline:
            child = self._children.get(name)
            if child is not None and child.poll() is not None:
                raise RuntimeError(f"{name} exited ({child.returncode}):\n{self.logs(name)}")
            try:
                status, _ = http("GET", url, timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{name} not healthy after {timeout}s:\n{self.logs(name)}")

    def log_path(self, name: str) -> str:
        return os.path.join(self.run_dir, f"{name}.log")

    @staticmethod
    def _read(path: str, limit: int = 20000) -> str:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()[-limit:]
        except OSError:
            return ""

    def logs(self, name: str, limit: int = 20000) -> str:
        return self._read(self.log_path(name), limit)

    def errors(self, name: str) -> list[str]:
        """ERROR/CRITICAL lines and tracebacks in ``name``'s log."""
        out: list[str] = []
        in_traceback = False
        for line in self.logs(name, 10_000_000).splitlines():
            if "ERROR" in line or "CRITICAL" in line or line.startswith("Traceback"):
                out.append(line)
                in_traceback = line.startswith("Traceback")
            elif in_traceback and (line.startswith(" ") or line.startswith("\t")
                                   or ":" in line[:60]):
                out.append(line)
                if not line.startswith((" ", "\t")):
                    in_traceback = False
        return out

    def all_errors(self) -> str:
        """Unexpected ERROR lines and tracebacks of every process, by process."""
        parts = []
        for name in self.layout:
            lines = [line for line in self.errors(name)
                     if not any(e in line for e in self.expected_errors)]
            if lines:
                parts.append(f"== {name} ==\n" + "\n".join(lines[-60:]))
        return "\n".join(parts)

    # -- URLs -----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.nginx_port}"

    def client_url(self, name: str) -> str:
        port = self.processes[name].client_port
        assert port, f"{name} has no client listener"
        return f"http://127.0.0.1:{port}"

    def replication_url(self, name: str) -> str:
        port = self.processes[name].replication_port
        assert port, f"{name} has no replication listener"
        return f"http://127.0.0.1:{port}"

    def any_url(self, name: str) -> str:
        process = self.processes[name]
        port = process.client_port or process.replication_port
        return f"http://127.0.0.1:{port}"

    def endpoint(self, name: str | None = None) -> FleetEndpoint:
        """A ServerProcess-like view: nginx (``None``) or one process's client listener."""
        base = self.base_url if name is None else self.client_url(name)
        view = FleetEndpoint(base_url=base, config_path=self.shared_path,
                             shared_secret=self.shared_secret, workdir=self.workdir,
                             engine="postgres", log_path=self.log_path(name or "main"))
        view.fleet = self
        return view

    # -- what tests do ---------------------------------------------------------------
    def register(self, localpart: str, password: str = "correct horse",
                 admin: bool = False) -> dict[str, Any]:
        """Shared-secret registration, on main; returns the login response."""
        url = self.client_url("main") + "/_synapse/admin/v1/register"
        status, body = http("GET", url)
        assert status == 200, body
        nonce = body["nonce"]
        mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(nonce.encode() + b"\x00" + localpart.encode() + b"\x00" + password.encode()
                   + b"\x00" + (b"admin" if admin else b"notadmin"))
        status, body = http("POST", url, {"nonce": nonce, "username": localpart,
                                          "password": password, "admin": admin,
                                          "mac": mac.hexdigest()})
        assert status == 200, body
        return dict(body)

    def status(self, name: str, timeout: float = 5.0) -> dict[str, Any]:
        """``GET /_myelin/status`` on ``name``'s replication listener."""
        status, body = http("GET", self.replication_url(name) + "/_myelin/status",
                            headers={"Authorization": f"Bearer {self.replication_secret}"},
                            timeout=timeout)
        assert status == 200, (name, status, body)
        return dict(body)

    def writer_positions(self, stream: str, name: str = "main") -> dict[str, int]:
        """Per-writer positions of ``stream`` as ``name`` sees them."""
        info = self.status(name)["streams"][stream]
        return {str(k): int(v) for k, v in (info.get("writers") or {}).items()}

    def query(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """Run one SQL query on the fleet's database."""
        import asyncpg

        async def run() -> list[dict[str, Any]]:
            conn = await asyncpg.connect(**self.pg.dsn_args(self.database))
            try:
                return [dict(r) for r in await conn.fetch(sql, *args)]
            finally:
                await conn.close()

        result: list[dict[str, Any]] = _run_db(run)
        return result

    def restart_redis(self, down_for: float = 1.0) -> None:
        """kill -9 the fleet's redis-server, wait, start a new one on the same port."""
        assert self.redis is not None
        port = self.redis.port
        self.redis.proc.kill()
        self.redis.proc.wait()
        shutil.rmtree(self.redis.workdir, ignore_errors=True)
        time.sleep(down_for)
        self.redis = start_redis(port)


# -- a user of the fleet ---------------------------------------------------------------

_names = 0


def unique(prefix: str) -> str:
    """A localpart nobody in this test session has used."""
    global _names
    _names += 1
    return f"{prefix}{_names}x{os.getpid()}{int(time.time() * 1000) % 100000}"


# Incremental syncs return every new event of a room, not just the newest 10.
SYNC_FILTER = json.dumps({"room": {"timeline": {"limit": 500}}})


class User:
    """A logged-in user; requests go through ``base`` (nginx unless changed)."""

    def __init__(self, fleet: Fleet, login: dict[str, Any], base: str | None = None,
                 timeout: float = HTTP_TIMEOUT) -> None:
        self.fleet = fleet
        self.login = login
        self.user_id: str = login["user_id"]
        self.token: str = login["access_token"]
        self.device_id: str = login["device_id"]
        self.base = base or fleet.base_url
        self.timeout = timeout
        self._txn = 0

    @classmethod
    def register(cls, fleet: Fleet, prefix: str = "user") -> User:
        return cls(fleet, fleet.register(unique(prefix)))

    def via(self, name: str | None) -> User:
        """The same user and token, talking to ``name``'s client listener (None: nginx)."""
        other = User(self.fleet, self.login,
                     None if name is None else self.fleet.client_url(name), self.timeout)
        return other

    def txn(self) -> str:
        self._txn += 1
        return f"t{self._txn}_{time.monotonic_ns()}"

    def req(self, method: str, path: str, body: Any = None,
            timeout: float | None = None) -> tuple[int, Any]:
        return http(method, self.base + "/_matrix/client/v3" + path, body, self.token,
                    timeout=timeout or self.timeout)

    def ok(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        status, out = self.req(method, path, body, timeout)
        assert status == 200, (self.base, method, path, status, out)
        return out

    # -- rooms -------------------------------------------------------------------
    def create_room(self, invite: list[User] | None = None, **body: Any) -> str:
        body.setdefault("preset", "private_chat")
        if invite:
            body["invite"] = [u.user_id for u in invite]
        return str(self.ok("POST", "/createRoom", body)["room_id"])

    def join(self, room_id: str) -> None:
        self.ok("POST", f"/join/{urllib.request.quote(room_id)}", {})

    def send(self, room_id: str, text: str, txn: str | None = None,
             timeout: float | None = None) -> str:
        out = self.ok("PUT", f"/rooms/{urllib.request.quote(room_id)}/send/m.room.message/"
                      f"{txn or self.txn()}", {"msgtype": "m.text", "body": text}, timeout)
        return str(out["event_id"])

    def messages(self, room_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The room's whole history via /messages, oldest first."""
        events: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(1000):
            query = f"?dir=b&limit={limit}" + (f"&from={urllib.request.quote(token)}"
                                               if token else "")
            out = self.ok("GET", f"/rooms/{urllib.request.quote(room_id)}/messages{query}")
            events.extend(out.get("chunk", []))
            if not out.get("chunk") or not out.get("end") or out.get("end") == token:
                break
            token = out["end"]
        events.reverse()
        return events

    # -- sync --------------------------------------------------------------------
    def sync(self, since: str | None = None, timeout_ms: int = 0,
             http_timeout: float | None = None) -> dict[str, Any]:
        query = (f"?timeout={timeout_ms}&filter={urllib.request.quote(SYNC_FILTER)}"
                 + (f"&since={urllib.request.quote(since)}" if since else ""))
        out: dict[str, Any] = self.ok("GET", "/sync" + query,
                                      timeout=http_timeout or (timeout_ms / 1000 + 30))
        return out

    def sync_until(self, done: Any, since: str | None, deadline_s: float = 20.0,
                   poll_ms: int = 1000) -> tuple[list[dict[str, Any]], str]:
        """Incremental syncs from ``since`` until ``done(responses)`` is true;
        returns (every response, the last next_batch). Fails after ``deadline_s``."""
        responses: list[dict[str, Any]] = []
        token = since
        deadline = time.monotonic() + deadline_s
        while True:
            out = self.sync(token, poll_ms if token else 0)
            responses.append(out)
            token = out["next_batch"]
            if done(responses):
                return responses, token
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.user_id} via {self.base}: condition not met "
                                     f"after {deadline_s}s of /sync; last: {out}")


def timeline(responses: list[dict[str, Any]], room_id: str,
             kind: str = "m.room.message") -> list[dict[str, Any]]:
    """Every timeline event of ``kind`` for ``room_id`` across sync responses, in order."""
    out = []
    for response in responses:
        room = response.get("rooms", {}).get("join", {}).get(room_id, {})
        out.extend(e for e in room.get("timeline", {}).get("events", [])
                   if e.get("type") == kind)
    return out


def bodies(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"].get("body") for e in events if e.get("type") == "m.room.message"]


def ephemeral(responses: list[dict[str, Any]], room_id: str, kind: str) -> list[dict[str, Any]]:
    out = []
    for response in responses:
        room = response.get("rooms", {}).get("join", {}).get(room_id, {})
        out.extend(e for e in room.get("ephemeral", {}).get("events", []) if e["type"] == kind)
    return out
