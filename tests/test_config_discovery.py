"""Config of .well-known documents and TURN: defaults, Synapse's keys, and errors
that name the key."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest

from myelin.config import ConfigError, load_config_from_dict
from myelin.config.discovery import VoipConfig
from myelin.domain import MatrixError, Requester
from myelin.handlers.voip import TurnHandler, ephemeral_credentials

BASE: dict[str, Any] = {
    "server_name": "example.org",
    "listeners": [{"port": 8008, "bind_addresses": ["127.0.0.1"],
                   "resources": [{"names": ["client", "federation"]}]}],
}
ALICE = Requester("@alice:example.org", "DEV", "tok")
GUEST = Requester("@1234:example.org", "DEV", "tok", is_guest=True)


def load(**overrides: Any) -> Any:
    return load_config_from_dict({**BASE, **overrides})


def test_defaults_serve_nothing() -> None:
    config = load()
    assert config.discovery.serve_client_wellknown is False
    assert config.discovery.support_contacts == [] and config.discovery.support_page is None
    assert config.voip == VoipConfig()
    assert TurnHandler(config.voip).credentials(ALICE) == {}


def test_support_contacts_are_checked() -> None:
    for contact, key in (({"matrix_id": "@a:x"}, "role"),
                         ({"role": "m.role.admin"}, "matrix_id"),
                         ({"matrix_id": "admin", "role": "m.role.admin"}, "matrix_id"),
                         ({"email_address": "a@x", "role": "Admin"}, "role")):
        with pytest.raises(ConfigError) as info:
            load(support={"contacts": [contact]})
        assert f"support.contacts[0].{key}" in str(info.value), contact
    config = load(support={"contacts": [{"email_address": "a@x",
                                         "role": "org.example.moderator"}]})
    assert config.discovery.support_contacts == [{"email_address": "a@x",
                                                  "role": "org.example.moderator"}]
    with pytest.raises(ConfigError) as info:
        load(extra_well_known_client_content=["x"])
    assert "extra_well_known_client_content" in str(info.value)


def test_turn_keys(tmp_path: Path) -> None:
    secret_file = tmp_path / "turn.secret"
    secret_file.write_text("from-file\n")
    config = load(turn_uris="turn:t.example.org", turn_shared_secret_path=str(secret_file),
                  turn_user_lifetime="1d", turn_allow_guests=False)
    assert config.voip == VoipConfig(turn_uris=["turn:t.example.org"],
                                     turn_shared_secret="from-file",
                                     turn_user_lifetime_ms=86_400_000, turn_allow_guests=False)
    with pytest.raises(ConfigError) as info:
        load(turn_shared_secret="a", turn_shared_secret_path=str(secret_file))
    assert "turn_shared_secret_path" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load(turn_user_lifetime="soon")
    assert "turn_user_lifetime" in str(info.value)


def test_ephemeral_credentials_follow_the_turn_rest_scheme() -> None:
    # username = "<expiry>:<user>", password = base64(HMAC-SHA1(secret, username)).
    username, password = ephemeral_credentials("s3cret", "@alice:example.org", 1700000000)
    assert username == "1700000000:@alice:example.org"
    assert password == base64.b64encode(hmac.new(b"s3cret", username.encode(),
                                                 hashlib.sha1).digest()).decode()


def test_static_credentials_and_guests() -> None:
    voip = VoipConfig(turn_uris=["turn:t"], turn_username="user", turn_password="pass",
                      turn_user_lifetime_ms=60_000)
    assert TurnHandler(voip).credentials(ALICE) == {"username": "user", "password": "pass",
                                                    "uris": ["turn:t"], "ttl": 60}
    assert TurnHandler(voip).credentials(GUEST)["username"] == "user"
    # A shared secret wins over static credentials; the expiry is now + lifetime.
    both = VoipConfig(turn_uris=["turn:t"], turn_shared_secret="k", turn_username="user",
                      turn_password="pass", turn_user_lifetime_ms=60_000)
    creds = TurnHandler(both).credentials(ALICE, now_ms=1_000_000)
    assert creds["username"] == "1060:@alice:example.org"
    # URIs without any credentials: nothing to hand out.
    assert TurnHandler(VoipConfig(turn_uris=["turn:t"])).credentials(ALICE) == {}
    no_guests = VoipConfig(turn_uris=["turn:t"], turn_username="u", turn_password="p",
                           turn_allow_guests=False)
    with pytest.raises(MatrixError) as info:
        TurnHandler(no_guests).credentials(GUEST)
    assert info.value.errcode == "M_FORBIDDEN"
