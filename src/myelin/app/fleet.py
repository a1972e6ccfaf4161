"""``myelin fleet start|stop|status``: run a whole fleet on one machine.

A fleet is the shared config (main's, ``-c homeserver.yaml``) plus one file
per worker in a directory (every ``*.yaml``). Each process is a plain
``myelin run -c homeserver.yaml -c workers/NAME.yaml``, detached from the
terminal; the run directory (default ``run/`` next to the shared config)
holds ``<name>.pid`` and ``<name>.log`` (``main.pid``, ``main.log`` for the
main process).

``start`` starts main, waits for it to answer ``GET /health``, then starts
the workers and waits for each to answer too; a process that exits or stays
silent past ``--timeout`` fails the command with its last log lines. ``stop``
sends SIGTERM to the workers, then main, and SIGKILL to any that outlive
``--timeout``. ``status`` asks each process's replication listener for
``/_myelin/status`` (falling back to ``/health``) and prints a table.
"""

from __future__ import annotations

import contextlib
import glob
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from myelin.app import pidfile
from myelin.app.roles import MAIN, ProcessRoles
from myelin.app.routing_plan import ProcessInfo, compact_roles, display_name, local_host
from myelin.config import ConfigError, HomeserverConfig, ListenerConfig, load_config

HEALTH_PATH = "/health"
STATUS_PATH = "/_myelin/status"
LOG_TAIL_LINES = 20
# A process without an HTTP listener cannot be asked; it counts as up once it
# has stayed alive this long.
NO_LISTENER_GRACE_S = 3.0


class FleetError(Exception):
    """The fleet cannot be described or acted on; the message says why."""


@dataclass
class FleetProcess:
    label: str                      # "main" or the worker_name: pid/log file names
    config_paths: tuple[str, ...]   # the files `myelin run -c ...` gets
    config: HomeserverConfig
    info: ProcessInfo = field(repr=False)

    @property
    def name(self) -> str:
        return self.info.name


@dataclass
class Fleet:
    processes: list[FleetProcess]
    errors: list[str]               # files that could not be loaded, one line each

    @property
    def main(self) -> FleetProcess | None:
        return next((p for p in self.processes if p.info.is_main), None)


def worker_files(workers_dir: str | None) -> list[str]:
    if not workers_dir:
        return []
    if not os.path.isdir(workers_dir):
        raise FleetError(f"--workers {workers_dir}: not a directory")
    found = glob.glob(os.path.join(workers_dir, "*.yaml"))
    found += glob.glob(os.path.join(workers_dir, "*.yml"))
    return sorted(found)


def _process(config: HomeserverConfig, paths: Sequence[str]) -> FleetProcess:
    roles = ProcessRoles.from_config(config)
    info = ProcessInfo(config.instance_name, config.worker_app, tuple(config.listeners), roles)
    return FleetProcess(display_name(info.name), tuple(paths), config, info)


def load_fleet(config_paths: Sequence[str], workers_dir: str | None) -> Fleet:
    """Load main and every worker file. The shared config must load (it is
    main's); a worker file that does not is reported in ``Fleet.errors``."""
    try:
        shared = load_config(list(config_paths))
    except ConfigError as e:
        raise FleetError(str(e)) from None
    if not shared.is_main_process:
        raise FleetError(f"{', '.join(config_paths)} describes worker {shared.worker_name}; "
                         "--config-path must be the shared config of the main process")
    processes = [_process(shared, config_paths)]
    errors: list[str] = []
    seen = {shared.instance_name: "the shared config"}
    for path in worker_files(workers_dir):
        try:
            config = load_config([*config_paths, path])
        except ConfigError as e:
            errors.append(f"{path}: {e}")
            continue
        if config.is_main_process:
            errors.append(f"{path}: has no worker_app, so it describes the main process again; "
                          "set worker_app: synapse.app.generic_worker and a worker_name")
            continue
        if config.instance_name in seen:
            errors.append(f"{path}: worker_name {config.instance_name} is also used by "
                          f"{seen[config.instance_name]}")
            continue
        seen[config.instance_name] = path
        processes.append(_process(config, [*config_paths, path]))
    return Fleet(processes, errors)


