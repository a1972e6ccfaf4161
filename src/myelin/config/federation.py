"""Federation configuration: reaching other servers and deciding whom to trust.

Keys and defaults are Synapse's, so an admin's homeserver.yaml reads the same:

- ``federation_verify_certificates`` (default true), ``federation_custom_ca_list``
  (PEM files trusted in addition to the system store),
  ``federation_client_minimum_tls_version`` ("1", "1.1", "1.2" or "1.3").
- ``federation_ip_range_blocklist`` (also read as Synapse's older
  ``federation_ip_range_blacklist`` / ``ip_range_blacklist``): addresses
  outbound federation never connects to; the default is Synapse's list of
  private, loopback, link-local, CGNAT, ULA and documentation ranges, ``[]``
  empties it. ``0.0.0.0`` and ``::`` are always refused.
  ``federation_ip_range_whitelist`` (or ``ip_range_whitelist``) carves
  exceptions out of it.
- ``trusted_key_servers``: notaries asked for keys a server cannot give us
  itself (default matrix.org, ``[]`` = none), each
  ``{server_name, verify_keys: {key_id: base64}}``.
- ``old_signing_keys``: ``{key_id: {key, expired_ts}}``, published as
  ``old_verify_keys``.
- ``key_refresh_interval`` (default 1d): how long our published keys say they
  stay valid.
- ``federation_domain_whitelist``: when set, the only servers we federate with.
- ``outbound_federation_restricted_to``: instances that may open outbound
  federation connections; the others forward their requests to them.
- ``tls_certificate_path`` / ``tls_private_key_path``: the certificate a
  listener with ``tls: true`` serves.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any

from myelin.config.reader import ConfigReader

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Synapse's DEFAULT_IP_RANGE_BLOCKLIST.
DEFAULT_FEDERATION_IP_RANGE_BLOCKLIST = (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
    "192.0.0.0/24", "169.254.0.0/16", "192.88.99.0/24", "198.18.0.0/15", "192.0.2.0/24",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "::1/128", "fe80::/10", "fc00::/7",
    "2001:db8::/32", "ff00::/8", "fec0::/10",
)
# "This host": never a federation peer, whatever the config says.
ALWAYS_BLOCKED = ("0.0.0.0/32", "::/128")

TLS_VERSIONS = ("1", "1.1", "1.2", "1.3")
DEFAULT_KEY_REFRESH_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TrustedKeyServer:
    server_name: str
    # key id -> unpadded base64 public key; empty: fetch the notary's own keys.
    verify_keys: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OldSigningKey:
    key_id: str
    key: str  # unpadded base64 public key
    expired_ts: int


@dataclass(frozen=True)
class FederationConfig:
    verify_certificates: bool = True
    custom_ca_list: tuple[str, ...] = ()
    minimum_tls_version: str = "1"
    ip_range_blocklist: tuple[IpNetwork, ...] = field(default_factory=lambda: tuple(
        ipaddress.ip_network(n) for n in DEFAULT_FEDERATION_IP_RANGE_BLOCKLIST))
    ip_range_whitelist: tuple[IpNetwork, ...] = ()
    trusted_key_servers: tuple[TrustedKeyServer, ...] = (
        TrustedKeyServer("matrix.org", {
            "ed25519:auto": "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"}),)
    old_signing_keys: tuple[OldSigningKey, ...] = ()
    key_refresh_interval_ms: int = DEFAULT_KEY_REFRESH_MS
    # None: federate with everyone.
    domain_whitelist: frozenset[str] | None = None
    outbound_federation_restricted_to: tuple[str, ...] = ()
    tls_certificate_path: str | None = None
    tls_private_key_path: str | None = None

    def allows_domain(self, server_name: str) -> bool:
        return self.domain_whitelist is None or server_name in self.domain_whitelist


def _networks(r: ConfigReader, keys: tuple[str, ...],
              default: tuple[str, ...]) -> tuple[IpNetwork, ...]:
    """CIDR ranges under the first of ``keys`` the file has (else ``default``)."""
    key = next((k for k in keys if r.has(k)), None)
    r.used.update(keys)
    if key is None:
        texts: list[Any] = list(default)
    else:
        value = r.raw(key)
        if value is None:
            texts = []
        elif isinstance(value, list):
            texts = value
        else:
            raise r.error(key, "expected a list of IP ranges such as 10.0.0.0/8")
    out = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise r.error(key or keys[0], f"item {index}: expected a string, got {text!r}")
        try:
            out.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise r.error(key or keys[0], f'item {index}: "{text}" is not an IP address or '
                                          "CIDR range such as 10.0.0.0/8") from None
    return tuple(out)


def _trusted_key_servers(r: ConfigReader) -> tuple[TrustedKeyServer, ...]:
    if not r.has("trusted_key_servers"):
        r.used.add("trusted_key_servers")
        return FederationConfig.trusted_key_servers
    out = []
    for item in r.sections("trusted_key_servers"):
        name = item.str_("server_name")
        keys: dict[str, str] = {}
        verify_keys = item.section("verify_keys")
        for key_id in verify_keys.keys():
            value = verify_keys.str_(key_id)
            if not key_id.startswith("ed25519:"):
                raise item.error("verify_keys", f'key id "{key_id}" is not ed25519:<version>')
            keys[key_id] = value
        if item.has("accept_keys_insecurely"):
            item.bool_("accept_keys_insecurely")
        out.append(TrustedKeyServer(name, keys))
    return tuple(out)


def _old_signing_keys(r: ConfigReader) -> tuple[OldSigningKey, ...]:
    out = []
    for key_id, entry in r.mapping_of_sections("old_signing_keys").items():
        if not key_id.startswith("ed25519:"):
            raise r.error("old_signing_keys", f'key id "{key_id}" is not ed25519:<version>')
        out.append(OldSigningKey(key_id, entry.str_("key"),
                                 entry.int_("expired_ts", minimum=0)))
    return tuple(out)


def _existing_file(r: ConfigReader, key: str) -> str | None:
    path = r.str_(key, None)
    if path is not None and not os.path.isfile(path):
        raise r.error(key, f"file not found: {path}")
    return path  # type: ignore[no-any-return]


def read_federation(r: ConfigReader) -> FederationConfig:
    """The federation keys of the top-level mapping ``r``."""
    from myelin.config.schema import _duration_ms as duration_ms

    cas = r.str_list("federation_custom_ca_list", [])
    for index, path in enumerate(cas):
        if not os.path.isfile(path):
            raise r.error("federation_custom_ca_list", f"item {index}: file not found: {path}")
    whitelist = r.raw("federation_domain_whitelist")
    domains: frozenset[str] | None = None
    if whitelist is not None:
        domains = frozenset(r.str_list("federation_domain_whitelist"))
    r.used.add("federation_domain_whitelist")
    minimum_tls = r.raw("federation_client_minimum_tls_version", "1")
    if isinstance(minimum_tls, int | float) and not isinstance(minimum_tls, bool):
        minimum_tls = str(minimum_tls)
    r.used.add("federation_client_minimum_tls_version")
    if minimum_tls not in TLS_VERSIONS:
        raise r.error("federation_client_minimum_tls_version",
                      f"expected one of {', '.join(TLS_VERSIONS)}, got {minimum_tls!r}")
    refresh = duration_ms(r, "key_refresh_interval", r.raw("key_refresh_interval", "1d"))
    r.used.add("key_refresh_interval")
    if refresh is None or refresh <= 0:
        raise r.error("key_refresh_interval", "must be a positive duration such as 1d")
    restricted = r.raw("outbound_federation_restricted_to")
    r.used.add("outbound_federation_restricted_to")
    restricted_to: tuple[str, ...] = ()
    if restricted is not None:
        from myelin.config.schema import normalise_instance

        restricted_to = tuple(normalise_instance(name) for name in
                              r.str_list("outbound_federation_restricted_to"))
    return FederationConfig(
        verify_certificates=r.bool_("federation_verify_certificates", True),
        custom_ca_list=tuple(cas),
        minimum_tls_version=minimum_tls,
        ip_range_blocklist=_networks(
            r, ("federation_ip_range_blocklist", "federation_ip_range_blacklist",
                "ip_range_blacklist", "ip_range_blocklist"),
            DEFAULT_FEDERATION_IP_RANGE_BLOCKLIST),
        ip_range_whitelist=_networks(
            r, ("federation_ip_range_whitelist", "ip_range_whitelist",
                "federation_ip_range_allowlist", "ip_range_allowlist"), ()),
        trusted_key_servers=_trusted_key_servers(r),
        old_signing_keys=_old_signing_keys(r),
        key_refresh_interval_ms=refresh,
        domain_whitelist=domains,
        outbound_federation_restricted_to=restricted_to,
        tls_certificate_path=_existing_file(r, "tls_certificate_path"),
        tls_private_key_path=_existing_file(r, "tls_private_key_path"),
    )
