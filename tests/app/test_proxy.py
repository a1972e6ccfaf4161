"""The routing plan and the nginx config `myelin routes` generates from it.

Unit tests check the plan for the example fleet (contrib/fleet-example): every
declared route reaches a process that serves it, stream routes reach their
writer, /sync is hashed by the access token's localpart, main_only routes only
reach main. The real-nginx tests run nginx on a generated nginx.conf in front
of stub HTTP servers that answer with their own name.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import io
import json
import os
import re
import shutil
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

from myelin.app.fleet import load_fleet
from myelin.app.proxy import NginxConfig, routes_command
from myelin.app.roles import MAIN
from myelin.app.routing_plan import RoutingPlan, plan_routes
from myelin.app.servlets import all_routes, routes_for_resources
from myelin.handlers.auth import generate_access_token
from myelin.http.routing import Route
from tests.support.postgres import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "contrib" / "fleet-example"
EXAMPLE_CONFIG = str(EXAMPLE / "homeserver.yaml")
EXAMPLE_WORKERS = str(EXAMPLE / "workers")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

_PLACEHOLDER = re.compile(r"\{([A-Za-z_]+)(\??)\}")
SAMPLES = {"roomId": "!room:example.org", "userId": "@alice:example.org",
           "roomIdOrAlias": "#alias:example.org", "roomAlias": "#alias:example.org",
           "eventId": "$event", "stateKey": "key"}


def sample_path(route: Route) -> str:
    """A decoded path that ``route`` serves (what nginx matches locations on)."""
    pattern = route.pattern
    version = f"/{pattern.versions[0]}" if pattern.versions else ""
    path = _PLACEHOLDER.sub(lambda m: SAMPLES.get(m.group(1), f"p{m.group(1)}"), pattern.path)
    return f"{pattern.prefix}{version}{path}"


def example_plan() -> tuple[RoutingPlan, NginxConfig]:
    fleet = load_fleet([EXAMPLE_CONFIG], EXAMPLE_WORKERS)
    assert not fleet.errors, fleet.errors
    plan = plan_routes([p.info for p in fleet.processes])
    return plan, NginxConfig(plan, fleet.processes[0].config)


# -- the plan ---------------------------------------------------------------------------

def test_example_fleet_loads_every_worker() -> None:
    fleet = load_fleet([EXAMPLE_CONFIG], EXAMPLE_WORKERS)
    assert not fleet.errors
    names = [p.name for p in fleet.processes]
    assert names == [MAIN, "background_worker", "event_persister1", "event_persister2",
                     "generic_worker1", "generic_worker2", "stream_writer"]
    persister = next(p for p in fleet.processes if p.name == "event_persister1")
    assert persister.info.roles.is_writer("events")
    assert persister.config.listeners[0].port == 18034


def test_every_declared_route_is_served_in_the_example_fleet() -> None:
    plan, _ = example_plan()
    assert len(plan.decisions) == len(all_routes())
    assert not plan.unserved()
    for decision in plan.decisions:
        if decision.private:
            assert decision.route.resource in ("replication", "metrics")
            assert decision.target is None
            continue
        assert decision.target is not None, decision.route.describe()
        for name in decision.target.processes:
            assert name in decision.served_by, decision.route.describe()
            assert plan.processes[name].serves(decision.route)


def test_generated_locations_send_each_route_to_its_target() -> None:
    """nginx picks the first matching regex location; grouping must not misroute."""
    plan, nginx = example_plan()
    for decision in plan.decisions:
        path = sample_path(decision.route)
        if decision.private:
            assert nginx.blocked(path), path
            assert nginx.blocked(path + "/../../x") and nginx.resolve("GET", path) is None
            continue
        assert decision.target is not None
        assert not nginx.blocked(path)
        upstream = nginx.resolve(decision.route.method, path)
        assert upstream is not None, path
        assert upstream.members == decision.target.processes, (
            decision.route.describe(), upstream.name)
        assert upstream.balance == decision.target.balance


def test_stream_routes_go_to_their_single_writer() -> None:
    plan, _ = example_plan()
    checked = set()
    for decision in plan.decisions:
        stream = decision.route.stream
        if decision.private:
            continue
        assert decision.target is not None
        if stream in ("typing", "to_device", "account_data", "receipts", "presence"):
            assert decision.target.processes == ("stream_writer",), decision.route.describe()
            checked.add(stream)
        elif stream in ("device_lists", "push_rules", "events"):
            # Main writes device lists and push rules, the persisters have no
            # client listener: generic workers take these and forward the write.
            assert set(decision.target.processes) == {"generic_worker1", "generic_worker2"}
    assert checked == {"typing", "to_device", "account_data", "receipts", "presence"}


def test_route_annotations() -> None:
    by_key = {(r.method, r.pattern.path): r for r in all_routes()}
    typing = by_key[("PUT", "/rooms/{roomId}/typing/{userId}")]
    assert (typing.stream, typing.affinity) == ("typing", "room")
    assert by_key[("PUT", "/sendToDevice/{eventType}/{txnId}")].affinity == "user"
    assert by_key[("GET", "/sync")].affinity == "user"
    assert by_key[("PUT", "/rooms/{roomId}/send/{eventType}/{txnId}")].stream == "events"
    assert by_key[("POST", "/rooms/{roomId}/read_markers")].stream == "receipts"
    from myelin.app.roles import WRITER_STREAMS

    for route in all_routes():
        assert route.stream is None or route.stream in WRITER_STREAMS, route.describe()


def test_main_only_routes_reach_only_main() -> None:
    plan, _ = example_plan()
    main_only = [d for d in plan.decisions if d.route.main_only]
    # Shared-secret registration (nonces in main's memory) and the admin API.
    prefixes = {d.route.pattern.prefix for d in main_only}
    assert "/_synapse/admin/v1/register" in prefixes
    assert prefixes <= {"/_synapse/admin/v1/register", "/_synapse/admin/v1",
                        "/_synapse/admin/v2"}
    paths = {d.route.pattern.prefix + d.route.pattern.path for d in main_only}
    assert {"/_synapse/admin/v2/users", "/_synapse/admin/v2/rooms/{roomId}",
            "/_synapse/admin/v1/purge_history/{roomId}"} <= paths
    for decision in main_only:
        assert decision.served_by == (MAIN,)
        assert decision.target is not None and decision.target.processes == (MAIN,)
    worker_routes = routes_for_resources(["client"], main=False)
    assert not any(r.main_only for r in worker_routes)
    assert any(r.main_only for r in routes_for_resources(["client"]))
    assert len(routes_for_resources(["client"])) - len(worker_routes) == len(main_only)


def test_sync_is_hashed_by_the_localpart_of_the_token() -> None:
    _, nginx = example_plan()
    upstream = nginx.resolve("GET", "/_matrix/client/v3/sync")
    assert upstream is not None and upstream.balance == "user"
    assert set(upstream.members) == {"generic_worker1", "generic_worker2"}
    text = nginx.render_http()
    assert "hash $myelin_user consistent;" in text
    header_rule = re.search(r'"~\*(\^Bearer syt_\(\?<myelin_header_user>[^"]+)"', text)
    query_rule = re.search(r'"~(\^syt_\(\?<myelin_query_user>[^"]+)"', text)
    assert header_rule and query_rule
    header_re = re.compile(header_rule.group(1).replace("(?<", "(?P<"), re.IGNORECASE)
    query_re = re.compile(query_rule.group(1).replace("(?<", "(?P<"))
    # Localparts whose base64 holds "_" or "-" must still come out whole.
    for localpart in ("alice", "bob.smith", "\xff\xfe?>", "a" * 50, "_-_"):
        token = generate_access_token(localpart)
        b64 = base64.urlsafe_b64encode(localpart.encode()).decode().rstrip("=")
        m = header_re.match(f"Bearer {token}")
        assert m and m.group("myelin_header_user") == b64, token
        q = query_re.match(token)
        assert q and q.group("myelin_query_user") == b64


def test_initial_sync_workers_by_name() -> None:
    fleet = load_fleet([EXAMPLE_CONFIG], EXAMPLE_WORKERS)
    base = next(p for p in fleet.processes if p.name == "generic_worker1").info
    from dataclasses import replace

    initial = replace(base, name="initial_sync1")
    plan = plan_routes([*(p.info for p in fleet.processes), initial])
    sync = next(d for d in plan.decisions if d.route.pattern.path == "/sync")
    assert sync.target is not None and set(sync.target.processes) == {
        "generic_worker1", "generic_worker2"}
    assert sync.initial is not None and sync.initial.processes == ("initial_sync1",)
    for path in ("/initialSync", "/rooms/{roomId}/initialSync"):
        decision = next(d for d in plan.decisions if d.route.pattern.path == path)
        assert decision.target is not None and decision.target.processes == ("initial_sync1",)
    other = next(d for d in plan.decisions if d.route.pattern.path == "/joined_rooms")
    assert other.target is not None and "initial_sync1" not in other.target.processes
    nginx = NginxConfig(plan, fleet.processes[0].config)
    with_since = nginx.resolve("GET", "/_matrix/client/v3/sync", since=True)
    without = nginx.resolve("GET", "/_matrix/client/v3/sync", since=False)
    assert with_since is not None and without is not None
    assert without.members == ("initial_sync1",)
    assert "initial_sync1" not in with_since.members
    assert "map $arg_since" in nginx.render_http()


def test_a_single_process_serves_everything() -> None:
    fleet = load_fleet([EXAMPLE_CONFIG], None)
    plan = plan_routes([fleet.processes[0].info])
    for decision in plan.decisions:
        if not decision.private:
            assert decision.target is not None and decision.target.processes == (MAIN,)


def test_routes_check_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "myelin", "routes", "--check", "-c", EXAMPLE_CONFIG,
         "--workers", EXAMPLE_WORKERS], capture_output=True, text=True, timeout=60,
        check=False)
    assert result.returncode == 0, result.stderr
    typing_line = next(line for line in result.stdout.splitlines() if "/typing/" in line)
    assert typing_line.startswith("PUT ")
    assert typing_line.rstrip().endswith("stream_writer")
    assert f"{len(all_routes())} routes over 7 processes" in result.stdout
    status_line = next(line for line in result.stdout.splitlines()
                       if line.startswith("GET /_myelin/status"))
    assert "not proxied" in status_line


def test_nginx_include_has_the_required_settings() -> None:
    out = io.StringIO()
    assert routes_command([EXAMPLE_CONFIG], EXAMPLE_WORKERS, nginx=True, listen="8448",
                          out=out) == 0
    text = out.getvalue()
    assert "listen 8448;" in text
    assert "keepalive 32;" in text
    assert "proxy_http_version 1.1;" in text
    assert 'proxy_set_header Connection "";' in text
    assert "proxy_read_timeout 330s;" in text
    assert "client_max_body_size 52428800;" in text
    assert "X-Forwarded-For" in text
    assert "events {" not in text
    # proxy_pass never carries a URI part: the client's request line goes through as is.
    for target in re.findall(r"proxy_pass ([^;]+);", text):
        assert re.fullmatch(r"http://\$?[A-Za-z0-9_]+", target), target
    assert text.rstrip().endswith("}")
    assert "location / {" in text


# -- real nginx in front of stub processes -----------------------------------------------

class StubServers:
    """aiohttp servers in a background thread; each answers with its name, the raw
    path it received and the X-Forwarded-For header."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.runners: list[web.AppRunner] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def add(self, name: str, port: int | None = None, path: str | None = None) -> None:
        async def handler(request: web.Request) -> web.Response:
            return web.json_response({
                "name": name, "raw_path": request.raw_path,
                "forwarded_for": request.headers.get("X-Forwarded-For")})

        async def start() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site: web.BaseSite
            if path is not None:
                site = web.UnixSite(runner, path)
            else:
                site = web.TCPSite(runner, "127.0.0.1", port)
            await site.start()
            self.runners.append(runner)

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    def close(self) -> None:
        async def stop() -> None:
            for runner in self.runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _listener(port: int | None = None, path: str | None = None,
              names: tuple[str, ...] = ("client",)) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "http", "x_forwarded": True,
                            "resources": [{"names": list(names)}]}
    if path is not None:
        spec["path"] = path
    else:
        spec.update(port=port, bind_addresses=["127.0.0.1"])
    return spec


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not os.path.exists(NGINX):
        pytest.skip("nginx is not installed")
    tmp = tmp_path_factory.mktemp("nginx-fleet")
    # Unix socket paths must stay short.
    sock_dir = Path(f"/tmp/myelin-ngx-{os.getpid()}")
    sock_dir.mkdir(exist_ok=True)
    socket_path = str(sock_dir / "writer.sock")
    ports = {name: free_port() for name in
             ("main", "main_repl", "sync1", "sync2", "writer_repl", "nginx")}
    shared = {
        "server_name": "test.localhost",
        "public_baseurl": "http://test.localhost/",
        "listeners": [_listener(ports["main"], names=("client", "federation")),
                      _listener(ports["main_repl"], names=("replication",))],
        "database": {"name": "psycopg2", "args": {"database": "unused", "host": "127.0.0.1"}},
        "redis": {"enabled": True},
        "instance_map": {"main": {"host": "127.0.0.1", "port": ports["main_repl"]},
                         "writer": {"host": "127.0.0.1", "port": ports["writer_repl"]}},
        "stream_writers": {"typing": "writer", "presence": "writer"},
        "max_upload_size": "10M",
    }
    config_path = tmp / "homeserver.yaml"
    config_path.write_text(yaml.safe_dump(shared))
    workers = tmp / "workers"
    workers.mkdir()
    for name, listeners in (
            ("sync1", [_listener(ports["sync1"], names=("client", "federation"))]),
            ("sync2", [_listener(ports["sync2"], names=("client", "federation"))]),
            ("writer", [_listener(ports["writer_repl"], names=("replication",)),
                        _listener(path=socket_path)])):
        (workers / f"{name}.yaml").write_text(yaml.safe_dump({
            "worker_app": "synapse.app.generic_worker", "worker_name": name,
            "worker_listeners": listeners}))

    stubs = StubServers()
    stubs.add("main", ports["main"])
    stubs.add("sync1", ports["sync1"])
    stubs.add("sync2", ports["sync2"])
    stubs.add("writer", path=socket_path)

    try:
        with run_nginx(tmp, config_path, workers, ports["nginx"]) as conf:
            yield {"port": ports["nginx"], "conf": conf}
    finally:
        stubs.close()
        shutil.rmtree(sock_dir, ignore_errors=True)


