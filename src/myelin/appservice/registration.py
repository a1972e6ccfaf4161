"""Application-service registration files (``app_service_config_files``).

Each file is a YAML mapping as the spec's "Registration" section has it: an
``id``, the ``url`` to push to (null: the service receives nothing), the two
tokens, ``sender_localpart``, ``namespaces`` of users, aliases and rooms
(regexes, ``exclusive``), ``rate_limited``, ``protocols`` and the ephemeral
opt-ins (``receive_ephemeral``, ``push_ephemeral`` and MSC2409's
``de.sorunome.msc2409.push_ephemeral``). Every file is checked at start-up;
an error names the file and the key (:class:`ConfigError`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from myelin.config.errors import ConfigError
from myelin.config.reader import ConfigReader

NAMESPACE_KINDS = ("users", "aliases", "rooms")


@dataclass(frozen=True)
class Namespace:
    regex: re.Pattern[str]
    exclusive: bool

    def matches(self, value: str) -> bool:
        # The spec's regexes describe the whole identifier.
        return self.regex.fullmatch(value) is not None


@dataclass(frozen=True)
class AppService:
    id: str
    url: str | None
    as_token: str
    hs_token: str
    sender: str  # the full user id of sender_localpart
    users: tuple[Namespace, ...] = ()
    aliases: tuple[Namespace, ...] = ()
    rooms: tuple[Namespace, ...] = ()
    rate_limited: bool = True
    protocols: tuple[str, ...] = ()
    receive_ephemeral: bool = False  # stable `ephemeral` key in transactions
    unstable_ephemeral: bool = False  # MSC2409's `de.sorunome.msc2409.ephemeral`
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def wants_ephemeral(self) -> bool:
        return self.receive_ephemeral or self.unstable_ephemeral

    # -- namespaces ----------------------------------------------------------
    def is_interested_in_user(self, user_id: str) -> bool:
        """The user is the service's sender or in its users namespace."""
        return user_id == self.sender or any(ns.matches(user_id) for ns in self.users)

    def is_exclusive_user(self, user_id: str) -> bool:
        return user_id == self.sender or any(
            ns.exclusive and ns.matches(user_id) for ns in self.users)

    def is_interested_in_alias(self, alias: str) -> bool:
        return any(ns.matches(alias) for ns in self.aliases)

    def is_exclusive_alias(self, alias: str) -> bool:
        return any(ns.exclusive and ns.matches(alias) for ns in self.aliases)

    def is_interested_in_room(self, room_id: str) -> bool:
        return any(ns.matches(room_id) for ns in self.rooms)


def _namespaces(reader: ConfigReader, kind: str) -> tuple[Namespace, ...]:
    out = []
    for entry in reader.sections(kind):
        pattern = entry.str_("regex")
        try:
            compiled = re.compile(pattern)
        except re.error as e:
            raise entry.error("regex", f"is not a valid regular expression: {e}") from None
        out.append(Namespace(compiled, entry.bool_("exclusive", False)))
    return tuple(out)


def parse_registration(data: Any, source: str, server_name: str) -> AppService:
    """One registration file's mapping → an :class:`AppService` (ConfigError
    naming ``source`` and the key when something is wrong)."""
    if not isinstance(data, dict):
        raise ConfigError("", "a registration file must be a mapping of keys to values", source)
    r = ConfigReader(data, "", lambda _key: source)
    service_id = r.str_("id")
    url = r.raw("url")
    if url is not None and not isinstance(url, str):
        raise r.error("url", "expected a URL or null")
    if isinstance(url, str) and not url.startswith(("http://", "https://")):
        raise r.error("url", f'"{url}" is not an http(s) URL')
    as_token = r.str_("as_token")
    hs_token = r.str_("hs_token")
    sender_localpart = r.str_("sender_localpart")
    if not sender_localpart or ":" in sender_localpart or sender_localpart.startswith("@"):
        raise r.error("sender_localpart", "must be a bare localpart")
    namespaces = r.section("namespaces")
    users = _namespaces(namespaces, "users")
    aliases = _namespaces(namespaces, "aliases")
    rooms = _namespaces(namespaces, "rooms")
    protocols = r.str_list("protocols", [])
    ephemeral_stable = r.bool_("receive_ephemeral", False) or r.bool_("push_ephemeral", False)
    return AppService(
        id=service_id, url=url.rstrip("/") if url else None, as_token=as_token,
        hs_token=hs_token, sender=f"@{sender_localpart}:{server_name}",
        users=users, aliases=aliases, rooms=rooms,
        rate_limited=r.bool_("rate_limited", True), protocols=tuple(protocols),
        receive_ephemeral=ephemeral_stable,
        unstable_ephemeral=r.bool_("de.sorunome.msc2409.push_ephemeral", False),
        source=source, extra={k: v for k, v in data.items() if k not in r.used},
    )


def load_registrations(paths: Sequence[str], server_name: str,
                       config_source: str | None = None) -> list[AppService]:
    """Read every file of ``app_service_config_files``; ids and tokens must
    be unique across them (a token names one service)."""
    services: list[AppService] = []
    for path in paths:
        name = os.path.basename(path)
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except OSError as e:
            raise ConfigError("app_service_config_files",
                              f"cannot read {path}: {e.strerror}", config_source) from None
        except yaml.YAMLError as e:
            raise ConfigError("", f"not valid YAML: {e}", name) from None
        services.append(parse_registration(data, name, server_name))
    seen: dict[tuple[str, str], str] = {}
    for service in services:
        for what, value in (("id", service.id), ("as_token", service.as_token),
                            ("hs_token", service.hs_token)):
            other = seen.get((what, value))
            if other is not None:
                raise ConfigError(what, f"is the same as in {other}; each service needs its own",
                                  service.source)
            seen[(what, value)] = service.source
        if service.as_token == service.hs_token:
            raise ConfigError("hs_token", "must differ from as_token", service.source)
    return services
