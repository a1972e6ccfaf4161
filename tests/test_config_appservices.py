"""Application-service registration files (``app_service_config_files``), as
the spec's "Registration" section describes them: every file is checked when
the config is loaded, and an error names the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from myelin.config import ConfigError, load_config

BASE: dict[str, Any] = {
    "server_name": "example.org",
    "listeners": [{"port": 8008, "bind_addresses": ["127.0.0.1"],
                   "resources": [{"names": ["client"]}]}],
}
GOOD: dict[str, Any] = {
    "id": "irc", "url": "http://127.0.0.1:9999", "as_token": "a", "hs_token": "h",
    "sender_localpart": "ircbot",
    "namespaces": {"users": [{"exclusive": True, "regex": "@irc_.*:example.org"}],
                   "aliases": [{"exclusive": False, "regex": "#irc_.*:example.org"}],
                   "rooms": [{"exclusive": False, "regex": "!bridged:example.org"}]},
    "rate_limited": False, "protocols": ["irc"], "receive_ephemeral": True,
}


def load(tmp_path: Path, *registrations: Any) -> Any:
    paths = []
    for n, reg in enumerate(registrations):
        path = tmp_path / f"reg{n}.yaml"
        path.write_text(yaml.safe_dump(reg), encoding="utf-8")
        paths.append(str(path))
    main = tmp_path / "homeserver.yaml"
    main.write_text(yaml.safe_dump({**BASE, "app_service_config_files": paths}))
    return load_config([str(main)])


def error(tmp_path: Path, *registrations: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, *registrations)
    return info.value


def test_a_registration_is_read(tmp_path: Path) -> None:
    (service,) = load(tmp_path, GOOD).app_services
    assert (service.id, service.url, service.as_token, service.hs_token) == (
        "irc", "http://127.0.0.1:9999", "a", "h")
    assert service.sender == "@ircbot:example.org"
    assert service.rate_limited is False and service.protocols == ("irc",)
    assert service.receive_ephemeral and not service.unstable_ephemeral


def test_user_namespace_regex_matches_whole_ids(tmp_path: Path) -> None:
    (service,) = load(tmp_path, GOOD).app_services
    assert service.is_exclusive_user("@irc_bob:example.org")
    assert not service.is_interested_in_user("@bob:example.org")
    assert not service.is_interested_in_user("x@irc_bob:example.org.evil")
    # The sender is the service's own, namespace or not.
    assert service.is_exclusive_user("@ircbot:example.org")


def test_non_exclusive_alias_and_room_namespaces(tmp_path: Path) -> None:
    (service,) = load(tmp_path, GOOD).app_services
    assert service.is_interested_in_alias("#irc_chan:example.org")
    assert not service.is_exclusive_alias("#irc_chan:example.org")
    assert service.is_interested_in_room("!bridged:example.org")


def test_url_may_be_null(tmp_path: Path) -> None:
    (service,) = load(tmp_path, {**GOOD, "url": None}).app_services
    assert service.url is None


def test_unstable_ephemeral_flag(tmp_path: Path) -> None:
    reg = {**GOOD, "receive_ephemeral": False, "de.sorunome.msc2409.push_ephemeral": True}
    (service,) = load(tmp_path, reg).app_services
    assert service.unstable_ephemeral and not service.receive_ephemeral


@pytest.mark.parametrize("key", ["id", "as_token", "hs_token", "sender_localpart"])
def test_required_keys_are_named(tmp_path: Path, key: str) -> None:
    reg = {k: v for k, v in GOOD.items() if k != key}
    e = error(tmp_path, reg)
    assert e.key_path == key and e.source == "reg0.yaml"


def test_bad_regex_names_the_namespace_entry(tmp_path: Path) -> None:
    reg = {**GOOD, "namespaces": {"users": [{"regex": "@irc_(:example.org"}]}}
    e = error(tmp_path, reg)
    assert e.key_path == "namespaces.users[0].regex" and e.source == "reg0.yaml"


def test_exclusive_must_be_a_boolean(tmp_path: Path) -> None:
    reg = {**GOOD, "namespaces": {"users": [{"regex": "@a.*", "exclusive": "yes"}]}}
    assert error(tmp_path, reg).key_path == "namespaces.users[0].exclusive"


def test_url_must_be_http(tmp_path: Path) -> None:
    assert error(tmp_path, {**GOOD, "url": "ftp://x"}).key_path == "url"


def test_two_services_cannot_share_an_as_token(tmp_path: Path) -> None:
    e = error(tmp_path, GOOD, {**GOOD, "id": "other", "hs_token": "h2"})
    assert e.key_path == "as_token" and e.source == "reg1.yaml"


def test_missing_file_is_named(tmp_path: Path) -> None:
    main = tmp_path / "homeserver.yaml"
    main.write_text(yaml.safe_dump({**BASE, "app_service_config_files": ["/nonexistent.yaml"]}))
    with pytest.raises(ConfigError) as info:
        load_config([str(main)])
    assert info.value.key_path == "app_service_config_files"
    assert "/nonexistent.yaml" in str(info.value)


# -- which instance sends transactions -----------------------------------------------

def _roles(**shared: Any) -> Any:
    from myelin.app.roles import ProcessRoles
    from myelin.config import load_config_from_dict

    return ProcessRoles.from_config(load_config_from_dict({**BASE, **shared}))


def test_main_sends_by_default() -> None:
    assert _roles().runs("appservice")


def test_the_named_worker_sends_instead_of_main() -> None:
    assert not _roles(notify_appservices_from_worker="as1").runs("appservice")
    worker = _roles(notify_appservices_from_worker="as1", worker_app="synapse.app.generic_worker",
                    worker_name="as1")
    assert worker.runs("appservice")


def test_legacy_notify_appservices_false_leaves_it_to_the_appservice_worker() -> None:
    assert not _roles(notify_appservices=False).runs("appservice")
    legacy = _roles(notify_appservices=False, worker_app="synapse.app.appservice",
                    worker_name="as1")
    assert legacy.runs("appservice")
