"""URL previews: fetch a page without reaching forbidden addresses, and read
its OpenGraph tags.

Every address a URL leads to is checked against ``url_preview_ip_range_blacklist``
(minus the whitelist): an IP literal before connecting, every address a
host name resolves to in the connector's resolver (so no request ever goes
to a blocked address, even through DNS rebinding between check and
connect), and again for each redirect, which is followed by hand. Bodies are
read up to ``max_spider_size``; the HTML is parsed with the standard
library's ``html.parser``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from myelin.config.media import IpNetwork

MAX_REDIRECTS = 5
USER_AGENT = "Myelin (bot; +https://github.com/matrix-org/matrix-spec)"
# The parser stops after this many characters of a page's text.
MAX_TEXT = 500
_DESCRIPTION_FALLBACKS = ("description", "twitter:description")


class PreviewBlocked(Exception):
    """The URL's address is on the blacklist (an IP literal: 403)."""


class PreviewDnsBlocked(Exception):
    """Every address the host resolves to is blacklisted (502, as a DNS failure)."""


class PreviewTooLarge(Exception):
    """The body is larger than ``max_spider_size``."""


class PreviewFailed(Exception):
    """The page could not be fetched (bad URL, connection error, HTTP error)."""


@dataclass(frozen=True)
class Fetched:
    url: str            # after redirects
    status: int
    content_type: str
    body: bytes


class AddressPolicy:
    """Which IP addresses a preview may connect to."""

    def __init__(self, blacklist: Sequence[IpNetwork], whitelist: Sequence[IpNetwork]) -> None:
        self.blacklist = list(blacklist)
        self.whitelist = list(whitelist)

    def allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            # ::ffff:127.0.0.1 is 127.0.0.1.
            mapped = ip.ipv4_mapped
            if any(mapped in net for net in self.whitelist):
                return True
            if any(mapped in net for net in self.blacklist):
                return False
        if any(ip in net for net in self.whitelist):
            return True
        return not any(ip in net for net in self.blacklist)


class _CheckingResolver(AbstractResolver):
    """Resolves like the system, then drops every forbidden address."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        self.inner = aiohttp.ThreadedResolver()
        self.blocked = False

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        allowed = [r for r in results if self.policy.allowed(r["host"])]
        if not allowed:
            self.blocked = True
            raise OSError(f"every address of {host} is blocked for URL previews")
        return allowed

    async def close(self) -> None:
        await self.inner.close()


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


async def fetch(url: str, policy: AddressPolicy, max_size: int,
                accept_language: Sequence[str], *, verify_tls: bool = True) -> Fetched:
    """GET ``url`` (following up to MAX_REDIRECTS redirects), at most ``max_size`` bytes."""
    resolver = _CheckingResolver(policy)
    # force_close: every hop opens its own connection, through the resolver.
    connector = aiohttp.TCPConnector(resolver=resolver, force_close=True, use_dns_cache=False,
                                     ssl=verify_tls)
    headers = {"User-Agent": USER_AGENT, "Accept-Language": ", ".join(accept_language)}
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         trust_env=False) as session:
            for _ in range(MAX_REDIRECTS + 1):
                parts = urlsplit(url)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise PreviewFailed("only http and https URLs can be previewed")
                if _is_ip_literal(parts.hostname) and not policy.allowed(parts.hostname):
                    raise PreviewBlocked()
                try:
                    async with session.get(url, headers=headers, allow_redirects=False) as resp:
                        if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                            url = urljoin(url, resp.headers["Location"])
                            continue
                        if resp.content_length is not None and resp.content_length > max_size:
                            raise PreviewTooLarge()
                        chunks: list[bytes] = []
                        total = 0
                        async for chunk in resp.content.iter_chunked(65536):
                            total += len(chunk)
                            if total > max_size:
                                raise PreviewTooLarge()
                            chunks.append(chunk)
                        return Fetched(str(resp.url), resp.status,
                                       resp.headers.get("Content-Type", ""), b"".join(chunks))
                except (aiohttp.ClientError, OSError, TimeoutError) as e:
                    if resolver.blocked:
                        raise PreviewDnsBlocked() from None
                    raise PreviewFailed(str(e) or type(e).__name__) from None
            raise PreviewFailed("too many redirects")
    finally:
        await connector.close()


class _OpenGraphParser(HTMLParser):
    """Collects og:* meta tags, and the title and description to fall back on."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.og: dict[str, str] = {}
        self.meta: dict[str, str] = {}
        self.title: str | None = None
        self.first_image: str | None = None
        self._in_title = False
        self._title_parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): v for k, v in attrs if v is not None}
        if tag == "meta":
            content = values.get("content")
            if content is None:
                return
            prop = values.get("property") or values.get("name") or ""
            prop = prop.strip().lower()
            if prop.startswith("og:"):
                self.og.setdefault(prop, content)
            elif prop:
                self.meta.setdefault(prop, content)
        elif tag == "title" and self.title is None:
            self._in_title = True
        elif tag == "img" and self.first_image is None and values.get("src"):
            self.first_image = values["src"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            self.title = " ".join("".join(self._title_parts).split())[:MAX_TEXT]

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self._title_parts.append(data)


def _charset(content_type: str) -> str:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            return value.strip("\"' ")
    return "utf-8"


def parse_html(body: bytes, content_type: str, base_url: str) -> dict[str, Any]:
    """The OpenGraph data of a page: its og: tags, with the title and the
    description from <title> and <meta name=description> when it has none,
    and og:image made absolute."""
    try:
        text = body.decode(_charset(content_type), errors="replace")
    except LookupError:
        text = body.decode("utf-8", errors="replace")
    parser = _OpenGraphParser()
    try:
        parser.feed(text)
        parser.close()
    except Exception:  # a broken page previews as what was read of it
        pass
    og: dict[str, Any] = dict(parser.og)
    if "og:title" not in og and parser.title:
        og["og:title"] = parser.title
    if "og:description" not in og:
        for name in _DESCRIPTION_FALLBACKS:
            if name in parser.meta:
                og["og:description"] = parser.meta[name][:MAX_TEXT]
                break
    if "og:image" not in og and parser.first_image:
        og["og:image"] = parser.first_image
    if "og:image" in og:
        og["og:image"] = urljoin(base_url, og["og:image"])
    for key in ("og:image:width", "og:image:height"):
        if key in og:
            try:
                og[key] = int(og[key])
            except ValueError:
                del og[key]
    return og
