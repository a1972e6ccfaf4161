"""Server discovery: where to connect for a server name, and what to call it there.

The spec's order ("Resolving server names", server-server API):

1. an IP literal: that address, port 8448 unless given;
2. a hostname with an explicit port: that host and port;
3. ``https://<hostname>/.well-known/matrix/server`` naming a delegated
   ``m.server``, which is itself resolved as an IP literal, with its explicit
   port, or by SRV (``_matrix-fed._tcp`` then the deprecated ``_matrix._tcp``)
   and finally port 8448;
4. without delegation: SRV ``_matrix-fed._tcp.<hostname>``, then ``_matrix._tcp``;
5. ``<hostname>:8448``.

The Host header and the certificate's name (TLS SNI) are the server name, or
the delegated name once delegation happened, never an SRV target.
``.well-known`` answers are cached as their ``Cache-Control``/``Expires`` say
(a day without them, as the spec recommends; at most two days); failures are cached with a backoff
so an unreachable host is not asked on every request.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import orjson

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8448
WELL_KNOWN_DEFAULT_CACHE_S = 24 * 3600.0
WELL_KNOWN_MAX_CACHE_S = 48 * 3600.0
WELL_KNOWN_MIN_CACHE_S = 60.0
# A failed .well-known fetch is retried after this, doubling up to the cap.
WELL_KNOWN_ERROR_BACKOFF_S = 60.0
WELL_KNOWN_ERROR_BACKOFF_MAX_S = 3600.0
# A good answer is still used this long past its expiry while the host fails.
WELL_KNOWN_GRACE_S = 600.0
WELL_KNOWN_MAX_SIZE = 50 * 1024
SRV_MIN_CACHE_S = 30.0
SRV_MAX_CACHE_S = 3600.0

_HOSTNAME = re.compile(r"^[A-Za-z0-9\-.]{1,255}$")


class DiscoveryError(Exception):
    """The server name is malformed or names nothing we can connect to."""


@dataclass(frozen=True)
class ServerAddress:
    """One place to try for a destination."""

    host: str  # a hostname or an IP address (no brackets) to connect to
    port: int
    host_header: str  # the Host header to send
    tls_name: str  # the name the certificate must be valid for (SNI unless an IP)

    @property
    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host


def parse_server_name(name: str) -> tuple[str, int | None]:
    """``host`` (IPv6 without brackets) and the explicit port, if any."""
    if name.startswith("["):
        end = name.find("]")
        if end < 0:
            raise DiscoveryError(f"invalid server name {name!r}")
        host, rest = name[1:end], name[end + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise DiscoveryError(f"invalid IPv6 literal in {name!r}") from None
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise DiscoveryError(f"invalid server name {name!r}")
        return host, _port(name, rest[1:])
    host, sep, port = name.rpartition(":")
    if not sep:
        host, port = name, ""
    if not host or not _HOSTNAME.match(host):
        raise DiscoveryError(f"invalid server name {name!r}")
    return host, (_port(name, port) if sep else None)


def _port(name: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise DiscoveryError(f"invalid port in server name {name!r}")
    return int(text)


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class SrvResolver(Protocol):
    async def srv(self, name: str) -> tuple[list[tuple[int, int, str, int]], float]:
        """``(priority, weight, target, port)`` records and their TTL; none: ``[]``."""


class DnsSrvResolver:
    """SRV lookups with dnspython's asyncio resolver (the system's name
    servers, or ``nameservers`` as ``(address, port)``)."""

    def __init__(self, nameservers: list[tuple[str, int]] | None = None) -> None:
        self._resolver: Any = None
        self._nameservers = nameservers

    async def srv(self, name: str) -> tuple[list[tuple[int, int, str, int]], float]:
        import dns.asyncresolver
        import dns.exception
        import dns.resolver

        if self._resolver is None:
            try:
                if self._nameservers:
                    resolver = dns.asyncresolver.Resolver(configure=False)
                    resolver.nameservers = [host for host, _ in self._nameservers]
                    resolver.port = self._nameservers[0][1]
                else:
                    resolver = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                return [], SRV_MIN_CACHE_S
            self._resolver = resolver
        try:
            answer = await self._resolver.resolve(name, "SRV", lifetime=10.0)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return [], SRV_MAX_CACHE_S
        except (dns.exception.DNSException, OSError) as e:
            logger.info("SRV lookup for %s failed: %s", name, e)
            return [], SRV_MIN_CACHE_S
        records = [(int(r.priority), int(r.weight), r.target.to_text(omit_final_dot=True),
                    int(r.port)) for r in answer]
        ttl = float(answer.rrset.ttl) if answer.rrset is not None else SRV_MIN_CACHE_S
        return records, ttl


def order_srv(records: list[tuple[int, int, str, int]]) -> list[tuple[str, int]]:
    """RFC 2782: ascending priority, weighted random order within one."""
    # A single "." target means the service is decidedly not available.
    if len(records) == 1 and records[0][2] in ("", "."):
        return []
    out: list[tuple[str, int]] = []
    for priority in sorted({r[0] for r in records}):
        group = [r for r in records if r[0] == priority]
        while group:
            total = sum(r[1] for r in group)
            pick = random.uniform(0, total) if total else 0
            chosen = group[0]
            running = 0
            for record in group:
                running += record[1]
                if running >= pick:
                    chosen = record
                    break
            group.remove(chosen)
            out.append((chosen[2], chosen[3]))
    return out


# GET https://<host>/.well-known/matrix/server → (status, headers, body); raises on failure.
WellKnownFetch = Callable[[str], Awaitable[tuple[int, dict[str, str], bytes]]]


@dataclass
class _WellKnownEntry:
    delegated: str | None
    expires: float
    good_until: float  # a successful answer's expiry plus grace
    failures: int = 0


def cache_period(headers: dict[str, str], now: float) -> float | None:
    """Seconds from Cache-Control max-age / no-store, or Expires; None: not said."""
    control = headers.get("cache-control", "")
    directives = {part.strip().split("=", 1)[0].lower():
                  (part.split("=", 1)[1].strip() if "=" in part else "")
                  for part in control.split(",") if part.strip()}
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    if "max-age" in directives:
        try:
            return max(0.0, float(int(directives["max-age"].strip('"'))))
        except ValueError:
            pass
    expires = headers.get("expires")
    if expires:
        try:
            return max(0.0, parsedate_to_datetime(expires).timestamp() - now)
        except (TypeError, ValueError, OverflowError):
            return 0.0
    return None


class ServerDiscovery:
    """Resolves server names, caching .well-known and SRV answers."""

    def __init__(self, fetch_well_known: WellKnownFetch, resolver: SrvResolver | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._fetch = fetch_well_known
        self._resolver: SrvResolver = resolver or DnsSrvResolver()
        self._clock = clock
        self._well_known: dict[str, _WellKnownEntry] = {}
        self._srv: dict[str, tuple[list[tuple[int, int, str, int]], float]] = {}
        self.well_known_fetches = 0

    async def resolve(self, server_name: str) -> list[ServerAddress]:
        """Where to try, in order, for ``server_name``."""
        host, port = parse_server_name(server_name)
        if is_ip_literal(host):
            return [ServerAddress(host, port or DEFAULT_PORT, server_name, host)]
        if port is not None:
            return [ServerAddress(host, port, server_name, host)]
        delegated = await self.delegated_name(host)
        if delegated is not None:
            try:
                d_host, d_port = parse_server_name(delegated)
            except DiscoveryError:
                logger.info("ignoring invalid m.server %r from %s", delegated, host)
            else:
                if is_ip_literal(d_host):
                    return [ServerAddress(d_host, d_port or DEFAULT_PORT, delegated, d_host)]
                if d_port is not None:
                    return [ServerAddress(d_host, d_port, delegated, d_host)]
                return await self._by_srv(d_host)
        return await self._by_srv(host)

    async def _by_srv(self, host: str) -> list[ServerAddress]:
        for service in ("_matrix-fed._tcp", "_matrix._tcp"):
            targets = order_srv(await self._lookup_srv(f"{service}.{host}"))
            if targets:
                return [ServerAddress(target, port, host, host) for target, port in targets]
        return [ServerAddress(host, DEFAULT_PORT, host, host)]

    async def _lookup_srv(self, name: str) -> list[tuple[int, int, str, int]]:
        now = self._clock()
        cached = self._srv.get(name)
        if cached is not None and cached[1] > now:
            return cached[0]
        records, ttl = await self._resolver.srv(name)
        ttl = min(max(ttl, SRV_MIN_CACHE_S), SRV_MAX_CACHE_S)
        self._srv[name] = (records, now + ttl)
        return records

    async def delegated_name(self, host: str) -> str | None:
        """The ``m.server`` of ``host``'s .well-known, from cache when fresh."""
        now = self._clock()
        entry = self._well_known.get(host)
        if entry is not None and entry.expires > now:
            return entry.delegated
        self.well_known_fetches += 1
        try:
            status, headers, body = await self._fetch(host)
        except Exception as e:  # any failure to reach the host: try again later
            return self._failed(host, entry, now, f"{type(e).__name__}: {e}")
        if status >= 500 or status == 429:
            return self._failed(host, entry, now, f"HTTP {status}")
        period = cache_period(headers, now)
        if status != 200:
            # A definite "no delegation here" (404 and the like).
            return self._store(host, None, now, period)
        delegated = _parse_well_known(body)
        if delegated is None:
            logger.info("invalid .well-known/matrix/server from %s", host)
        return self._store(host, delegated, now, period)

    def _store(self, host: str, delegated: str | None, now: float,
               period: float | None) -> str | None:
        seconds = WELL_KNOWN_DEFAULT_CACHE_S if period is None else period
        seconds = min(max(seconds, WELL_KNOWN_MIN_CACHE_S), WELL_KNOWN_MAX_CACHE_S)
        self._well_known[host] = _WellKnownEntry(delegated, now + seconds,
                                                 now + seconds + WELL_KNOWN_GRACE_S)
        return delegated

    def _failed(self, host: str, previous: _WellKnownEntry | None, now: float,
                reason: str) -> str | None:
        failures = (previous.failures if previous is not None else 0) + 1
        backoff = min(WELL_KNOWN_ERROR_BACKOFF_S * 2 ** (failures - 1),
                      WELL_KNOWN_ERROR_BACKOFF_MAX_S)
        logger.info("fetching .well-known/matrix/server from %s failed (%s); "
                    "retrying in %ds", host, reason, backoff)
        # A recent good answer outlives a passing failure of the host.
        if previous is not None and previous.good_until > now:
            delegated, good_until = previous.delegated, previous.good_until
        else:
            delegated, good_until = None, 0.0
        self._well_known[host] = _WellKnownEntry(delegated, now + backoff, good_until,
                                                 failures)
        return delegated


def _parse_well_known(body: bytes) -> str | None:
    if len(body) > WELL_KNOWN_MAX_SIZE:
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    server = document.get("m.server")
    if not isinstance(server, str) or not server:
        return None
    return server
