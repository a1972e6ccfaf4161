"""The fleet's configuration keys, and refusing fleet layouts that cannot work.

A fleet is a shared ``homeserver.yaml`` plus one file per worker, loaded as
``-c homeserver.yaml -c workers/NAME.yaml``; these tests write both into
``tmp_path`` and load them the way ``myelin run`` does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from myelin.config import (
    ConfigError,
    DatabaseConfig,
    HomeserverConfig,
    load_config,
    load_config_from_dict,
)
from myelin.config.fleet import validate_fleet
from myelin.config.schema import WORKER_APP_MEANINGS, WORKER_APPS
from myelin.storage.engines import Database, open_database
from tests.support.postgres import PostgresServer, create_database

DB = {"name": "psycopg2", "args": {"database": "myelin", "host": "db.internal"}}

# A main process that is ready for workers: PostgreSQL, Redis, and a
# replication listener where instance_map.main says.
SHARED: dict[str, Any] = {
    "server_name": "example.org",
    "listeners": [
        {"port": 8008, "bind_addresses": ["127.0.0.1"],
         "resources": [{"names": ["client", "federation"]}]},
        {"port": 9093, "bind_addresses": ["127.0.0.1"], "resources": [{"names": ["replication"]}]},
    ],
    "database": DB,
    "redis": {"enabled": True},
    "instance_map": {"main": {"host": "localhost", "port": 9093}},
}

REPLICATION_8034 = [{"port": 8034, "bind_addresses": ["127.0.0.1"],
                     "resources": [{"names": ["replication"]}]}]


def generic(name: str, **extra: Any) -> dict[str, Any]:
    return {"worker_app": "synapse.app.generic_worker", "worker_name": name, **extra}


def write(tmp_path: Path, name: str, data: Any) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return str(path)


def load(tmp_path: Path, shared: dict[str, Any] | None = None,
         worker: dict[str, Any] | None = None, **shared_overrides: Any) -> HomeserverConfig:
    """Load the shared file (SHARED with overrides; a None value drops a key),
    layered with a worker file if given."""
    data = {**(SHARED if shared is None else shared), **shared_overrides}
    data = {k: v for k, v in data.items() if v is not None}
    paths = [write(tmp_path, "homeserver.yaml", data)]
    if worker is not None:
        paths.append(write(tmp_path, "worker1.yaml", worker))
    return load_config(paths)


def refusal(tmp_path: Path, shared: dict[str, Any] | None = None,
            worker: dict[str, Any] | None = None, **shared_overrides: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, shared, worker, **shared_overrides)
    message = str(info.value)
    assert "\n" not in message  # one line
    return info.value


# -- worker_listeners ------------------------------------------------------------------

def test_worker_binds_worker_listeners_not_the_shared_listeners(tmp_path: Path) -> None:
    config = load(tmp_path, worker=generic("w1", worker_listeners=[
        {"type": "http", "port": 8083, "x_forwarded": True, "resources": [{"names": ["client"]}]},
        {"type": "metrics", "port": 9101},
        {"path": "/run/w1.sock", "resources": [{"names": ["media", "health"]}]},
    ]))
    assert [(lst.port, lst.path) for lst in config.listeners] == [
        (8083, None), (9101, None), (None, "/run/w1.sock")]
    assert config.listeners[0].resources == {"client"} and config.listeners[0].x_forwarded
    assert config.listeners[1].type == "metrics" and "metrics" in config.listeners[1].resources
    assert config.listeners[2].resources == {"media", "health"}
    # The public URL is still the fleet's, from main's client listener.
    assert config.public_baseurl == "http://example.org:8008/"


def test_main_binds_listeners_and_ignores_worker_listeners(tmp_path: Path) -> None:
    config = load(tmp_path, worker_listeners=[{"port": 8083}])
    assert [lst.port for lst in config.listeners] == [8008, 9093]


def test_worker_never_inherits_the_shared_listeners(tmp_path: Path) -> None:
    config = load(tmp_path, run_background_tasks_on="bg1", worker=generic("bg1"))
    assert config.listeners == []


def test_worker_listeners_errors_name_key_and_file(tmp_path: Path) -> None:
    e = refusal(tmp_path, worker=generic("w1", worker_listeners=[{"port": "x"}]))
    assert str(e) == 'worker_listeners[0].port: expected an integer, got "x" (worker1.yaml)'
    e = refusal(tmp_path, worker=generic("w1", worker_listeners=[
        {"port": 1, "resources": [{"names": ["bogus"]}]}]))
    assert e.key_path == "worker_listeners[0].resources[0].names"
    e = refusal(tmp_path, worker=generic("w1", worker_listeners=[{"type": "ftp", "port": 1}]))
    assert e.key_path == "worker_listeners[0].type" and "expected one of" in str(e)


# -- instance names: "main" and "master" are the main process ---------------------------

def test_main_and_master_are_normalised_everywhere() -> None:
    config = load_config_from_dict({
        "server_name": "a.org",
        "instance_map": {"main": {"port": 9093}, "p1": {"port": 8034}},
        "stream_writers": {"events": ["main", "p1"], "typing": "master"},
        "run_background_tasks_on": "main",
        "federation_sender_instances": ["main", "fs1"],
        "pusher_instances": ["main"],
        "update_user_directory_from_worker": "main",
        "notify_appservices_from_worker": "master",
        "media_instance_running_background_jobs": "main",
    })
    assert set(config.instance_map) == {"master", "p1"}
    assert config.stream_writers == {"events": ["master", "p1"], "typing": ["master"]}
    assert config.writers_of("events") == ["master", "p1"]
    assert config.writers_of("typing") == ["master"]
    assert config.run_background_tasks_on == "master"
    assert config.federation_sender_instances == ["master", "fs1"]
    assert config.pusher_instances == ["master"]
    assert config.update_user_directory_from_worker == "master"
    assert config.notify_appservices_from_worker == "master"
    assert config.media_instance_running_background_jobs == "master"


def test_instance_map_master_spelling_is_accepted() -> None:
    config = load_config_from_dict({"server_name": "a.org",
                                    "instance_map": {"master": {"port": 9093}}})
    assert config.instance_map["master"].port == 9093


def test_instance_map_main_and_master_together_refused(tmp_path: Path) -> None:
    e = refusal(tmp_path, instance_map={"main": {"port": 9093}, "master": {"port": 9094}})
    assert e.key_path == "instance_map"
    assert "keep only instance_map.main" in str(e) and str(e).endswith("(homeserver.yaml)")


def test_instance_map_entry_needs_port_or_path(tmp_path: Path) -> None:
    e = refusal(tmp_path, instance_map={"main": {"host": "localhost"}})
    assert e.key_path == "instance_map.main.port" and "is required" in str(e)


def test_writer_listed_twice_refused(tmp_path: Path) -> None:
    e = refusal(tmp_path, stream_writers={"events": ["main", "master"]})
    assert e.key_path == "stream_writers.events"
    assert 'lists "master" twice' in str(e) and "list each instance once" in str(e)


def test_worker_may_not_be_named_main(tmp_path: Path) -> None:
    e = refusal(tmp_path, worker=generic("main", worker_listeners=[{"port": 8083}]))
    assert e.key_path == "worker_name" and "give this worker a name of its own" in str(e)


def test_writers_of_defaults_to_master() -> None:
    config = load_config_from_dict({"server_name": "a.org"})
    assert config.writers_of("events") == ["master"]
    assert config.writers_of("presence") == ["master"]


def test_stream_writer_given_as_a_string_is_one_writer() -> None:
    config = load_config_from_dict({"server_name": "a.org",
                                    "stream_writers": {"events": "event_persister1"}})
    assert config.stream_writers["events"] == ["event_persister1"]


# -- worker_replication_host / _http_port (deprecated) ---------------------------------

def test_deprecated_replication_host_becomes_instance_map_main(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="myelin.config"):
        config = load(tmp_path, instance_map=None, worker_replication_host="10.0.0.1",
                      worker_replication_http_port=9093,
                      worker=generic("w1", worker_listeners=[{"port": 8083}]))
    main = config.instance_map["master"]
    assert (main.host, main.port, main.tls) == ("10.0.0.1", 9093, False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("deprecated" in w and "instance_map.main" in w for w in warnings), warnings


def test_deprecated_replication_host_does_not_override_instance_map() -> None:
    config = load_config_from_dict({
        "server_name": "a.org", "instance_map": {"main": {"host": "main.internal", "port": 1}},
        "worker_replication_host": "10.0.0.1", "worker_replication_http_port": 9093})
    assert config.instance_map["master"].host == "main.internal"


def test_deprecated_replication_host_without_port_refused(tmp_path: Path) -> None:
    e = refusal(tmp_path, instance_map=None, worker_replication_host="10.0.0.1")
    assert e.key_path == "worker_replication_http_port"
    assert "instance_map.main" in str(e)


# -- worker_replication_secret(_path) --------------------------------------------------

def test_replication_secret_inline() -> None:
    config = load_config_from_dict({"server_name": "a.org", "worker_replication_secret": "s"})
    assert config.worker_replication_secret == "s"


def test_replication_secret_from_file_is_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("  s3cret\n\n", encoding="utf-8")
    config = load(tmp_path, worker_replication_secret_path=str(secret))
    assert config.worker_replication_secret == "s3cret"


def test_replication_secret_file_unreadable(tmp_path: Path) -> None:
    e = refusal(tmp_path, worker_replication_secret_path=str(tmp_path / "nope"))
    assert e.key_path == "worker_replication_secret_path"
    assert "cannot read" in str(e) and str(tmp_path / "nope") in str(e)
    assert str(e).endswith("(homeserver.yaml)")


def test_replication_secret_file_empty(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("\n", encoding="utf-8")
    e = refusal(tmp_path, worker_replication_secret_path=str(secret))
    assert e.key_path == "worker_replication_secret_path" and "is empty" in str(e)


def test_replication_secret_and_path_together_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x", encoding="utf-8")
    e = refusal(tmp_path, worker_replication_secret="y",
                worker_replication_secret_path=str(secret))
    assert e.key_path == "worker_replication_secret_path" and "remove one" in str(e)


# -- the job keys ------------------------------------------------------------------------

def test_job_key_defaults() -> None:
    config = load_config_from_dict({"server_name": "a.org"})
    assert config.run_background_tasks_on == "master"
    assert config.federation_sender_instances == []
    assert config.send_federation is True
    assert config.pusher_instances == []
    assert config.start_pushers is True
    assert config.update_user_directory_from_worker is None
    assert config.notify_appservices_from_worker is None
    assert config.media_instance_running_background_jobs is None
    assert config.worker_log_config is None
    assert config.worker_pid_file is None
    assert config.worker_replication_secret is None


def test_job_keys_read(tmp_path: Path) -> None:
    config = load(tmp_path, run_background_tasks_on="bg1",
                  federation_sender_instances=["fs1", "fs2"], send_federation=False,
                  pusher_instances="pusher1", start_pushers=False,
                  update_user_directory_from_worker="ud1",
                  notify_appservices_from_worker="as1",
                  media_instance_running_background_jobs="media1",
                  worker=generic("bg1", worker_log_config="/etc/myelin/bg1-log.yaml",
                                 worker_pid_file="/run/myelin/bg1.pid"))
    assert config.run_background_tasks_on == "bg1"
    assert config.federation_sender_instances == ["fs1", "fs2"]
    assert config.send_federation is False
    assert config.pusher_instances == ["pusher1"]
    assert config.start_pushers is False
    assert config.update_user_directory_from_worker == "ud1"
    assert config.notify_appservices_from_worker == "as1"
    assert config.media_instance_running_background_jobs == "media1"
    assert config.worker_log_config == "/etc/myelin/bg1-log.yaml"
    assert config.worker_pid_file == "/run/myelin/bg1.pid"


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("run_background_tasks_on", ["bg1"], "expected a string"),
    ("federation_sender_instances", 5, "expected a list of strings"),
    ("pusher_instances", [1], "expected a list of strings"),
    ("send_federation", "no", "expected true or false"),
    ("start_pushers", 0, "expected true or false"),
    ("update_user_directory_from_worker", 1, "expected a string"),
    ("notify_appservices_from_worker", True, "expected a string"),
    ("media_instance_running_background_jobs", {}, "expected a string"),
    ("worker_log_config", 1, "expected a string"),
    ("worker_pid_file", [], "expected a string"),
])
def test_job_keys_validated(tmp_path: Path, key: str, value: Any, fragment: str) -> None:
    e = refusal(tmp_path, **{key: value})
    assert e.key_path == key and fragment in str(e) and str(e).endswith("(homeserver.yaml)")


def test_job_keys_do_not_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="myelin.config"):
        load(tmp_path, run_background_tasks_on="main", federation_sender_instances=[],
             pusher_instances=[], send_federation=True, start_pushers=True,
             worker_log_config="x", worker_pid_file="y", worker_listeners=[])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- worker apps and the roles they imply ------------------------------------------------

@pytest.mark.parametrize(("app", "roles"), [
    ("synapse.app.homeserver", set()),
    ("synapse.app.generic_worker", set()),
    ("synapse.app.pusher", {"pusher"}),
    ("synapse.app.federation_sender", {"federation_sender"}),
    ("synapse.app.appservice", {"appservice"}),
    ("synapse.app.user_dir", {"user_dir"}),
    ("synapse.app.media_repository", {"media"}),
    ("synapse.app.client_reader", set()),
    ("synapse.app.event_creator", set()),
    ("synapse.app.federation_reader", set()),
    ("synapse.app.frontend_proxy", set()),
    ("synapse.app.synchrotron", set()),
])
def test_app_roles(app: str, roles: set[str]) -> None:
    config = load_config_from_dict({"server_name": "a.org", "worker_app": app,
                                    "worker_name": "w1"})
    assert config.app_roles == frozenset(roles)
    assert isinstance(config.app_roles, frozenset)


def test_every_worker_app_has_a_meaning() -> None:
    assert tuple(WORKER_APP_MEANINGS) == WORKER_APPS
    assert all(meaning.meaning for meaning in WORKER_APP_MEANINGS.values())


def test_historical_app_without_listeners_has_its_implied_role(tmp_path: Path) -> None:
    config = load(tmp_path, worker={"worker_app": "synapse.app.pusher", "worker_name": "p1"})
    assert config.app_roles == {"pusher"} and config.listeners == []


# -- stream writers: which streams take several ----------------------------------------

def test_multi_writer_streams_accept_several(tmp_path: Path) -> None:
    instance_map = {"main": {"port": 9093}, "p1": {"port": 8034}, "p2": {"port": 8035}}
    config = load(tmp_path, instance_map=instance_map, stream_writers={
        "events": ["p1", "p2"], "receipts": ["p1", "p2"], "to_device": ["main", "p1"]})
    assert config.writers_of("events") == ["p1", "p2"]
    assert config.writers_of("to_device") == ["master", "p1"]


@pytest.mark.parametrize("stream", ["typing", "account_data", "presence", "push_rules",
                                    "device_lists"])
def test_single_writer_streams_refuse_two(tmp_path: Path, stream: str) -> None:
    e = refusal(tmp_path, instance_map={"main": {"port": 9093}, "a": {"port": 1},
                                        "b": {"port": 2}},
                stream_writers={stream: ["a", "b"]})
    assert e.key_path == f"stream_writers.{stream}"
    assert "exactly one writer" in str(e) and "list one instance" in str(e)


def test_validate_fleet_refuses_two_writers_built_by_hand() -> None:
    config = load_config_from_dict({"server_name": "a.org"})
    config.stream_writers = {"typing": ["a", "b"]}
    with pytest.raises(ConfigError, match="exactly one writer"):
        validate_fleet(config)


# -- fleet refusals ------------------------------------------------------------------------

def test_a_ready_fleet_loads(tmp_path: Path) -> None:
    shared = {**SHARED, "instance_map": {"main": {"host": "localhost", "port": 9093},
                                         "event_persister1": {"host": "localhost",
                                                              "port": 8034}},
              "stream_writers": {"events": "event_persister1"}}
    main = load(tmp_path, shared)
    assert main.is_main_process
    worker = load(tmp_path, shared, generic("event_persister1", worker_listeners=[
        *REPLICATION_8034, {"port": 8035, "resources": [{"names": ["client"]}]}]))
    assert worker.instance_name == "event_persister1"


def test_stream_writer_missing_from_instance_map(tmp_path: Path) -> None:
    e = refusal(tmp_path, stream_writers={"events": ["p1"]})
    assert e.key_path == "stream_writers.events"
    assert '"p1" is not in instance_map' in str(e) and "add instance_map.p1" in str(e)
    assert str(e).endswith("(homeserver.yaml)")


def test_background_worker_needs_no_instance_map(tmp_path: Path) -> None:
    config = load(tmp_path, instance_map=None, run_background_tasks_on="bg1",
                  update_user_directory_from_worker="bg1", worker=generic("bg1"))
    assert config.instance_map == {}


def test_stream_writer_needs_main_in_instance_map(tmp_path: Path) -> None:
    e = refusal(tmp_path, instance_map={"p1": {"port": 8034}}, stream_writers={"events": "p1"},
                worker=generic("p1", worker_listeners=REPLICATION_8034))
    assert e.key_path == "instance_map"
    assert "add instance_map.main" in str(e)


def test_worker_without_redis(tmp_path: Path) -> None:
    e = refusal(tmp_path, redis=None, worker=generic("w1", worker_listeners=[{"port": 8083}]))
    assert e.key_path == "redis.enabled"
    assert "set redis.enabled: true" in str(e) and "worker w1" in str(e)
    # No file sets redis: the message names the files it may go in.
    assert str(e).endswith("(homeserver.yaml, worker1.yaml)")


def test_main_with_workers_as_writers_without_redis(tmp_path: Path) -> None:
    e = refusal(tmp_path, redis={"enabled": False},
                instance_map={"main": {"port": 9093}, "p1": {"port": 8034}},
                stream_writers={"events": ["p1"]})
    assert e.key_path == "redis.enabled" and "set redis.enabled: true" in str(e)
    assert str(e).endswith("(homeserver.yaml)")


def test_single_process_needs_neither_redis_nor_postgres(tmp_path: Path) -> None:
    config = load(tmp_path, {"server_name": "example.org",
                             "listeners": [{"port": 8008}],
                             "stream_writers": {"events": "main"}})
    assert config.database.engine == "sqlite" and not config.redis.enabled


def test_worker_on_sqlite(tmp_path: Path) -> None:
    e = refusal(tmp_path, database={"name": "sqlite3", "args": {"database": "hs.db"}},
                worker=generic("w1", worker_listeners=[{"port": 8083}]))
    assert e.key_path == "database.name"
    assert "needs PostgreSQL" in str(e) and "set database.name: psycopg2" in str(e)
    assert str(e).endswith("(homeserver.yaml)")


def test_main_with_worker_jobs_on_sqlite(tmp_path: Path) -> None:
    e = refusal(tmp_path, database=None, run_background_tasks_on="bg1")
    assert e.key_path == "database.name" and "needs PostgreSQL" in str(e)


def test_worker_with_nothing_to_do(tmp_path: Path) -> None:
    e = refusal(tmp_path, worker=generic("w1"))
    assert e.key_path == "worker_listeners"
    assert "no worker_listeners and no role" in str(e)
    assert "give it worker_listeners" in str(e)


@pytest.mark.parametrize("shared_overrides", [
    {"run_background_tasks_on": "w1"},
    {"federation_sender_instances": ["w1"]},
    {"pusher_instances": ["w1"]},
    {"update_user_directory_from_worker": "w1"},
    {"notify_appservices_from_worker": "w1"},
    {"media_instance_running_background_jobs": "w1"},
])
def test_worker_with_a_role_needs_no_listeners(tmp_path: Path,
                                               shared_overrides: dict[str, Any]) -> None:
    assert load(tmp_path, worker=generic("w1"), **shared_overrides).listeners == []


def test_instance_map_addresses_collide(tmp_path: Path) -> None:
    e = refusal(tmp_path, instance_map={"main": {"host": "localhost", "port": 9093},
                                        "p1": {"host": "127.0.0.1", "port": 9093}})
    assert e.key_path == "instance_map.p1"
    assert "same address as instance_map.main" in str(e)
    assert "give each instance its own port" in str(e)


def test_instance_map_unix_paths_collide(tmp_path: Path) -> None:
    e = refusal(tmp_path, instance_map={"main": {"host": "localhost", "port": 9093},
                                        "p1": {"path": "/run/r.sock"},
                                        "p2": {"path": "/run/r.sock"}})
    assert e.key_path == "instance_map.p2"


def test_instance_map_same_port_on_other_hosts_is_fine(tmp_path: Path) -> None:
    instance_map = {"main": {"host": "main.internal", "port": 8034},
                    "p1": {"host": "p1.internal", "port": 8034}}
    shared = {**SHARED, "instance_map": instance_map, "stream_writers": {"events": "p1"},
              "listeners": [{"port": 8034, "resources": [{"names": ["replication"]}]}]}
    load(tmp_path, shared)
    load(tmp_path, shared, generic("p1", worker_listeners=[
        {"port": 8034, "resources": [{"names": ["replication"]}]}]))


def test_worker_listener_takes_another_instances_port(tmp_path: Path) -> None:
    e = refusal(tmp_path, worker=generic("w1", worker_listeners=[
        {"port": 8083}, {"port": 9093, "resources": [{"names": ["client"]}]}]))
    assert e.key_path == "worker_listeners[1].port"
    assert "localhost:9093 is where instance_map.main says master listens" in str(e)
    assert "give this listener another port" in str(e)
    assert str(e).endswith("(worker1.yaml)")


def test_worker_serves_replication_where_instance_map_says(tmp_path: Path) -> None:
    shared = {**SHARED, "instance_map": {"main": {"port": 9093}, "p1": {"port": 8034}},
              "stream_writers": {"events": "p1"}}
    e = refusal(tmp_path, shared, generic("p1", worker_listeners=[
        {"port": 8035, "resources": [{"names": ["replication"]}]},
        {"port": 8034, "resources": [{"names": ["client"]}]}]))
    assert e.key_path == "instance_map.p1"
    assert "no listener there with the replication resource" in str(e)
    assert "add one to worker_listeners (port: 8034" in str(e)
    e = refusal(tmp_path, shared, generic("p1"))
    assert e.key_path == "instance_map.p1"


def test_unix_socket_replication_listener(tmp_path: Path) -> None:
    shared = {**SHARED, "instance_map": {"main": {"port": 9093},
                                         "p1": {"path": "/run/p1.sock"}},
              "stream_writers": {"typing": "p1"}}
    config = load(tmp_path, shared, generic("p1", worker_listeners=[
        {"path": "/run/p1.sock", "resources": [{"names": ["replication"]}]}]))
    assert config.listeners[0].path == "/run/p1.sock"


def test_main_serves_replication_where_instance_map_says(tmp_path: Path) -> None:
    e = refusal(tmp_path, listeners=[{"port": 8008}])
    assert e.key_path == "instance_map.main"
    assert "add one to listeners (port: 9093" in str(e)


# -- the CLI refuses too --------------------------------------------------------------------

def myelin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "myelin", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def reason_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("myelin: ")]


def test_check_config_and_run_refuse_a_fleet_that_cannot_work(tmp_path: Path) -> None:
    shared = write(tmp_path, "homeserver.yaml", {**SHARED, "redis": None})
    worker = write(tmp_path, "w1.yaml", generic("w1", worker_listeners=[{"port": 8083}]))
    for command in ("check-config", "run"):
        result = myelin(command, "-c", shared, "-c", worker)
        assert result.returncode == 1, result.stderr
        (line,) = reason_lines(result.stderr)
        assert line.startswith("myelin: redis.enabled: worker w1 needs Redis"), line


# -- worker_log_config ------------------------------------------------------------------------

def test_worker_logs_by_worker_log_config(tmp_path: Path) -> None:
    from myelin.cli import _setup_logging

    main_log = write(tmp_path, "main-log.yaml", "not: [a, logging, config")
    worker_log = write(tmp_path, "w1-log.yaml", {
        "version": 1, "disable_existing_loggers": False,
        "loggers": {"myelin.test_worker_log": {"level": "ERROR"}}})
    config = load(tmp_path, log_config=main_log, run_background_tasks_on="w1",
                  worker=generic("w1", worker_log_config=worker_log))
    _setup_logging(config)  # main's (broken) log_config is not read by a worker
    assert logging.getLogger("myelin.test_worker_log").level == logging.ERROR
    config.worker_log_config = str(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError) as info:
        _setup_logging(config)
    assert info.value.key_path == "worker_log_config"
    assert str(info.value).endswith("(worker1.yaml)")


# -- worker_pid_file ------------------------------------------------------------------------------

def test_running_pid_ignores_stale_and_foreign_pid_files(tmp_path: Path) -> None:
    from myelin.app.pidfile import running_pid

    path = tmp_path / "w1.pid"
    assert running_pid(str(path)) is None  # absent
    path.write_text("garbage\n")
    assert running_pid(str(path)) is None
    path.write_text(f"{os.getpid()}\n")
    assert running_pid(str(path)) is None  # this process itself
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        path.write_text(f"{sleeper.pid}\n")
        assert running_pid(str(path)) is None  # alive, but not Myelin
    finally:
        sleeper.kill()
        sleeper.wait()
    assert running_pid(str(path)) is None  # dead


def test_second_copy_of_a_worker_refuses_to_start(tmp_path: Path) -> None:
    pid_path = tmp_path / "w1.pid"
    shared = write(tmp_path, "homeserver.yaml", SHARED)
    worker = write(tmp_path, "w1.yaml", generic("w1", worker_listeners=[{"port": 8083}],
                                                worker_pid_file=str(pid_path)))
    # A live process whose command line says myelin stands in for the first copy.
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "myelin"])
    try:
        pid_path.write_text(f"{first.pid}\n")
        result = myelin("run", "-c", shared, "-c", worker)
    finally:
        first.kill()
        first.wait()
    assert result.returncode == 1
    (line,) = reason_lines(result.stderr)
    assert line == (f"myelin: cannot start: worker w1 is already running "
                    f"(pid {first.pid}, pid file {pid_path})")
    assert pid_path.read_text() == f"{first.pid}\n"  # left alone


async def test_pid_file_written_once_listening_and_removed_on_exit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from myelin.app import process

    events: list[str] = []
    pid_path = tmp_path / "w1.pid"

    class FakeDb:
        async def close(self) -> None:
            events.append("db closed")

    class FakeNotifier:
        def shutdown(self) -> None:
            events.append("woke long-polls")

    class FakeHomeServer:
        listeners: list[Any] = []
        db = FakeDb()
        notifier = FakeNotifier()

        async def start(self) -> None:
            events.append("started")

        async def stop(self) -> None:
            events.append("stopped")

    async def fake_build(config: HomeserverConfig) -> Any:
        return FakeHomeServer()

    async def fake_listen(hs: Any) -> None:
        assert not pid_path.exists()
        events.append("listening")

    monkeypatch.setattr(process, "build_homeserver", fake_build)
    monkeypatch.setattr(process, "start_listeners", fake_listen)
    config = load(tmp_path, worker=generic("w1", worker_listeners=[{"port": 8083}],
                                          worker_pid_file=str(pid_path)))
    task = asyncio.create_task(process.run_process(config))
    for _ in range(200):
        if pid_path.exists():
            break
        await asyncio.sleep(0.01)
    assert pid_path.read_text() == f"{os.getpid()}\n"
    assert events == ["started", "listening"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not pid_path.exists()
    # Long-polls are woken before the process stops; the database goes last.
    assert events[-3:] == ["woke long-polls", "stopped", "db closed"]


# -- migrations: a database newer than the code, concurrent starters ----------------------------

@pytest.mark.parametrize("engine", ["sqlite"])
async def test_database_newer_than_code_is_refused(db: Database, tmp_path: Path) -> None:
    from myelin.storage.migrations import SchemaTooNewError, run_migrations

    await db.execute("INSERT INTO schema_migrations (name, applied_ts) VALUES (?, ?)",
                     "999_from_the_future.sql", 0)
    with pytest.raises(SchemaTooNewError) as info:
        await run_migrations(db)
    message = str(info.value)
    assert "\n" not in message
    assert "database schema is newer than this code" in message
    assert "999_from_the_future.sql" in message
    assert "run the newer Myelin version" in message
    # Nothing was touched: the row is still there and nothing else changed.
    names = {row[0] for row in await db.fetchall("SELECT name FROM schema_migrations")}
    assert "999_from_the_future.sql" in names


async def test_opening_a_newer_database_refuses_and_closes(tmp_path: Path) -> None:
    from myelin.storage.migrations import SchemaTooNewError

    config = DatabaseConfig(engine="sqlite", path=str(tmp_path / "hs.db"))
    db = await open_database(config)
    await db.execute("INSERT INTO schema_migrations (name, applied_ts) VALUES (?, ?)",
                     "999_from_the_future.sql", 0)
    await db.close()
    with pytest.raises(SchemaTooNewError):
        await open_database(config)
    # `myelin run` reports it as its one-line reason.
    from myelin.app.process import StartupError, build_homeserver

    hs_config = load_config_from_dict({"server_name": "a.org", "database": {
        "name": "sqlite3", "args": {"database": config.path}}})
    with pytest.raises(StartupError) as info:
        await build_homeserver(hs_config)
    assert str(info.value).startswith(f"cannot use the sqlite database {config.path}: the "
                                      "database schema is newer than this code")


async def test_waiting_on_the_migration_lock_then_seeing_its_work(
        postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture) -> None:
    """A starter that finds another process migrating waits on the advisory lock
    and only then reads schema_migrations, so it sees what the other applied."""
    import asyncpg

    from myelin.storage.migrations import _ADVISORY_LOCK_ID, SchemaTooNewError, run_migrations

    name = f"lock_{os.getpid()}"
    await asyncio.to_thread(create_database, postgres_server, name)
    config = DatabaseConfig(engine="postgres", user=postgres_server.user,
                            host=postgres_server.host, port=postgres_server.port,
                            database=name, cp_min=1, cp_max=2)
    db = await open_database(config)
    other = await asyncpg.connect(**postgres_server.dsn_args(name))
    try:
        txn = other.transaction()
        await txn.start()
        await other.execute("SELECT pg_advisory_xact_lock($1)", _ADVISORY_LOCK_ID)
        with caplog.at_level(logging.INFO, logger="myelin.storage.migrations"):
            waiter = asyncio.create_task(run_migrations(db))
            await asyncio.sleep(0.5)
            assert not waiter.done()  # blocked on the lock, not failed, not finished
        assert any("waiting" in r.getMessage() for r in caplog.records)
        # The other process "applies" a migration this code does not know.
        await other.execute("INSERT INTO schema_migrations (name, applied_ts) VALUES "
                            "('999_from_the_future.sql', 0)")
        await txn.commit()
        with pytest.raises(SchemaTooNewError):
            await asyncio.wait_for(waiter, 10)
    finally:
        await other.close()
        await db.close()


# -- PostgreSQL collation -------------------------------------------------------------------------

def test_collation_problem_names_the_fix() -> None:
    from myelin.storage.engines.postgres import collation_problem

    assert collation_problem("synapse", {"datcollate": "C", "datctype": "C",
                                         "datlocprovider": b"c"}) is None
    for ok in ("C.UTF-8", "C.utf8", "POSIX"):
        assert collation_problem("synapse", {"datcollate": ok, "datctype": ok}) is None
    problem = collation_problem("synapse", {"datcollate": "en_US.UTF-8", "datctype": "C"})
    assert problem is not None and "\n" not in problem
    assert "LC_COLLATE='en_US.UTF-8'" in problem
    assert ("CREATE DATABASE synapse ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' "
            "TEMPLATE=template0;") in problem
    assert "move the data over" in problem
    odd = collation_problem("My-DB", {"datcollate": "C", "datctype": "de_DE.UTF-8"})
    assert odd is not None and 'CREATE DATABASE "My-DB" ' in odd


async def test_postgres_with_icu_collation_refused(postgres_server: PostgresServer) -> None:
    import asyncpg

    from myelin.storage.engines.postgres import DatabaseCollationError

    name = f"icu_{os.getpid()}"
    admin = await asyncpg.connect(**postgres_server.dsn_args("postgres"))
    try:
        await admin.execute(f"CREATE DATABASE {name} LOCALE_PROVIDER icu ICU_LOCALE 'en-US' "
                            "TEMPLATE template0")
    finally:
        await admin.close()
    config = DatabaseConfig(engine="postgres", user=postgres_server.user,
                            host=postgres_server.host, port=postgres_server.port,
                            database=name, cp_min=1, cp_max=1)
    with pytest.raises(DatabaseCollationError) as info:
        await open_database(config)
    message = str(info.value)
    assert "ICU" in message and "en-US" in message
    assert (f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' "
            "LOCALE_PROVIDER=libc TEMPLATE=template0;") in message
    # `myelin run` reports it as its one-line reason.
    from myelin.app.process import StartupError, build_homeserver

    hs_config = load_config_from_dict({"server_name": "a.org", "database": {
        "name": "psycopg2", "args": {**postgres_server.dsn_args(name), "cp_min": 1,
                                     "cp_max": 1}}})
    with pytest.raises(StartupError) as startup:
        await build_homeserver(hs_config)
    assert "\n" not in str(startup.value)
    assert str(startup.value).startswith(f"cannot use the postgres database {name} at ")
    assert "LC_COLLATE='C'" in str(startup.value)
