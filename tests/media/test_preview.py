"""URL preview pieces without the network: OpenGraph parsing and the address policy."""

from __future__ import annotations

import ipaddress

from myelin.config.media import ALWAYS_BLOCKED, DEFAULT_IP_RANGE_BLACKLIST
from myelin.media.preview import AddressPolicy, parse_html

BLACKLIST = [ipaddress.ip_network(n) for n in DEFAULT_IP_RANGE_BLACKLIST + ALWAYS_BLOCKED]


def test_og_tags_are_read() -> None:
    og = parse_html(b'<html><head><meta property="og:title" content="T">'
                    b'<meta property="og:image" content="img/a.png">'
                    b'<meta property="og:image:width" content="12">'
                    b'<meta name="og:site_name" content="S"></head></html>',
                    "text/html", "https://example.org/dir/page")
    assert og == {"og:title": "T", "og:image": "https://example.org/dir/img/a.png",
                  "og:image:width": 12, "og:site_name": "S"}


def test_title_and_description_fallbacks() -> None:
    og = parse_html(b"<title>  My\n page </title><meta name=description content='About it'>"
                    b"<img src='/pic.jpg'>", "text/html", "http://example.org/")
    assert og == {"og:title": "My page", "og:description": "About it",
                  "og:image": "http://example.org/pic.jpg"}


def test_the_first_og_value_wins_and_entities_are_decoded() -> None:
    og = parse_html(b'<meta property="og:title" content="A &amp; B">'
                    b'<meta property="og:title" content="second">', "text/html", "http://x/")
    assert og["og:title"] == "A & B"


def test_charset_from_content_type() -> None:
    og = parse_html('<meta property="og:title" content="café">'.encode("latin-1"),
                    "text/html; charset=ISO-8859-1", "http://x/")
    assert og["og:title"] == "café"


def test_broken_html_gives_what_was_read() -> None:
    assert parse_html(b'<meta property="og:title" content="ok"><div <<', "text/html",
                      "http://x/")["og:title"] == "ok"


def test_private_ranges_are_blocked_by_default() -> None:
    policy = AddressPolicy(BLACKLIST, [])
    for address in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.5.5", "169.254.1.1",
                    "::1", "fe80::1", "fd00::1", "0.0.0.0", "::", "::ffff:127.0.0.1",
                    "100.64.0.1"):
        assert not policy.allowed(address), address
    for address in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"):
        assert policy.allowed(address), address


def test_the_whitelist_wins() -> None:
    policy = AddressPolicy(BLACKLIST, [ipaddress.ip_network("127.0.0.1/32")])
    assert policy.allowed("127.0.0.1")
    assert policy.allowed("::ffff:127.0.0.1")
    assert not policy.allowed("127.0.0.2")


def test_garbage_is_not_an_allowed_address() -> None:
    assert not AddressPolicy([], []).allowed("not-an-ip")
