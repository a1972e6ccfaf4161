"""Config of what clients discover: ``.well-known`` documents and TURN servers.

Synapse's keys, where Synapse has them:

- ``serve_client_wellknown`` (default false): serve
  ``/.well-known/matrix/client`` with ``m.homeserver.base_url`` =
  ``public_baseurl`` (and ``m.identity_server`` from
  ``default_identity_server``), plus ``extra_well_known_client_content``
  (keys that do not replace those two).
- ``turn_uris``, ``turn_shared_secret`` (or ``turn_shared_secret_path``),
  ``turn_username``/``turn_password``, ``turn_user_lifetime`` (default 1h),
  ``turn_allow_guests`` (default true): ``/voip/turnServer``.

Synapse has no key for ``/.well-known/matrix/support``; Myelin's is
``support``, shaped like the document it serves::

    support:
      contacts:
        - {matrix_id: "@admin:example.org", email_address: admin@example.org,
           role: m.role.admin}
      support_page: https://example.org/help

Without contacts and support page the endpoint answers 404.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from myelin.config.reader import ConfigReader

_ROLE = re.compile(r"^(m\.role\.(admin|security)|[a-z0-9_-]+(\.[a-z0-9_-]+)+)$")


@dataclass(frozen=True)
class DiscoveryConfig:
    serve_client_wellknown: bool = False
    default_identity_server: str | None = None
    extra_well_known_client_content: dict[str, Any] = field(default_factory=dict)
    support_contacts: list[dict[str, str]] = field(default_factory=list)
    support_page: str | None = None


@dataclass(frozen=True)
class VoipConfig:
    turn_uris: list[str] = field(default_factory=list)
    turn_shared_secret: str | None = None
    turn_username: str | None = None
    turn_password: str | None = None
    turn_user_lifetime_ms: int = 3_600_000
    turn_allow_guests: bool = True


def read_discovery(r: ConfigReader) -> DiscoveryConfig:
    extra = r.raw("extra_well_known_client_content", {})
    if not isinstance(extra, dict):
        raise r.error("extra_well_known_client_content", "expected a mapping")
    support = r.section("support")
    contacts = []
    for index, contact in enumerate(support.sections("contacts")):
        entry = {}
        for key in ("matrix_id", "email_address", "role"):
            value = contact.str_(key, None)
            if value is not None:
                entry[key] = value
        if "role" not in entry:
            raise contact.error("role", "is required (m.role.admin, m.role.security, or a "
                                        "namespaced role such as org.example.role)")
        if not _ROLE.match(entry["role"]):
            raise contact.error("role", f'"{entry["role"]}" is not m.role.admin, '
                                        "m.role.security or a namespaced identifier")
        if "matrix_id" not in entry and "email_address" not in entry:
            raise contact.error("matrix_id", "give matrix_id or email_address (or both)")
        if "matrix_id" in entry and not entry["matrix_id"].startswith("@"):
            raise contact.error("matrix_id", "must be a user ID such as @admin:example.org")
        del index
        contacts.append(entry)
    return DiscoveryConfig(
        serve_client_wellknown=r.bool_("serve_client_wellknown", False),
        default_identity_server=r.str_("default_identity_server", None),
        extra_well_known_client_content=dict(extra),
        support_contacts=contacts,
        support_page=support.str_("support_page", None),
    )


def read_voip(r: ConfigReader, duration_ms: Any) -> VoipConfig:
    secret = r.str_("turn_shared_secret", None)
    secret_path = r.str_("turn_shared_secret_path", None)
    if secret_path is not None:
        if secret is not None:
            raise r.error("turn_shared_secret_path", "cannot be combined with "
                          "turn_shared_secret; remove one of them")
        try:
            with open(secret_path, encoding="utf-8") as f:
                secret = f.read().strip()
        except OSError as e:
            raise r.error("turn_shared_secret_path",
                          f"cannot read {secret_path}: {e.strerror or e}") from None
    lifetime = duration_ms(r, "turn_user_lifetime", r.raw("turn_user_lifetime", "1h"))
    return VoipConfig(
        turn_uris=r.str_list("turn_uris", []),
        turn_shared_secret=secret,
        turn_username=r.str_("turn_username", None),
        turn_password=r.str_("turn_password", None),
        turn_user_lifetime_ms=lifetime if lifetime is not None else 3_600_000,
        turn_allow_guests=r.bool_("turn_allow_guests", True),
    )
