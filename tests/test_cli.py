"""The ``myelin`` command line, run as a real subprocess."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from signedjson.key import read_signing_keys

from myelin.config import load_config
from tests.support.postgres import free_port
from tests.support.server import ServerProcess, http, make_server_config


def myelin(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "myelin", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def reason_lines(stderr: str) -> list[str]:
    """The lines the CLI itself prints for the user (log lines have timestamps)."""
    return [line for line in stderr.splitlines() if line.startswith("myelin: ")]


def write_config(tmp_path: Path, extra: dict[str, Any] | None = None) -> tuple[str, int]:
    config, _, port = make_server_config("sqlite", None, str(tmp_path), extra)
    path = tmp_path / "homeserver.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return str(path), port


# -- generate-config ----------------------------------------------------------------

def test_generate_config_writes_loadable_config_and_key(tmp_path: Path) -> None:
    config_path = tmp_path / "conf" / "homeserver.yaml"
    data_dir = tmp_path / "data"
    result = myelin("generate-config", "--server-name", "example.org",
                    "--config-path", str(config_path), "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert config_path.exists()
    assert oct(config_path.stat().st_mode & 0o777) == "0o600"  # it holds secrets
    config = load_config([str(config_path)])
    assert config.server_name == "example.org"
    assert config.signing_key_path is not None
    key_path = Path(config.signing_key_path)
    assert key_path.parent == data_dir
    with key_path.open() as f:
        keys = read_signing_keys(f)
    assert len(keys) == 1 and keys[0].alg == "ed25519"
    check = myelin("check-config", "-c", str(config_path))
    assert check.returncode == 0, check.stderr
    assert "config OK" in check.stdout


def test_generate_config_refuses_to_overwrite(tmp_path: Path) -> None:
    config_path = tmp_path / "homeserver.yaml"
    first = myelin("generate-config", "--server-name", "a.org", "--config-path",
                   str(config_path))
    assert first.returncode == 0, first.stderr
    before = config_path.read_text()
    key_files = sorted(p.name for p in tmp_path.iterdir())
    second = myelin("generate-config", "--server-name", "b.org", "--config-path",
                    str(config_path))
    assert second.returncode != 0
    (line,) = reason_lines(second.stderr)
    assert "already exists" in line and str(config_path) in line
    assert config_path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == key_files


def test_generate_config_default_data_dir_is_config_dir(tmp_path: Path) -> None:
    config_path = tmp_path / "homeserver.yaml"
    assert myelin("generate-config", "--server-name", "a.org",
                  "--config-path", str(config_path)).returncode == 0
    config = load_config([str(config_path)])
    assert config.signing_key_path is not None
    assert Path(config.signing_key_path).parent == tmp_path
    assert Path(config.database.path).parent == tmp_path


# -- check-config -------------------------------------------------------------------

def test_check_config_ok(tmp_path: Path) -> None:
    path, _ = write_config(tmp_path)
    result = myelin("check-config", "-c", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config OK: master (synapse.app.homeserver) for ")


def test_check_config_bad_value(tmp_path: Path) -> None:
    path, _ = write_config(tmp_path, {"listeners": [{"port": "abc"}]})
    result = myelin("check-config", "-c", path)
    assert result.returncode == 1
    assert reason_lines(result.stderr) == [
        'myelin: listeners[0].port: expected an integer, got "abc" (homeserver.yaml)']


def test_check_config_missing_signing_key(tmp_path: Path) -> None:
    path, _ = write_config(tmp_path, {"signing_key_path": str(tmp_path / "nope.key")})
    result = myelin("check-config", "-c", path)
    assert result.returncode == 1
    (line,) = reason_lines(result.stderr)
    assert line.startswith("myelin: signing_key_path: file not found")


def test_check_config_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "homeserver.yaml"
    path.write_text("server_name: [unclosed\n")
    result = myelin("check-config", "-c", str(path))
    assert result.returncode == 1
    (line,) = reason_lines(result.stderr)
    assert "not valid YAML" in line and str(path) in line


def test_check_config_merges_worker_file(tmp_path: Path) -> None:
    # A worker needs what a fleet needs: PostgreSQL, Redis and something to do.
    path, port = write_config(tmp_path, {"database": {"name": "psycopg2",
                                                      "args": {"database": "myelin"}},
                                         "redis": {"enabled": True}})
    worker = tmp_path / "worker1.yaml"
    worker.write_text(yaml.safe_dump({"worker_app": "synapse.app.generic_worker",
                                      "worker_name": "worker1",
                                      "worker_listeners": [{"port": port + 1, "resources": [
                                          {"names": ["client"]}]}]}))
    result = myelin("check-config", "-c", path, "-c", str(worker))
    assert result.returncode == 0, result.stderr
    assert "worker1 (synapse.app.generic_worker)" in result.stdout


# -- run ----------------------------------------------------------------------------

def test_run_fails_with_bad_config(tmp_path: Path) -> None:
    path, _ = write_config(tmp_path, {"enable_registration": "maybe"})
    result = myelin("run", "-c", path)
    assert result.returncode == 1
    assert reason_lines(result.stderr) == [
        'myelin: enable_registration: expected true or false, got "maybe" (homeserver.yaml)']


def test_run_fails_when_port_in_use(tmp_path: Path) -> None:
    path, port = write_config(tmp_path)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        result = myelin("run", "-c", path)
    assert result.returncode == 1
    (line,) = reason_lines(result.stderr)
    assert line.startswith("myelin: cannot start: ")
    assert f"127.0.0.1:{port}" in line
    assert "in use" in line.lower()


def test_run_fails_when_postgres_unreachable(tmp_path: Path) -> None:
    dead_port = free_port()  # nothing listens there
    path, _ = write_config(tmp_path, {"database": {"name": "psycopg2", "args": {
        "host": "127.0.0.1", "port": dead_port, "user": "myelin", "database": "myelin"}}})
    start = time.monotonic()
    result = myelin("run", "-c", path)
    assert result.returncode == 1
    (line,) = reason_lines(result.stderr)
    assert line.startswith("myelin: cannot start: cannot open the postgres database")
    assert f"127.0.0.1:{dead_port}" in line  # says where it tried
    assert "refused" in line.lower()
    assert time.monotonic() - start < 30


def test_run_fails_when_postgres_database_missing(tmp_path: Path, postgres_server: Any) -> None:
    path, _ = write_config(tmp_path, {"database": {"name": "psycopg2", "args": {
        "host": postgres_server.host, "port": postgres_server.port,
        "user": postgres_server.user, "database": "no_such_database"}}})
    result = myelin("run", "-c", path)
    assert result.returncode == 1
    (line,) = reason_lines(result.stderr)
    assert line.startswith("myelin: cannot start: cannot open the postgres database")
    assert "no_such_database" in line


def test_run_fails_when_config_file_missing(tmp_path: Path) -> None:
    result = myelin("run", "-c", str(tmp_path / "absent.yaml"))
    assert result.returncode == 1
    (line,) = reason_lines(result.stderr)
    assert "config file not found" in line


def test_sigterm_exits_zero(tmp_path: Path) -> None:
    path, port = write_config(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "myelin", "run", "-c", path],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                status, body = http("GET", f"http://127.0.0.1:{port}/health")
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.05)
        assert body == "OK"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, output
        assert "shutting down" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_exits_zero_on_each_engine(server: ServerProcess) -> None:
    login = server.register("carol")
    assert server.request("GET", "/_matrix/client/v3/account/whoami",
                          token=login["access_token"])[0] == 200
    assert server.stop() == 0


# -- register-user ------------------------------------------------------------------

def test_register_user_against_running_server(server: ServerProcess) -> None:
    result = myelin("register-user", "-c", server.config_path, "-u", "Dave", "-p", "hunter22")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"registered @dave:{server.server_name}"
    status, body = server.request("POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "dave"},
        "password": "hunter22"})
    assert status == 200, body
    assert body["user_id"] == f"@dave:{server.server_name}"
    status, whoami = server.request("GET", "/_matrix/client/v3/account/whoami",
                                    token=body["access_token"])
    assert status == 200 and whoami["user_id"] == body["user_id"]


def test_register_admin_user(server: ServerProcess) -> None:
    result = myelin("register-user", "-c", server.config_path, "-u", "root", "-p", "pw",
                    "--admin", "--url", server.base_url)
    assert result.returncode == 0, result.stderr
    status, body = server.request("POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "user": "root", "password": "pw"})
    assert status == 200, body


def test_register_user_twice_fails(server: ServerProcess) -> None:
    assert myelin("register-user", "-c", server.config_path, "-u", "erin",
                  "-p", "pw").returncode == 0
    again = myelin("register-user", "-c", server.config_path, "-u", "erin", "-p", "other")
    assert again.returncode == 1
    (line,) = reason_lines(again.stderr)
    assert "registration failed" in line and "taken" in line
    # the first password still works
    status, _ = server.request("POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "user": "erin", "password": "pw"})
    assert status == 200


def test_register_user_with_wrong_secret_fails(server: ServerProcess, tmp_path: Path) -> None:
    with open(server.config_path) as f:
        config = yaml.safe_load(f)
    config["registration_shared_secret"] = "not-the-secret"
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(config))
    result = myelin("register-user", "-c", str(wrong), "-u", "mallory", "-p", "pw")
    assert result.returncode == 1
    (line,) = reason_lines(result.stderr)
    assert "403" in line
    status, body = server.request("POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "user": "mallory", "password": "pw"})
    assert status == 403, body


def test_register_user_needs_shared_secret(tmp_path: Path) -> None:
    path, _ = write_config(tmp_path, {"registration_shared_secret": None})
    result = myelin("register-user", "-c", path, "-u", "x", "-p", "y")
    assert result.returncode == 1
    assert reason_lines(result.stderr) == [
        "myelin: registration_shared_secret is not set in the config"]


def test_register_user_server_down(tmp_path: Path) -> None:
    path, _ = write_config(tmp_path)  # nothing runs on its port
    result = myelin("register-user", "-c", path, "-u", "x", "-p", "y")
    assert result.returncode == 1
    (line,) = reason_lines(result.stderr)
    assert line.startswith("myelin: registration failed")


def test_help_lists_commands() -> None:
    result = myelin("--help")
    assert result.returncode == 0
    for command in ("generate-config", "run", "check-config", "register-user"):
        assert command in result.stdout


@pytest.mark.parametrize("command", [[], ["bogus"], ["run"]])
def test_usage_errors(command: list[str]) -> None:
    result = myelin(*command)
    assert result.returncode == 2
    assert "usage:" in result.stderr