def default_run_dir(config_paths: Sequence[str]) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(config_paths[0])), "run")


# -- talking HTTP to one listener -----------------------------------------------------

class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def describe_listener(listener: ListenerConfig) -> str:
    if listener.path is not None:
        return f"unix:{listener.path}"
    host = local_host(listener)
    return f"[{host}]:{listener.port}" if ":" in host else f"{host}:{listener.port}"


def http_get(listener: ListenerConfig, path: str, timeout: float = 2.0,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET ``path`` on ``listener``; raises OSError/HTTPException when unreachable."""
    conn: http.client.HTTPConnection
    if listener.path is not None:
        conn = _UnixConnection(listener.path, timeout)
    else:
        if not listener.port:
            raise OSError("listener has no fixed port")
        if listener.tls:
            import ssl

            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(local_host(listener), listener.port,
                                               timeout=timeout, context=context)
        else:
            conn = http.client.HTTPConnection(local_host(listener), listener.port,
                                              timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def check_health(process: ProcessInfo, timeout: float = 1.0) -> tuple[bool, str]:
    """(healthy, what was seen) from ``GET /health`` on any of its listeners."""
    listeners = process.http_listeners()
    if not listeners:
        return False, "no HTTP listener"
    seen = "no answer"
    for listener in listeners:
        try:
            status, body = http_get(listener, HEALTH_PATH, timeout)
        except (OSError, http.client.HTTPException) as e:
            seen = f"{describe_listener(listener)}: {getattr(e, 'strerror', None) or e}"
            continue
        if status == 200 and body.strip() == b"OK":
            return True, "OK"
        seen = f"{describe_listener(listener)}: HTTP {status}"
    return False, seen


def fetch_status(process: FleetProcess, timeout: float = 2.0) -> dict[str, Any] | None:
    """The process's ``/_myelin/status`` JSON, tried on its replication listeners first."""
    listeners = process.info.http_listeners()
    listeners.sort(key=lambda lst: 0 if "replication" in lst.resources else 1)
    headers = {}
    if process.config.worker_replication_secret:
        headers["Authorization"] = f"Bearer {process.config.worker_replication_secret}"
    for listener in listeners:
        try:
            status, body = http_get(listener, STATUS_PATH, timeout, headers)
        except (OSError, http.client.HTTPException):
            continue
        if status != 200:
            continue
        try:
            data = json.loads(body)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return None


# -- processes ------------------------------------------------------------------------

def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def tail(path: str, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()[-lines:]
    except OSError:
        return []


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _write_pid(path: str, pid: int) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{pid}\n")
    os.replace(tmp, path)


@dataclass
class _Launch:
    process: FleetProcess
    pid: int
    popen: subprocess.Popen[bytes] | None   # None: it was already running
    started_at: float


class FleetRunner:
    """start / stop / status over one fleet and run directory."""

    def __init__(self, config_paths: Sequence[str], workers_dir: str | None,
                 run_dir: str | None = None, timeout: float = 60.0,
                 out: IO[str] | None = None, err: IO[str] | None = None) -> None:
        self.config_paths = list(config_paths)
        self.workers_dir = workers_dir
        self.run_dir = os.path.abspath(run_dir or default_run_dir(self.config_paths))
        self.timeout = timeout
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def complain(self, text: str) -> None:
        print(f"myelin: {text}", file=self.err, flush=True)

    def pid_path(self, label: str) -> str:
        return os.path.join(self.run_dir, f"{label}.pid")

    def log_path(self, label: str) -> str:
        return os.path.join(self.run_dir, f"{label}.log")

    # -- start ------------------------------------------------------------------
    def start(self) -> int:
        try:
            fleet = load_fleet(self.config_paths, self.workers_dir)
        except FleetError as e:
            self.complain(str(e))
            return 1
        if fleet.errors:
            for line in fleet.errors:
                self.complain(line)
            self.complain("nothing started: fix the worker files above first")
            return 1
        os.makedirs(self.run_dir, exist_ok=True)
        deadline = time.monotonic() + self.timeout
        main, workers = fleet.processes[0], fleet.processes[1:]
        # Main first: it migrates the database and is who workers replicate with.
        if not self._start_and_wait([main], deadline):
            return 1
        if workers and not self._start_and_wait(workers, deadline):
            self.complain("the processes that did start keep running; fix the failing one and "
                          "run `myelin fleet start` again, or stop them all with "
                          "`myelin fleet stop`")
            return 1
        self.say(f"fleet is up: {len(fleet.processes)} process"
                 f"{'es' if len(fleet.processes) != 1 else ''} "
                 f"(pid and log files in {self.run_dir})")
        return 0

    def _launch(self, process: FleetProcess) -> _Launch:
        pid_path = self.pid_path(process.label)
        running = pidfile.running_pid(pid_path)
        if running is not None:
            self.say(f"{process.label}: already running (pid {running})")
            return _Launch(process, running, None, 0.0)
        log_path = self.log_path(process.label)
        command = [sys.executable, "-m", "myelin.cli", "run"]
        for path in process.config_paths:
            command += ["-c", os.path.abspath(path)]
        with open(log_path, "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"--- {stamp} myelin fleet start: {' '.join(command)}\n".encode())
            log.flush()
            popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     close_fds=True)
        _write_pid(pid_path, popen.pid)
        self.say(f"{process.label}: started (pid {popen.pid}, log {log_path})")
        return _Launch(process, popen.pid, popen, time.monotonic())

    def _start_and_wait(self, processes: list[FleetProcess], deadline: float) -> bool:
        pending = [self._launch(p) for p in processes]
        while pending:
            for launch in list(pending):
                failure = self._exited(launch)
                if failure is not None:
                    self._report_failure(launch, failure)
                    return False
                if self._is_up(launch):
                    pending.remove(launch)
                    if launch.popen is not None:
                        self.say(f"{launch.process.label}: up")
            if not pending:
                break
            if time.monotonic() > deadline:
                launch = pending[0]
                _, seen = check_health(launch.process.info)
                self._report_failure(
                    launch, f"did not answer GET {HEALTH_PATH} within {self.timeout:g}s "
                            f"({seen}); it is still running (pid {launch.pid})")
                return False
            time.sleep(0.1)
        return True

    def _exited(self, launch: _Launch) -> str | None:
        if launch.popen is not None:
            code = launch.popen.poll()
            if code is not None:
                _remove(self.pid_path(launch.process.label))
                return f"exited with code {code}"
        elif not pid_alive(launch.pid):
            _remove(self.pid_path(launch.process.label))
            return "exited"
        return None

    def _is_up(self, launch: _Launch) -> bool:
        info = launch.process.info
        if not info.http_listeners():
            if launch.popen is None:
                return True
            return time.monotonic() - launch.started_at >= NO_LISTENER_GRACE_S
        healthy, _ = check_health(info, timeout=1.0)
        return healthy

    def _report_failure(self, launch: _Launch, what: str) -> None:
        label = launch.process.label
        log_path = self.log_path(label)
        self.complain(f"{label} {what}")
        lines = tail(log_path)
        if lines:
            print(f"last {len(lines)} lines of {log_path}:", file=self.err)
            for line in lines:
                print(f"  {line}", file=self.err)
        self.err.flush()

    # -- stop ---------------------------------------------------------------------
    def _pid_files(self) -> list[tuple[str, str]]:
        """(label, path) of every pid file in the run directory, main last."""
        found = sorted(glob.glob(os.path.join(self.run_dir, "*.pid")))
        labelled = [(os.path.basename(p)[:-len(".pid")], p) for p in found]
        labelled.sort(key=lambda item: (item[0] == "main", item[0]))
        return labelled

    def stop(self) -> int:
        if not os.path.isdir(self.run_dir):
            self.say(f"nothing to stop: {self.run_dir} does not exist")
            return 0
        entries = self._pid_files()
        if not entries:
            self.say(f"nothing to stop: no pid files in {self.run_dir}")
            return 0
        workers = [e for e in entries if e[0] != "main"]
        main = [e for e in entries if e[0] == "main"]
        ok = self._stop_group(workers)
        ok = self._stop_group(main) and ok
        return 0 if ok else 1

    def _stop_group(self, entries: list[tuple[str, str]]) -> bool:
        running: list[tuple[str, str, int]] = []
        for label, path in entries:
            pid = pidfile.running_pid(path)
            if pid is None or not pid_alive(pid):
                self.say(f"{label}: not running")
                _remove(path)
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                self.say(f"{label}: not running")
                _remove(path)
                continue
            running.append((label, path, pid))
        deadline = time.monotonic() + self.timeout
        ok = True
        while running:
            for label, path, pid in list(running):
                if not pid_alive(pid):
                    self.say(f"{label}: stopped (pid {pid})")
                    _remove(path)
                    running.remove((label, path, pid))
            if not running:
                break
            if time.monotonic() > deadline:
                for label, path, pid in running:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    self.complain(f"{label} (pid {pid}) ignored SIGTERM for "
                                  f"{self.timeout:g}s; killed it")
                    _remove(path)
                    ok = False
                break
            time.sleep(0.1)
        return ok

    # -- status -------------------------------------------------------------------
    def status(self) -> int:
        try:
            fleet = load_fleet(self.config_paths, self.workers_dir)
        except FleetError as e:
            self.complain(str(e))
            return 1
        rows: list[list[str]] = []
        streams: dict[str, dict[str, str]] = {}
        all_good = not fleet.errors
        for process in fleet.processes:
            pid = pidfile.running_pid(self.pid_path(process.label))
            alive = pid is not None and pid_alive(pid)
            roles = compact_roles(process.info.roles.describe())
            health = "-"
            if alive:
                status = fetch_status(process)
                if status is not None:
                    live_roles = status.get("roles")
                    if isinstance(live_roles, list) and live_roles:
                        roles = compact_roles([str(r) for r in live_roles])
                    health = "OK"
                    extras = []
                    if status.get("database") is False:
                        extras.append("database down")
                    if status.get("redis") is False:
                        extras.append("redis down")
                    if extras:
                        health = "; ".join(extras)
                        all_good = False
                    for stream, info in (status.get("streams") or {}).items():
                        if isinstance(info, dict):
                            streams.setdefault(str(stream), {})[process.label] = \
                                _stream_cell(info)
                elif process.info.http_listeners():
                    healthy, seen = check_health(process.info)
                    health = "OK (no /_myelin/status)" if healthy else seen
                    all_good = all_good and healthy
                else:
                    health = "alive (no HTTP listener)"
            else:
                all_good = False
            rows.append([process.label, str(pid) if alive else "-",
                         "alive" if alive else "dead", _short_app(process.info.app),
                         roles, health])
        self.say(_table(["NAME", "PID", "STATE", "APP", "ROLES", "HEALTH"], rows))
        if streams:
            labels = [p.label for p in fleet.processes]
            stream_rows = [[stream, *(cells.get(label, "-") for label in labels)]
                           for stream, cells in sorted(streams.items())]
            self.say("")
            self.say("stream positions (lag behind the newest position, if any):")
            self.say(_table(["STREAM", *labels], stream_rows))
        for line in fleet.errors:
            self.complain(line)
        return 0 if all_good else 1


def _short_app(app: str) -> str:
    return app.removeprefix("synapse.app.")


def _stream_cell(info: dict[str, Any]) -> str:
    position = info.get("position")
    lag = info.get("lag")
    cell = str(position) if position is not None else "?"
    if isinstance(lag, int) and lag:
        cell += f" (lag {lag})"
    writers = info.get("writers")
    if isinstance(writers, dict) and len(writers) > 1:
        cell += " [" + " ".join(f"{display_name(str(w))}={p}" for w, p in writers.items()) + "]"
    return cell


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def fleet_command(action: str, config_paths: Sequence[str], workers_dir: str | None,
                  run_dir: str | None, timeout: float) -> int:
    runner = FleetRunner(config_paths, workers_dir, run_dir, timeout)
    if action == "start":
        return runner.start()
    if action == "stop":
        return runner.stop()
    return runner.status()


__all__ = ["MAIN", "Fleet", "FleetError", "FleetProcess", "FleetRunner", "fleet_command",
           "load_fleet"]
