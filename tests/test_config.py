"""Configuration: loading, merging, validation messages, defaults."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from myelin.config import ConfigError, HomeserverConfig, load_config, load_config_from_dict

BASE: dict[str, Any] = {
    "server_name": "example.org",
    "listeners": [{"port": 8008, "bind_addresses": ["127.0.0.1"],
                   "resources": [{"names": ["client", "federation"]}]}],
}


def write(tmp_path: Path, name: str, data: Any) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return str(path)


def load_with(tmp_path: Path, **overrides: Any) -> HomeserverConfig:
    return load_config([write(tmp_path, "homeserver.yaml", {**BASE, **overrides})])


def error_of(tmp_path: Path, **overrides: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_with(tmp_path, **overrides)
    return info.value


# -- error messages name the key path and the file ---------------------------------

def test_error_names_key_path_and_file(tmp_path: Path) -> None:
    e = error_of(tmp_path, listeners=[{"port": "abc"}])
    assert str(e) == 'listeners[0].port: expected an integer, got "abc" (homeserver.yaml)'
    assert e.key_path == "listeners[0].port"
    assert e.source == "homeserver.yaml"


@pytest.mark.parametrize(("overrides", "key_path", "fragment"), [
    ({"server_name": 5}, "server_name", "expected a string"),
    ({"server_name": "not a name!"}, "server_name", "not a valid server name"),
    ({"listeners": [{"port": 8008}, {"port": 70000}]}, "listeners[1].port", "at most 65535"),
    ({"listeners": [{"port": -1}]}, "listeners[0].port", "at least 0"),
    ({"listeners": [{"bind_addresses": ["::"]}]}, "listeners[0].port", "is required"),
    ({"listeners": ["8008"]}, "listeners[0]", "expected a mapping"),
    ({"listeners": {"port": 8008}}, "listeners", "expected a list"),
    ({"listeners": [{"port": 1, "resources": [{"names": ["bogus"]}]}]},
     "listeners[0].resources[0].names", 'unknown resource "bogus"'),
    ({"enable_registration": "yes"}, "enable_registration", "expected true or false"),
    ({"database": {"name": "mysql"}}, "database.name", "expected one of"),
    ({"database": {"name": "psycopg2", "args": {"port": "x"}}}, "database.args.port",
     "expected an integer"),
    ({"rc_message": {"per_second": "fast"}}, "rc_message.per_second", "expected a number"),
    ({"rc_login": {"address": {"burst_count": []}}}, "rc_login.address.burst_count",
     "expected a number"),
    ({"max_upload_size": "lots"}, "max_upload_size", "expected a size"),
    ({"default_room_version": "999"}, "default_room_version", "unknown room version"),
    ({"worker_app": "synapse.app.nope"}, "worker_app", "expected one of"),
    ({"worker_app": "synapse.app.generic_worker"}, "worker_name", "is required"),
    ({"stream_writers": {"bogus": ["w1"]}}, "stream_writers.bogus", "unknown stream"),
    ({"instance_map": {"w1": {"port": "x"}}}, "instance_map.w1.port", "expected an integer"),
    ({"redis": {"enabled": 1}}, "redis.enabled", "expected true or false"),
    ({"session_lifetime": "forever"}, "session_lifetime", "expected a duration"),
])
def test_invalid_values(tmp_path: Path, overrides: dict[str, Any], key_path: str,
                        fragment: str) -> None:
    e = error_of(tmp_path, **overrides)
    assert e.key_path == key_path, str(e)
    assert fragment in str(e)
    assert str(e).startswith(f"{key_path}: ")
    assert str(e).endswith("(homeserver.yaml)")


def test_missing_server_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config([write(tmp_path, "homeserver.yaml", {"listeners": []})])
    assert str(info.value) == "server_name: is required (homeserver.yaml)"


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "server_name: x\nlisteners: [\n  - port: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config([path])
    message = str(info.value)
    assert "not valid YAML" in message
    assert "line" in message
    assert message.endswith(f"({path})")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config([write(tmp_path, "homeserver.yaml", "- a\n- b\n")])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config([str(tmp_path / "nope.yaml")])


def test_empty_file_is_only_missing_server_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="server_name: is required"):
        load_config([write(tmp_path, "homeserver.yaml", "")])


# -- merging ----------------------------------------------------------------------

def test_later_files_override_earlier_ones(tmp_path: Path) -> None:
    shared = write(tmp_path, "homeserver.yaml", {
        **BASE, "enable_registration": False, "max_upload_size": "10M",
        "database": {"name": "psycopg2", "args": {"database": "myelin"}},
        "redis": {"enabled": True}})
    worker = write(tmp_path, "worker1.yaml", {
        "worker_app": "synapse.app.generic_worker", "worker_name": "worker1",
        "enable_registration": True,
        "listeners": [{"port": 8083, "resources": [{"names": ["client"]}]}],
        "worker_listeners": [{"port": 8084, "resources": [{"names": ["client"]}]}],
    })
    config = load_config([shared, worker])
    assert config.worker_name == "worker1"
    assert not config.is_main_process
    assert config.instance_name == "worker1"
    assert config.enable_registration is True
    assert [lst.port for lst in config.listeners] == [8084]  # a worker binds worker_listeners
    assert config.max_upload_size == 10 * 1024 * 1024  # kept from the first file
    assert config.server_name == "example.org"
    assert config.sources["listeners"] == "worker1.yaml"
    assert config.sources["server_name"] == "homeserver.yaml"
    main = load_config([shared, write(tmp_path, "main.yaml", {
        "listeners": [{"port": 8083, "resources": [{"names": ["client"]}]}]})])
    assert [lst.port for lst in main.listeners] == [8083]  # replaced, not appended


def test_error_names_the_file_the_key_came_from(tmp_path: Path) -> None:
    shared = write(tmp_path, "homeserver.yaml", BASE)
    worker = write(tmp_path, "worker1.yaml", {"listeners": [{"port": "eighty"}]})
    with pytest.raises(ConfigError) as info:
        load_config([shared, worker])
    assert str(info.value) == 'listeners[0].port: expected an integer, got "eighty" (worker1.yaml)'


def test_three_files_last_wins(tmp_path: Path) -> None:
    paths = [write(tmp_path, f"{i}.yaml", {**BASE, "media_store_path": f"/m{i}"})
             for i in range(3)]
    assert load_config(paths).media_store_path == "/m2"


# -- unknown keys -----------------------------------------------------------------

def test_unknown_keys_warn_not_fail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="myelin.config"):
        config = load_with(tmp_path, no_such_option=1)
    assert config.server_name == "example.org"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no_such_option" in w and "homeserver.yaml" in w for w in warnings), warnings


def test_tolerated_synapse_keys_do_not_warn(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="myelin.config"):
        load_with(tmp_path, report_stats=False, macaroon_secret_key="x", pid_file="/x.pid")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_known_keys_do_not_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="myelin.config"):
        load_with(tmp_path, enable_registration=True, rc_login={"address": {"per_second": 1}},
                  database={"name": "sqlite3", "args": {"database": "x.db"}},
                  password_config={"policy": {"enabled": True, "minimum_length": 8}})
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- defaults ---------------------------------------------------------------------

def test_defaults() -> None:
    config = load_config_from_dict({"server_name": "example.org"})
    assert config.listeners == []
    assert config.public_baseurl == "http://example.org:8008/"
    assert config.database.engine == "sqlite"
    assert config.database.path == "homeserver.db"
    assert config.signing_key_path is None
    assert config.enable_registration is False
    assert config.registration_shared_secret is None
    assert config.allow_guest_access is False
    assert config.max_upload_size == 50 * 1024 * 1024
    assert config.max_request_body_size == 1024 * 1024
    assert config.default_room_version == "12"
    assert config.rc_message.per_second == 0.2 and config.rc_message.burst_count == 10
    assert config.rc_login.failed_attempts.burst_count == 3
    assert config.password_min_length == 0
    assert config.session_lifetime_ms is None
    assert config.worker_app == "synapse.app.homeserver"
    assert config.is_main_process and config.instance_name == "master"
    assert config.writers_of("events") == ["master"]
    assert config.redis.enabled is False and config.redis.port == 6379


def test_listener_defaults_and_public_baseurl() -> None:
    config = load_config_from_dict({"server_name": "example.org:8448",
                                    "listeners": [{"port": 9000}]})
    (listener,) = config.listeners
    assert listener.type == "http"
    assert listener.bind_addresses == ["::", "0.0.0.0"]
    assert listener.resources == {"client", "federation"}
    assert listener.x_forwarded is False
    assert config.public_baseurl == "http://example.org:9000/"


def test_public_baseurl_gets_trailing_slash() -> None:
    config = load_config_from_dict({"server_name": "a.org", "public_baseurl": "https://m.a.org"})
    assert config.public_baseurl == "https://m.a.org/"


def test_bind_address_singular_and_metrics_listener() -> None:
    config = load_config_from_dict({"server_name": "a.org", "listeners": [
        {"port": 1, "bind_address": "127.0.0.1"},
        {"port": 2, "type": "metrics"},
        {"path": "/run/myelin.sock", "resources": [{"names": ["replication"]}]},
    ]})
    assert config.listeners[0].bind_addresses == ["127.0.0.1"]
    assert "metrics" in config.listeners[1].resources
    assert config.listeners[2].path == "/run/myelin.sock"
    assert config.listeners[2].port is None
    assert config.listeners[2].resources == {"replication"}


def test_default_room_version_may_be_an_int() -> None:
    config = load_config_from_dict({"server_name": "a.org", "default_room_version": 10})
    assert config.default_room_version == "10"


def test_password_policy_and_session_lifetime() -> None:
    config = load_config_from_dict({
        "server_name": "a.org", "session_lifetime": "2d",
        "password_config": {"policy": {"enabled": True, "minimum_length": 12}}})
    assert config.password_min_length == 12
    assert config.session_lifetime_ms == 2 * 86_400_000
    disabled = load_config_from_dict({
        "server_name": "a.org", "password_config": {"policy": {"minimum_length": 12}}})
    assert disabled.password_min_length == 0


# -- database ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["psycopg2", "psycopg", "postgres", "postgresql"])
def test_postgres_database(name: str) -> None:
    config = load_config_from_dict({"server_name": "a.org", "database": {
        "name": name, "args": {"user": "synapse", "password": "s3cret", "database": "myelin",
                               "host": "db.internal", "port": 5433, "cp_min": 2,
                               "cp_max": 20}}})
    db = config.database
    assert db.engine == "postgres"
    assert (db.user, db.password, db.database, db.host, db.port) == (
        "synapse", "s3cret", "myelin", "db.internal", 5433)
    assert (db.cp_min, db.cp_max) == (2, 20)


def test_postgres_defaults_and_dbname_alias() -> None:
    db = load_config_from_dict({"server_name": "a.org", "database": {
        "name": "psycopg2", "args": {"dbname": "synapse"}}}).database
    assert db.engine == "postgres"
    assert db.database == "synapse"
    assert db.port == 5432 and db.host is None and db.user is None
    assert (db.cp_min, db.cp_max) == (5, 10)


@pytest.mark.parametrize("name", ["sqlite3", "sqlite"])
def test_sqlite_database(name: str) -> None:
    db = load_config_from_dict({"server_name": "a.org", "database": {
        "name": name, "args": {"database": "/var/lib/myelin/hs.db"}}}).database
    assert db.engine == "sqlite"
    assert db.path == "/var/lib/myelin/hs.db"


def test_postgres_pool_size_must_be_positive(tmp_path: Path) -> None:
    e = error_of(tmp_path, database={"name": "psycopg2", "args": {"cp_max": 0}})
    assert e.key_path == "database.args.cp_max"


# -- sizes ------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (1024, 1024),
    ("1024", 1024),
    ("10K", 10 * 1024),
    ("10k", 10 * 1024),
    ("50M", 50 * 1024**2),
    ("50MB", 50 * 1024**2),
    ("1G", 1024**3),
    ("1.5M", int(1.5 * 1024**2)),
    (" 2M ", 2 * 1024**2),
])
def test_sizes(value: Any, expected: int) -> None:
    config = load_config_from_dict({"server_name": "a.org", "max_upload_size": value,
                                    "max_request_body_size": value})
    assert config.max_upload_size == expected
    assert config.max_request_body_size == expected


@pytest.mark.parametrize("value", ["lots", "M", "10X", True, [1], "-5M", -1, "infK", "nanM"])
def test_bad_sizes(tmp_path: Path, value: Any) -> None:
    e = error_of(tmp_path, max_upload_size=value)
    assert e.key_path == "max_upload_size"


# -- workers ----------------------------------------------------------------------

def test_worker_settings() -> None:
    config = load_config_from_dict({
        "server_name": "a.org", "worker_app": "synapse.app.synchrotron",
        "worker_name": "sync1",
        "instance_map": {"main": {"host": "10.0.0.1", "port": 9093},
                         "sync1": {"path": "/run/sync1.sock"}},
        "stream_writers": {"events": ["p1", "p2"], "typing": "t1"},
        "redis": {"enabled": True, "host": "redis", "port": 6380, "dbid": 2},
        "worker_replication_secret": "s",
    })
    assert config.worker_app == "synapse.app.synchrotron"
    assert config.instance_name == "sync1"
    assert set(config.instance_map) == {"master", "sync1"}  # "main" is the main process
    assert config.instance_map["master"].base_url == "http://10.0.0.1:9093"
    assert config.instance_map["sync1"].path == "/run/sync1.sock"
    assert config.writers_of("events") == ["p1", "p2"]
    assert config.writers_of("typing") == ["t1"]
    assert config.writers_of("receipts") == ["master"]
    assert config.redis.enabled and config.redis.host == "redis" and config.redis.dbid == 2


# -- the generated config ---------------------------------------------------------

def test_generated_config_loads(tmp_path: Path) -> None:
    from myelin.config.generate import generate_config

    path = generate_config("example.org", str(tmp_path / "homeserver.yaml"),
                           str(tmp_path / "data"))
    config = load_config([path])
    assert config.server_name == "example.org"
    assert config.database.engine == "sqlite"
    assert config.database.path == str(tmp_path / "data" / "homeserver.db")
    assert config.signing_key_path is not None
    assert Path(config.signing_key_path).exists()
    assert config.registration_shared_secret
    assert config.enable_registration is False
    assert config.max_upload_size == 50 * 1024 * 1024
