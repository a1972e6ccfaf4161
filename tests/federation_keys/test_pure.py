"""The pure parts of reaching and trusting servers, one test per rule:
X-Matrix headers, server discovery's steps, the IP blocklist, the config."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from signedjson.key import generate_signing_key

from myelin.config import load_config_from_dict
from myelin.config.errors import ConfigError
from myelin.federation.auth import parse_x_matrix, request_json, sign_request_header
from myelin.federation.client import IpFilter
from myelin.federation.discovery import (
    DiscoveryError,
    ServerAddress,
    ServerDiscovery,
    cache_period,
    order_srv,
    parse_server_name,
)

# -- X-Matrix ----------------------------------------------------------------------


def test_x_matrix_quoted_and_bare_params() -> None:
    assert parse_x_matrix('X-Matrix origin="a.org",destination=b.org,key="ed25519:1",'
                          'sig="ABC/def+"') == {
        "origin": "a.org", "destination": "b.org", "key": "ed25519:1", "sig": "ABC/def+"}


def test_x_matrix_quoted_strings_may_escape_quotes_and_hold_commas() -> None:
    assert parse_x_matrix(r'X-Matrix origin="a\"b,c" , key=k, sig=s')["origin"] == 'a"b,c'


def test_x_matrix_param_names_are_case_insensitive() -> None:
    assert parse_x_matrix("x-matrix Origin=a,KEY=k,Sig=s") == {"origin": "a", "key": "k",
                                                              "sig": "s"}


@pytest.mark.parametrize("header", ['Bearer abc', 'X-Matrix origin="unterminated',
                                    "X-Matrix origin", "X-Matrix origin=a,origin=b",
                                    'X-Matrix origin="a"b'])
def test_x_matrix_malformed(header: str) -> None:
    with pytest.raises(ValueError):
        parse_x_matrix(header)


def test_signed_header_covers_method_uri_origin_destination_content() -> None:
    from signedjson.key import get_verify_key
    from signedjson.sign import SignatureVerifyException, verify_signed_json

    key = generate_signing_key("1")
    header = sign_request_header("a.org", "b.org", key, "PUT", "/x?y=1", {"k": 1})
    params = parse_x_matrix(header)
    assert params["origin"] == "a.org" and params["destination"] == "b.org"
    assert params["key"] == "ed25519:1"
    signed = request_json("PUT", "/x?y=1", "a.org", "b.org", {"k": 1})
    signed["signatures"] = {"a.org": {"ed25519:1": params["sig"]}}
    verify_key = get_verify_key(key)
    verify_signed_json(signed, "a.org", verify_key)
    signed["content"] = {"k": 2}
    with pytest.raises(SignatureVerifyException):
        verify_signed_json(signed, "a.org", verify_key)


# -- server names and discovery ----------------------------------------------------------

@pytest.mark.parametrize("name,expected", [
    ("example.org", ("example.org", None)), ("example.org:8000", ("example.org", 8000)),
    ("1.2.3.4", ("1.2.3.4", None)), ("1.2.3.4:80", ("1.2.3.4", 80)),
    ("[::1]", ("::1", None)), ("[2001:db8::1]:8448", ("2001:db8::1", 8448))])
def test_parse_server_name(name: str, expected: tuple[str, int | None]) -> None:
    assert parse_server_name(name) == expected


@pytest.mark.parametrize("name", ["", "exa mple.org", "a.org:0", "a.org:99999", "[::1",
                                  "[nope]:80", "a.org:x", ":80"])
def test_parse_server_name_invalid(name: str) -> None:
    with pytest.raises(DiscoveryError):
        parse_server_name(name)


class FakeDns:
    def __init__(self, records: dict[str, list[tuple[int, int, str, int]]]) -> None:
        self.records = records
        self.asked: list[str] = []

    async def srv(self, name: str) -> tuple[list[tuple[int, int, str, int]], float]:
        self.asked.append(name)
        return self.records.get(name, []), 300.0


class FakeWellKnown:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str) -> tuple[int, dict[str, str], bytes]:
        self.asked.append(host)
        answer = self.answers.get(host)
        if isinstance(answer, Exception):
            raise answer
        if answer is None:
            return 404, {}, b""
        if isinstance(answer, tuple):
            return answer  # type: ignore[return-value]
        return 200, {}, orjson.dumps(answer)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _discovery(well_known: dict[str, Any] | None = None,
               srv: dict[str, list[tuple[int, int, str, int]]] | None = None,
               ) -> tuple[ServerDiscovery, FakeWellKnown, FakeDns, Clock]:
    wk, dns, clock = FakeWellKnown(well_known or {}), FakeDns(srv or {}), Clock()
    return ServerDiscovery(wk, dns, clock), wk, dns, clock


async def test_step1_ip_literal_no_lookups() -> None:
    d, wk, dns, _ = _discovery()
    assert await d.resolve("1.2.3.4") == [ServerAddress("1.2.3.4", 8448, "1.2.3.4", "1.2.3.4")]
    assert await d.resolve("[::1]:8000") == [ServerAddress("::1", 8000, "[::1]:8000", "::1")]
    assert wk.asked == [] and dns.asked == []


async def test_step2_explicit_port_no_lookups() -> None:
    d, wk, dns, _ = _discovery()
    assert await d.resolve("example.org:8000") == [
        ServerAddress("example.org", 8000, "example.org:8000", "example.org")]
    assert wk.asked == [] and dns.asked == []


async def test_step3_well_known_to_ip_literal_and_explicit_port() -> None:
    d, _, dns, _ = _discovery({"a.org": {"m.server": "5.6.7.8:9000"},
                               "b.org": {"m.server": "matrix.b.org:443"}})
    assert await d.resolve("a.org") == [ServerAddress("5.6.7.8", 9000, "5.6.7.8:9000",
                                                      "5.6.7.8")]
    assert await d.resolve("b.org") == [ServerAddress("matrix.b.org", 443, "matrix.b.org:443",
                                                      "matrix.b.org")]
    assert dns.asked == []


async def test_step3_well_known_then_srv_of_the_delegated_name() -> None:
    d, _, _dns, _ = _discovery({"a.org": {"m.server": "m.a.org"}},
                              {"_matrix-fed._tcp.m.a.org": [(10, 0, "host.a.org", 1234)]})
    # Host header and certificate: the delegated name, not the SRV target.
    assert await d.resolve("a.org") == [ServerAddress("host.a.org", 1234, "m.a.org", "m.a.org")]


async def test_step3_deprecated_srv_and_default_port_for_delegated_name() -> None:
    d, _, dns, _ = _discovery({"a.org": {"m.server": "m.a.org"}, "c.org": {"m.server": "m.c"}},
                              {"_matrix._tcp.m.a.org": [(10, 0, "old.a.org", 4321)]})
    assert await d.resolve("a.org") == [ServerAddress("old.a.org", 4321, "m.a.org", "m.a.org")]
    assert await d.resolve("c.org") == [ServerAddress("m.c", 8448, "m.c", "m.c")]
    assert dns.asked[:2] == ["_matrix-fed._tcp.m.a.org", "_matrix._tcp.m.a.org"]


async def test_step4_5_6_srv_of_the_server_name_without_delegation() -> None:
    d, _, _dns, _ = _discovery({}, {"_matrix-fed._tcp.a.org": [(10, 0, "fed.a.org", 1111)],
                                   "_matrix._tcp.b.org": [(10, 0, "old.b.org", 2222)]})
    assert await d.resolve("a.org") == [ServerAddress("fed.a.org", 1111, "a.org", "a.org")]
    assert await d.resolve("b.org") == [ServerAddress("old.b.org", 2222, "b.org", "b.org")]
    assert await d.resolve("c.org") == [ServerAddress("c.org", 8448, "c.org", "c.org")]


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"m.server": 3}', b"{}",
                                  b'{"m.server": "bad name!"}'])
async def test_invalid_well_known_falls_through_to_srv(body: bytes) -> None:
    d, _, _, _ = _discovery({"a.org": (200, {}, body)})
    assert await d.resolve("a.org") == [ServerAddress("a.org", 8448, "a.org", "a.org")]


async def test_well_known_cached_per_cache_control() -> None:
    d, wk, _, clock = _discovery({"a.org": (200, {"cache-control": "max-age=600"},
                                            b'{"m.server": "m.a.org:1"}')})
    await d.resolve("a.org")
    clock.now += 599
    await d.resolve("a.org")
    assert wk.asked == ["a.org"]
    clock.now += 2
    await d.resolve("a.org")
    assert wk.asked == ["a.org", "a.org"]


async def test_well_known_default_cache_is_a_day() -> None:
    d, wk, _, clock = _discovery({"a.org": {"m.server": "m.a.org:1"}})
    await d.resolve("a.org")
    clock.now += 23 * 3600
    await d.resolve("a.org")
    assert len(wk.asked) == 1
    clock.now += 2 * 3600
    await d.resolve("a.org")
    assert len(wk.asked) == 2


async def test_well_known_errors_back_off_and_keep_a_recent_answer() -> None:
    d, wk, _, clock = _discovery({"a.org": (200, {"cache-control": "max-age=60"},
                                            b'{"m.server": "m.a.org:1"}')})
    await d.resolve("a.org")
    wk.answers["a.org"] = OSError("down")
    clock.now += 61
    # The host fails, but the answer of a minute ago still stands.
    assert (await d.resolve("a.org"))[0].host == "m.a.org"
    clock.now += 30  # within the first backoff: not asked again
    await d.resolve("a.org")
    assert len(wk.asked) == 2
    clock.now += 31
    await d.resolve("a.org")
    assert len(wk.asked) == 3
    clock.now += 61  # the backoff doubled: 120 s
    await d.resolve("a.org")
    assert len(wk.asked) == 3


def test_cache_period_headers() -> None:
    assert cache_period({"cache-control": "public, max-age=3600"}, 0) == 3600
    assert cache_period({"cache-control": "no-store"}, 0) == 0
    assert cache_period({"expires": "Thu, 01 Jan 1970 01:00:00 GMT"}, 0) == 3600
    assert cache_period({}, 0) is None


def test_srv_order_by_priority_and_dot_means_none() -> None:
    assert order_srv([(20, 0, "b", 2), (10, 0, "a", 1)]) == [("a", 1), ("b", 2)]
    assert order_srv([(0, 0, ".", 0)]) == []


# -- the IP blocklist -----------------------------------------------------------------


def _filter(data: dict[str, Any]) -> IpFilter:
    config = load_config_from_dict({**BASE, **data}).federation
    return IpFilter(config.ip_range_blocklist, config.ip_range_whitelist)


BASE: dict[str, Any] = {"server_name": "a.test", "database": {"name": "sqlite3"},
                        "listeners": [{"port": 8008}]}


def test_default_blocklist_refuses_private_loopback_link_local_cgnat_ula() -> None:
    f = _filter({})
    for address in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.1.1",
                    "100.64.0.1", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1",
                    "0.0.0.0", "::"):
        assert not f.allowed(address), address
    assert f.allowed("8.8.8.8") and f.allowed("2a00:1450::1")


def test_emptied_blocklist_allows_loopback_but_never_this_host() -> None:
    f = _filter({"federation_ip_range_blocklist": []})
    assert f.allowed("127.0.0.1") and f.allowed("::1")
    assert not f.allowed("0.0.0.0") and not f.allowed("::")


def test_old_name_and_whitelist() -> None:
    f = _filter({"federation_ip_range_blacklist": ["8.8.8.0/24"],
                 "federation_ip_range_whitelist": ["8.8.8.8"]})
    assert f.allowed("127.0.0.1") and f.allowed("8.8.8.8") and not f.allowed("8.8.8.9")


# -- the config -------------------------------------------------------------------------


def test_federation_defaults() -> None:
    config = load_config_from_dict(BASE).federation
    assert config.verify_certificates is True
    assert [k.server_name for k in config.trusted_key_servers] == ["matrix.org"]
    assert config.domain_whitelist is None and config.key_refresh_interval_ms == 86_400_000


def test_trusted_key_servers_empty_and_listed() -> None:
    assert load_config_from_dict({**BASE, "trusted_key_servers": []}
                                 ).federation.trusted_key_servers == ()
    config = load_config_from_dict({**BASE, "trusted_key_servers": [
        {"server_name": "n.org", "verify_keys": {"ed25519:a": "abc"}}]}).federation
    assert config.trusted_key_servers[0].verify_keys == {"ed25519:a": "abc"}


@pytest.mark.parametrize("data,key", [
    ({"federation_verify_certificates": "yes"}, "federation_verify_certificates"),
    ({"federation_ip_range_blocklist": ["not an ip"]}, "federation_ip_range_blocklist"),
    ({"federation_ip_range_blacklist": "10.0.0.0/8"}, "federation_ip_range_blacklist"),
    ({"federation_custom_ca_list": ["/nonexistent/ca.pem"]}, "federation_custom_ca_list"),
    ({"trusted_key_servers": [{"verify_keys": {}}]}, "trusted_key_servers[0].server_name"),
    ({"trusted_key_servers": [{"server_name": "x", "verify_keys": {"rsa:1": "k"}}]},
     "trusted_key_servers[0].verify_keys"),
    ({"old_signing_keys": {"ed25519:o": {"key": "k"}}}, "old_signing_keys.ed25519:o.expired_ts"),
    ({"key_refresh_interval": "soon"}, "key_refresh_interval"),
    ({"federation_client_minimum_tls_version": "0.9"}, "federation_client_minimum_tls_version"),
    ({"listeners": [{"port": 8448, "tls": True}]}, "tls_certificate_path"),
])
def test_bad_values_name_the_file_and_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config_from_dict({**BASE, **data}, {k: "homeserver.yaml" for k in data})
    assert key in str(e.value) and "homeserver.yaml" in str(e.value)


def test_outbound_federation_restricted_to_must_be_reachable() -> None:
    worker = {**BASE, "worker_app": "synapse.app.generic_worker", "worker_name": "w1",
              "outbound_federation_restricted_to": ["proxy1"],
              "database": {"name": "psycopg2", "args": {"database": "hs", "host": "db"}},
              "redis": {"enabled": True},
              "instance_map": {"main": {"host": "127.0.0.1", "port": 9000}}}
    with pytest.raises(ConfigError) as e:
        load_config_from_dict(worker, {"outbound_federation_restricted_to": "w.yaml"},
                              check_fleet=True)
    assert "outbound_federation_restricted_to" in str(e.value) and "w.yaml" in str(e.value)
    assert "instance_map.proxy1" in str(e.value)
    parsed = load_config_from_dict({**BASE, "outbound_federation_restricted_to": ["main"]})
    assert parsed.federation.outbound_federation_restricted_to == ("master",)