@contextlib.contextmanager
def run_nginx(tmp: Path, config_path: Path, workers: Path, port: int) -> Iterator[str]:
    """nginx with the config ``myelin routes --nginx --full`` makes; yields that config."""
    prefix = tmp / "nginx"
    prefix.mkdir()
    out = io.StringIO()
    assert routes_command([str(config_path)], str(workers), nginx=True, full=True,
                          prefix=str(prefix), listen=f"127.0.0.1:{port}",
                          user="root" if os.geteuid() == 0 else None, out=out) == 0
    (prefix / "nginx.conf").write_text(out.getvalue())
    base = [NGINX, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", "nginx.conf"]
    check = subprocess.run([*base, "-t"], capture_output=True, text=True, timeout=30,
                           check=False)
    assert check.returncode == 0, check.stderr
    nginx = subprocess.Popen([*base, "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                if nginx.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start: {nginx.stderr.read()!r}"
                                       if nginx.stderr else "nginx did not start") from None
                time.sleep(0.05)
        yield out.getvalue()
    finally:
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(15)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait()


def request_nginx(proxied: dict[str, Any], method: str, raw_path: str,
                  headers: dict[str, str] | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", proxied["port"], timeout=10)
    try:
        body = b"{}" if method in ("PUT", "POST") else None
        conn.request(method, raw_path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def through_nginx(proxied: dict[str, Any], method: str, raw_path: str,
                  headers: dict[str, str] | None = None) -> dict[str, Any]:
    status, result = request_nginx(proxied, method, raw_path, headers)
    assert status == 200, (status, result)
    assert isinstance(result, dict)
    return result


def test_nginx_sync_sticks_to_one_worker_per_user(proxied: dict[str, Any]) -> None:
    seen: dict[str, str] = {}
    for i in range(24):
        localpart = f"user{i}"
        token = generate_access_token(localpart)
        picks = {through_nginx(proxied, "GET", f"/_matrix/client/v3/sync?since=s{n}&timeout=0",
                               {"Authorization": f"Bearer {token}"})["name"]
                 for n in range(4)}
        # Another device of the same user has another token: same worker.
        other_device = generate_access_token(localpart)
        picks.add(through_nginx(proxied, "GET", "/_matrix/client/v3/sync",
                                {"Authorization": f"Bearer {other_device}"})["name"])
        picks.add(through_nginx(proxied, "GET",
                                f"/_matrix/client/r0/sync?access_token={token}")["name"])
        assert len(picks) == 1, (localpart, picks)
        seen[localpart] = picks.pop()
    assert set(seen.values()) == {"sync1", "sync2"}  # and users do spread


def test_nginx_typing_goes_to_the_typing_writer(proxied: dict[str, Any]) -> None:
    for version in ("api/v1", "r0", "v3"):
        answer = through_nginx(proxied, "PUT", f"/_matrix/client/{version}/rooms/"
                                                "%21room%3Atest.localhost/typing/"
                                                "%40alice%3Atest.localhost")
        assert answer["name"] == "writer"  # over the unix socket


def test_nginx_forwards_the_raw_uri(proxied: dict[str, Any]) -> None:
    raw = "/_matrix/client/v3/directory/room/%23caf%C3%A9%3Atest.localhost?x=%2F"
    answer = through_nginx(proxied, "GET", raw)
    assert answer["name"] in ("sync1", "sync2")
    assert answer["raw_path"] == raw
    # An encoded slash is not decoded on the way (nginx matches its location on
    # the decoded path, so this one reaches main, which serves every route).
    raw_slash = "/_matrix/client/v3/rooms/%21r%3Ax/state/m.room.name/a%2Fb"
    answer = through_nginx(proxied, "GET", raw_slash)
    assert answer["raw_path"] == raw_slash
    assert answer["forwarded_for"] == "127.0.0.1"


def test_nginx_unknown_paths_and_main_only_go_to_main(proxied: dict[str, Any]) -> None:
    assert through_nginx(proxied, "GET", "/_matrix/client/v3/no_such_endpoint")["name"] == "main"
    assert through_nginx(proxied, "GET", "/_synapse/admin/v1/register")["name"] == "main"
    assert through_nginx(proxied, "GET", "/_synapse/admin/v2/users")["name"] == "main"
    assert through_nginx(proxied, "DELETE",
                         "/_synapse/admin/v2/rooms/%21r%3Ax")["name"] == "main"
    assert through_nginx(proxied, "GET", "/health")["name"] == "main"
    assert through_nginx(proxied, "GET", "/")["name"] == "main"


def test_nginx_method_decides_where_a_path_goes(proxied: dict[str, Any]) -> None:
    # Setting presence goes to its writer; reading it spreads over the workers.
    path = "/_matrix/client/v3/presence/%40alice%3Atest.localhost/status"
    assert through_nginx(proxied, "PUT", path)["name"] == "writer"
    assert through_nginx(proxied, "GET", path)["name"] in ("sync1", "sync2")


def test_nginx_does_not_expose_replication_or_metrics(proxied: dict[str, Any]) -> None:
    for method, path in (("POST", "/_synapse/replication/send_event/txn1"),
                         ("POST", "/_synapse/replication/a%2Fb/c"),
                         ("GET", "/_myelin/status"), ("GET", "/_synapse/metrics"),
                         ("GET", "/metrics")):
        status, body = request_nginx(proxied, method, path)
        assert status == 404, path
        assert body["errcode"] == "M_UNRECOGNIZED"  # nginx's answer: no stub has a say


@pytest.fixture(scope="module")
def persisters_proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Three event persisters that take client requests themselves."""
    if not os.path.exists(NGINX):
        pytest.skip("nginx is not installed")
    tmp = tmp_path_factory.mktemp("nginx-persisters")
    names = ["p1", "p2", "p3"]
    ports = {name: free_port() for name in ["main", "main_repl", "nginx", *names,
                                            *(f"{n}_repl" for n in names)]}
    shared = {
        "server_name": "test.localhost",
        "listeners": [_listener(ports["main"]),
                      _listener(ports["main_repl"], names=("replication",))],
        "database": {"name": "psycopg2", "args": {"database": "unused", "host": "127.0.0.1"}},
        "redis": {"enabled": True},
        "instance_map": {"main": {"host": "127.0.0.1", "port": ports["main_repl"]},
                         **{n: {"host": "127.0.0.1", "port": ports[f"{n}_repl"]}
                            for n in names}},
        "stream_writers": {"events": names},
    }
    config_path = tmp / "homeserver.yaml"
    config_path.write_text(yaml.safe_dump(shared))
    workers = tmp / "workers"
    workers.mkdir()
    stubs = StubServers()
    stubs.add("main", ports["main"])
    for name in names:
        (workers / f"{name}.yaml").write_text(yaml.safe_dump({
            "worker_app": "synapse.app.generic_worker", "worker_name": name,
            "worker_listeners": [_listener(ports[name]),
                                 _listener(ports[f"{name}_repl"], names=("replication",))]}))
        stubs.add(name, ports[name])
    try:
        with run_nginx(tmp, config_path, workers, ports["nginx"]) as conf:
            yield {"port": ports["nginx"], "conf": conf, "writers": names}
    finally:
        stubs.close()


def test_nginx_sends_each_room_to_the_persister_that_writes_it(
        persisters_proxied: dict[str, Any]) -> None:
    from urllib.parse import quote

    from myelin.app.roles import shard_index

    writers = persisters_proxied["writers"]
    seen = set()
    for i in range(60):
        room_id = f"!room{i}x{i * 7919}:test.localhost"
        expected = writers[shard_index(room_id, len(writers))]
        # Clients encode the room id (or not): nginx hashes the decoded path.
        for encoded in (quote(room_id, safe=""), room_id):
            path = f"/_matrix/client/v3/rooms/{encoded}/send/m.room.message/t{i}"
            assert through_nginx(persisters_proxied, "PUT", path)["name"] == expected, room_id
        seen.add(expected)
    assert seen == set(writers)  # the rooms spread over every persister
