"""Run a real Myelin process on loopback and talk to it over HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import yaml
from signedjson.key import generate_signing_key, write_signing_keys

from tests.support.postgres import PostgresServer, create_database, free_port

SERVER_NAME = "test.localhost"


def http(method: str, url: str, body: Any = None, token: str | None = None,
         raw: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 60.0) -> tuple[int, Any]:
    """A tiny blocking JSON client: returns (status, decoded JSON or text)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, payload = e.code, e.read()
    try:
        return status, json.loads(payload) if payload else None
    except ValueError:
        return status, payload.decode(errors="replace")


@dataclass
class ServerProcess:
    """A running ``myelin run`` subprocess and how to reach it."""

    base_url: str
    config_path: str
    shared_secret: str
    workdir: str
    engine: str
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""
    extra_config: dict[str, Any] = field(default_factory=dict)
    server_name: str = SERVER_NAME

    def url(self, path: str) -> str:
        return self.base_url + path

    def request(self, method: str, path: str, body: Any = None, token: str | None = None,
                **kwargs: Any) -> tuple[int, Any]:
        return http(method, self.url(path), body, token, **kwargs)

    def register(self, localpart: str, password: str = "correct horse",
                 admin: bool = False) -> dict[str, Any]:
        """Register through the shared-secret admin API; returns the login response."""
        status, body = self.request("GET", "/_synapse/admin/v1/register")
        assert status == 200, body
        nonce = body["nonce"]
        mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(nonce.encode() + b"\x00" + localpart.encode() + b"\x00" + password.encode()
                   + b"\x00" + (b"admin" if admin else b"notadmin"))
        status, body = self.request("POST", "/_synapse/admin/v1/register", {
            "nonce": nonce, "username": localpart, "password": password, "admin": admin,
            "mac": mac.hexdigest()})
        assert status == 200, body
        return dict(body)

    def start(self) -> None:
        log = open(self.log_path, "ab")
        env = {**os.environ, "MYELIN_LOG_LEVEL": os.environ.get("MYELIN_LOG_LEVEL", "INFO")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "myelin", "run", "--config-path", self.config_path],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url("/health"), timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not come up:\n{self.log()}")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-20000:]
        except OSError:
            return ""


_db_counter = 0


def make_server_config(engine: str, pg: PostgresServer | None, workdir: str,
                       extra: dict[str, Any] | None = None) -> tuple[dict[str, Any], str, int]:
    global _db_counter
    port = free_port()
    key_path = os.path.join(workdir, "signing.key")
    with open(key_path, "w") as f:
        write_signing_keys(f, [generate_signing_key("test")])
    if engine == "postgres":
        assert pg is not None
        _db_counter += 1
        name = f"myelin_{os.getpid()}_{_db_counter}_{int(time.time() * 1000) % 100000}"
        create_database(pg, name)
        database: dict[str, Any] = {"name": "psycopg2", "args": {
            "user": pg.user, "host": pg.host, "port": pg.port, "database": name,
            "cp_min": 1, "cp_max": 10}}
    else:
        database = {"name": "sqlite3", "args": {"database": os.path.join(workdir, "hs.db")}}
    secret = "shared-secret-for-tests"
    lenient = {"per_second": 10000, "burst_count": 10000}
    config: dict[str, Any] = {
        "server_name": SERVER_NAME,
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http",
                       "resources": [{"names": ["client", "federation"]}]}],
        "database": database,
        "signing_key_path": key_path,
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "registration_shared_secret": secret,
        "media_store_path": os.path.join(workdir, "media"),
        "rc_message": lenient, "rc_registration": lenient,
        "rc_login": {"address": lenient, "account": lenient, "failed_attempts": lenient},
        "rc_joins": {"local": lenient}, "rc_invites": {"per_room": lenient},
    }
    config.update(extra or {})
    return config, secret, port


def launch_server(engine: str, pg: PostgresServer | None,
                  extra: dict[str, Any] | None = None) -> ServerProcess:
    workdir = tempfile.mkdtemp(prefix="myelin-hs-")
    config, secret, port = make_server_config(engine, pg, workdir, extra)
    config_path = os.path.join(workdir, "homeserver.yaml")
    with open(config_path, "w") as f:
        yaml.safe_dump(config, f)
    server = ServerProcess(base_url=f"http://127.0.0.1:{port}", config_path=config_path,
                           shared_secret=secret, workdir=workdir, engine=engine,
                           log_path=os.path.join(workdir, "server.log"),
                           extra_config=extra or {})
    server.start()
    return server
