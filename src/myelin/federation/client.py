"""Outbound federation requests: ``hs.federation_client``.

One aiohttp session for the process, so connections to a destination are
pooled and reused. Every request is

- routed by server discovery (``federation/discovery.py``): the Host header
  and the certificate name are the server (or delegated) name;
- refused before connecting when an address is in
  ``federation_ip_range_blocklist`` (IP literals here, hostnames in the
  session's resolver, which sees every address DNS gives);
- verified against the system trust store plus ``federation_custom_ca_list``
  unless ``federation_verify_certificates`` is off;
- signed with ``X-Matrix`` (origin, destination, key, sig) by this server's key.

A non-2xx answer raises :class:`FederationError`; no answer at all (name,
TCP, TLS, timeout, blocklist) raises :class:`FederationUnreachable`. With
``outbound_federation_restricted_to``, a process not in that list hands its
request to one that is, over HTTP replication.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import socket
import ssl
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

import myelin
from myelin.app.roles import shard_index
from myelin.config.federation import ALWAYS_BLOCKED, FederationConfig, IpNetwork
from myelin.federation.auth import sign_request_header
from myelin.federation.discovery import (
    DiscoveryError,
    ServerAddress,
    ServerDiscovery,
    is_ip_literal,
)
from myelin.replication.http import ReplicationEndpoint

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)

USER_AGENT = f"Myelin/{myelin.__version__}"
MAX_JSON_RESPONSE = 100 * 1024 * 1024
WELL_KNOWN_TIMEOUT_S = 30.0
WELL_KNOWN_MAX_REDIRECTS = 10
_ALWAYS_BLOCKED = tuple(ipaddress.ip_network(n) for n in ALWAYS_BLOCKED)
_TLS_VERSIONS = {"1": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1,
                 "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class FederationError(Exception):
    """The remote server answered with a non-2xx status."""

    def __init__(self, destination: str, code: int, body: Any) -> None:
        self.destination = destination
        self.code = code
        self.body = body
        self.errcode: str | None = None
        self.error: str | None = None
        if isinstance(body, dict):
            errcode, error = body.get("errcode"), body.get("error")
            self.errcode = errcode if isinstance(errcode, str) else None
            self.error = error if isinstance(error, str) else None
        super().__init__(f"{destination} answered {code}: {self.errcode or ''} "
                         f"{self.error or ''}".rstrip())


class ResponseTooLarge(FederationError):
    """The answer was bigger than the caller accepts (``code`` 502, ``M_TOO_LARGE``)."""

    def __init__(self, destination: str, limit: int) -> None:
        self.limit = limit
        super().__init__(destination, 502, {"errcode": "M_TOO_LARGE",
                                            "error": f"response over {limit} bytes"})


class FederationUnreachable(Exception):
    """No answer: discovery, TCP, TLS or timeout failure, or a blocked address."""

    def __init__(self, destination: str, reason: str) -> None:
        self.destination = destination
        self.reason = reason
        super().__init__(f"cannot reach {destination}: {reason}")


class FederationDenied(FederationUnreachable):
    """The destination is not in ``federation_domain_whitelist``."""


class IpFilter:
    """Which addresses outbound federation may connect to."""

    def __init__(self, blocklist: Iterable[IpNetwork], whitelist: Iterable[IpNetwork]) -> None:
        self.blocklist = tuple(blocklist)
        self.whitelist = tuple(whitelist)

    def allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
        # An IPv4 address in IPv6 clothing is judged as the IPv4 address too.
        if isinstance(ip, ipaddress.IPv6Address):
            for embedded in (ip.ipv4_mapped, ip.sixtofour):
                if embedded is not None:
                    candidates.append(embedded)
        if any(c in net for c in candidates for net in _ALWAYS_BLOCKED if
               c.version == net.version):
            return False
        if any(c in net for c in candidates for net in self.whitelist
               if c.version == net.version):
            return True
        return not any(c in net for c in candidates for net in self.blocklist
                       if c.version == net.version)


class BlocklistResolver(AbstractResolver):
    """DNS for the federation session: drops every blocked address."""

    def __init__(self, ip_filter: IpFilter, inner: AbstractResolver | None = None) -> None:
        self._filter = ip_filter
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if self._filter.allowed(r["host"])]
        if not allowed:
            raise OSError(f"{host} resolves only to blocked addresses")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def client_ssl_context(config: FederationConfig) -> ssl.SSLContext | bool:
    """The TLS settings of outbound federation (False: no verification)."""
    if not config.verify_certificates:
        return False
    context = ssl.create_default_context()
    for path in config.custom_ca_list:
        context.load_verify_locations(cafile=path)
    context.minimum_version = _TLS_VERSIONS[config.minimum_tls_version]
    return context


def encode_query(args: Mapping[str, str | list[str]] | None) -> str:
    if not args:
        return ""
    return urlencode(args, doseq=True, quote_via=quote)


class ForwardFederationRequest(ReplicationEndpoint):
    """An outbound request handed by a process outside
    ``outbound_federation_restricted_to`` to one inside it."""

    NAME = "federation_outbound_request"
    ANY_INSTANCE = True

    @staticmethod
    async def handle(hs: HomeServer, payload: dict[str, Any]) -> Any:
        client = hs.federation_client
        raw = bool(payload.get("raw"))
        try:
            result = await client.request_here(
                payload["method"], payload["destination"], payload["path"],
                args=payload.get("args"), body=payload.get("body"),
                timeout_s=float(payload.get("timeout", 60.0)),
                sign=bool(payload.get("sign", True)), raw=raw,
                max_size=int(payload.get("max_size", MAX_JSON_RESPONSE)))
        except ResponseTooLarge as e:
            return {"too_large": e.limit}
        except FederationError as e:
            return {"error": {"code": e.code, "body": e.body}}
        except FederationUnreachable as e:
            return {"unreachable": e.reason, "denied": isinstance(e, FederationDenied)}
        if raw:
            content, headers = result
            return {"content": base64.b64encode(content).decode(), "headers": headers}
        return {"result": result}


class FederationClient:
    """Signed JSON (and file) requests to other homeservers."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.config = hs.config.federation
        self.ip_filter = IpFilter(self.config.ip_range_blocklist, self.config.ip_range_whitelist)
        self._session: aiohttp.ClientSession | None = None
        self._in_flight: set[asyncio.Future[Any]] = set()
        self._closing = False
        self.discovery = ServerDiscovery(self._fetch_well_known)
        self.requests_sent = 0
        self.forwarded = 0
        # Where .well-known is fetched: 443, the HTTPS default (tests move it).
        self.well_known_port: int | None = None

    # -- the interface -------------------------------------------------------
    async def get_json(self, destination: str, path: str,
                       args: dict[str, str | list[str]] | None = None, *,
                       timeout: float = 60.0) -> Any:  # noqa: ASYNC109
        return await self._json("GET", destination, path, args, None, timeout)

    async def put_json(self, destination: str, path: str, body: Any, *,
                       args: dict[str, str | list[str]] | None = None,
                       timeout: float = 60.0) -> Any:  # noqa: ASYNC109
        return await self._json("PUT", destination, path, args, body, timeout)

    async def post_json(self, destination: str, path: str, body: Any, *,
                        args: dict[str, str | list[str]] | None = None,
                        timeout: float = 60.0) -> Any:  # noqa: ASYNC109
        return await self._json("POST", destination, path, args, body, timeout)

    async def get_file(
            self, destination: str, path: str, args: dict[str, str | list[str]] | None = None,
            *, max_size: int, timeout: float = 60.0,  # noqa: ASYNC109
    ) -> tuple[bytes, dict[str, str]]:
        """The raw body and headers (lower-case names) of a GET."""
        result: tuple[bytes, dict[str, str]] = await self.request(
            "GET", destination, path, args=args, body=None, timeout_s=timeout,
            max_size=max_size, raw=True)
        return result

    # -- internals -------------------------------------------------------------
    async def _json(self, method: str, destination: str, path: str,
                    args: dict[str, str | list[str]] | None, body: Any, timeout_s: float) -> Any:
        return await self.request(method, destination, path, args=args, body=body,
                                  timeout_s=timeout_s)

    async def request(self, method: str, destination: str, path: str, *,
                      args: Mapping[str, str | list[str]] | None, body: Any,
                      timeout_s: float, sign: bool = True, raw: bool = False,
                      max_size: int = MAX_JSON_RESPONSE) -> Any:
        """The decoded JSON answer (``raw``: the bytes and headers); from a
        process allowed outbound federation, else forwarded to one."""
        restricted = self.config.outbound_federation_restricted_to
        if restricted and self.hs.config.instance_name not in restricted:
            return await self._forward(restricted, {
                "method": method, "destination": destination, "path": path,
                "args": dict(args) if args else None, "body": body, "timeout": timeout_s,
                "sign": sign, "raw": raw, "max_size": max_size})
        return await self.request_here(method, destination, path, args=args, body=body,
                                       timeout_s=timeout_s, sign=sign, raw=raw,
                                       max_size=max_size)

    async def request_here(self, method: str, destination: str, path: str, *,
                           args: Mapping[str, str | list[str]] | None, body: Any,
                           timeout_s: float, sign: bool = True, raw: bool = False,
                           max_size: int = MAX_JSON_RESPONSE) -> Any:
        """The request from this process, never forwarded.

        It runs as a task of its own so :meth:`close` can end it: closing an
        aiohttp session does not abort a connection still being made."""
        if self._closing:
            raise FederationUnreachable(destination, "this server is shutting down")
        call = asyncio.ensure_future(self._request(
            method, destination, path, args=args, body=body, timeout_s=timeout_s,
            max_size=max_size, sign=sign, raw=raw))
        self._in_flight.add(call)
        try:
            return await call
        except asyncio.CancelledError:
            # Our caller is cancelled too only when it was the one cancelled.
            if call.cancelled() and self._closing and not _current_task_cancelling():
                raise FederationUnreachable(destination,
                                            "this server is shutting down") from None
            raise
        finally:
            self._in_flight.discard(call)

    async def _forward(self, instances: tuple[str, ...], payload: dict[str, Any]) -> Any:
        from myelin.replication.http import WriterUnavailable

        destination = payload["destination"]
        # Spread over the allowed instances; stable per destination so its
        # connections stay pooled in one place.
        instance = instances[shard_index(destination, len(instances))]
        self.forwarded += 1
        try:
            answer = await self.hs.replication.call_on(instance, ForwardFederationRequest,
                                                       payload)
        except WriterUnavailable as e:
            raise FederationUnreachable(destination, f"via {instance}: {e}") from None
        if "too_large" in answer:
            raise ResponseTooLarge(destination, int(answer["too_large"]))
        if "error" in answer:
            raise FederationError(destination, int(answer["error"]["code"]),
                                  answer["error"]["body"])
        if "unreachable" in answer:
            error = FederationDenied if answer.get("denied") else FederationUnreachable
            raise error(destination, str(answer["unreachable"]))
        if payload["raw"]:
            return base64.b64decode(answer["content"]), dict(answer["headers"])
        return answer.get("result")

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=BlocklistResolver(self.ip_filter),
                ssl=client_ssl_context(self.config),
                limit=200, limit_per_host=16, keepalive_timeout=60,
                ttl_dns_cache=60)
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": USER_AGENT},
                auto_decompress=True)
        return self._session

    async def _request(self, method: str, destination: str, path: str, *,
                       args: Mapping[str, str | list[str]] | None, body: Any,
                       timeout_s: float, max_size: int, raw: bool = False,
                       sign: bool = True) -> Any:
        if not self.config.allows_domain(destination):
            raise FederationDenied(destination, "not in federation_domain_whitelist")
        query = encode_query(args)
        uri = f"{path}?{query}" if query else path
        data = orjson.dumps(body) if body is not None else None
        headers = {}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if sign:
            headers["Authorization"] = sign_request_header(
                self.hs.server_name, destination, self.hs.signing_key, method, uri, body)
        try:
            addresses = await self.discovery.resolve(destination)
        except DiscoveryError as e:
            raise FederationUnreachable(destination, str(e)) from None
        last_error = "no address"
        for address in addresses:
            if is_ip_literal(address.host) and not self.ip_filter.allowed(address.host):
                last_error = f"{address.host} is in federation_ip_range_blocklist"
                continue
            try:
                return await self._send(method, destination, address, uri, data, headers,
                                        timeout_s, max_size, raw)
            except (aiohttp.ClientError, OSError, TimeoutError, ssl.SSLError) as e:
                last_error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                logger.info("%s %s%s via %s:%d failed: %s", method, destination, path,
                            address.host, address.port, last_error)
        raise FederationUnreachable(destination, last_error)

    async def _send(self, method: str, destination: str, address: ServerAddress, uri: str,
                    data: bytes | None, headers: dict[str, str], timeout_s: float,
                    max_size: int, raw: bool) -> Any:
        url = URL(f"https://{address.url_host}:{address.port}{uri}", encoded=True)
        extra: dict[str, Any] = {}
        if address.tls_name != address.host:
            extra["server_hostname"] = address.tls_name
        self.requests_sent += 1
        async with self.session().request(
                method, url, data=data, headers={**headers, "Host": address.host_header},
                timeout=aiohttp.ClientTimeout(total=timeout_s), allow_redirects=False,
                **extra) as response:
            content = await _read_limited(response, max_size, destination)
            if not 200 <= response.status < 300:
                try:
                    decoded: Any = orjson.loads(content) if content else None
                except orjson.JSONDecodeError:
                    decoded = content.decode("utf-8", "replace")[:1000]
                raise FederationError(destination, response.status, decoded)
            if raw:
                return content, {k.lower(): v for k, v in response.headers.items()}
            try:
                return orjson.loads(content)
            except orjson.JSONDecodeError:
                raise FederationError(destination, 502, {
                    "errcode": "M_NOT_JSON", "error": "response is not JSON"}) from None

    async def _fetch_well_known(self, host: str) -> tuple[int, dict[str, str], bytes]:
        """GET https://host/.well-known/matrix/server, following redirects.

        Redirects are followed here, not by aiohttp, so each hop is checked:
        HTTPS only, and an IP literal target must pass the blocklist (the
        resolver never sees those)."""
        url = URL.build(scheme="https", host=host, port=self.well_known_port,
                        path="/.well-known/matrix/server")
        for _ in range(WELL_KNOWN_MAX_REDIRECTS + 1):
            if url.scheme != "https" or not url.host:
                raise DiscoveryError(f"refusing to follow a redirect to {url}")
            if is_ip_literal(url.host) and not self.ip_filter.allowed(url.host):
                raise DiscoveryError(f"{url.host} is in federation_ip_range_blocklist")
            async with self.session().get(
                    url, timeout=aiohttp.ClientTimeout(total=WELL_KNOWN_TIMEOUT_S),
                    allow_redirects=False) as response:
                location = response.headers.get("Location")
                if response.status in (301, 302, 303, 307, 308) and location:
                    url = url.join(URL(location))
                    continue
                content = await _read_limited(response, 50 * 1024, host)
                return (response.status,
                        {k.lower(): v for k, v in response.headers.items()}, content)
        raise DiscoveryError(f"too many redirects fetching .well-known of {host}")

    async def close(self) -> None:
        """End every request in flight (their callers get FederationUnreachable)
        and the connections; no new request is made after this."""
        self._closing = True
        for call in list(self._in_flight):
            call.cancel()
        if self._in_flight:
            await asyncio.wait(list(self._in_flight))
        if self._session is not None:
            await self._session.close()
            self._session = None


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _read_limited(response: aiohttp.ClientResponse, limit: int,
                        destination: str) -> bytes:
    length = response.content_length
    if length is not None and length > limit:
        raise ResponseTooLarge(destination, limit)
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.content.iter_chunked(65536):
        total += len(chunk)
        if total > limit:
            raise ResponseTooLarge(destination, limit)
        chunks.append(chunk)
    return b"".join(chunks)


__all__ = ["FederationClient", "FederationDenied", "FederationError", "FederationUnreachable",
           "ResponseTooLarge"]
