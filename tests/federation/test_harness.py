"""The federation test harness is what the judges run: checked on its own.

Each server is reachable as ``localhost:<tls port>`` over TLS with a
certificate only the session's CA vouches for; clients that do not trust the
CA are refused; Synapse (a real one) reaches Myelin through it, and the fleet
serves federation from its generic workers with two federation senders.
"""

from __future__ import annotations

import re
import ssl
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.support.federation import FLEET_SENDERS, FleetPeer, MyelinPeer, local_ca
from tests.support.synapse_peer import SynapsePeer


def key_of(peer: Any) -> dict[str, Any]:
    status, body = peer.https("GET", "/_matrix/key/v2/server")
    assert status == 200, body
    return dict(body)


def test_each_myelin_serves_its_key_over_tls_under_its_port_name(
        myelin_pair: tuple[MyelinPeer, MyelinPeer]) -> None:
    names = set()
    for peer in myelin_pair:
        assert peer.server_name == f"localhost:{peer.tls_port}"
        key = key_of(peer)
        assert key["server_name"] == peer.server_name
        assert key["verify_keys"] and peer.server_name in key["signatures"]
        names.add(peer.server_name)
    assert len(names) == 2


def test_tls_is_checked_against_the_test_ca(myelin_pair: tuple[MyelinPeer, MyelinPeer]) -> None:
    peer = myelin_pair[0]
    url = f"https://localhost:{peer.tls_port}/_matrix/key/v2/server"
    # Default trust store: the test CA is not in it.
    with pytest.raises(urllib.error.URLError) as failure:
        urllib.request.urlopen(url, timeout=10, context=ssl.create_default_context())
    assert isinstance(failure.value.reason, ssl.SSLCertVerificationError)
    # The CA vouches for localhost and 127.0.0.1, and nothing else.
    context = local_ca().ssl_context()
    with urllib.request.urlopen(url, timeout=10, context=context) as r:
        assert r.status == 200
    other = f"https://127.0.0.1:{peer.tls_port}/_matrix/key/v2/server"
    with urllib.request.urlopen(other, timeout=10, context=context) as r:
        assert r.status == 200


def test_configs_let_servers_federate_on_loopback(
        myelin_pair: tuple[MyelinPeer, MyelinPeer]) -> None:
    import yaml

    for peer in myelin_pair:
        with open(peer.config_path) as f:
            config = yaml.safe_load(f)
        assert config["federation_custom_ca_list"] == [local_ca().ca_pem]
        assert config["federation_ip_range_blocklist"] == []
        assert config["trusted_key_servers"] == []
        assert config["server_name"] == peer.server_name


def test_synapse_fetches_myelins_key_through_tls(
        synapse_pair: tuple[MyelinPeer, SynapsePeer]) -> None:
    """Synapse as a notary fetches Myelin's key from Myelin itself: Synapse
    resolves ``localhost:<port>``, trusts the CA and may reach loopback."""
    myelin, synapse = synapse_pair
    key = key_of(myelin)
    key_id = next(iter(key["verify_keys"]))
    status, body = synapse.https("POST", "/_matrix/key/v2/query", {
        "server_keys": {myelin.server_name: {key_id: {"minimum_valid_until_ts": 0}}}})
    assert status == 200, body
    [fetched] = body["server_keys"]
    assert fetched["server_name"] == myelin.server_name
    assert fetched["verify_keys"] == key["verify_keys"]
    # notarised by Synapse, signed by Myelin
    assert set(fetched["signatures"]) == {myelin.server_name, synapse.server_name}


def test_myelin_fetches_synapses_key_through_tls(
        synapse_pair: tuple[MyelinPeer, SynapsePeer]) -> None:
    """The other way: Myelin as a notary fetches Synapse's key from Synapse."""
    myelin, synapse = synapse_pair
    key = key_of(synapse)
    key_id = next(iter(key["verify_keys"]))
    status, body = myelin.https("POST", "/_matrix/key/v2/query", {
        "server_keys": {synapse.server_name: {key_id: {"minimum_valid_until_ts": 0}}}})
    assert status == 200, body
    fetched = [k for k in body["server_keys"] if k["server_name"] == synapse.server_name]
    assert fetched and fetched[0]["verify_keys"] == key["verify_keys"], body


def nginx_destination(conf: str, path: str) -> set[int]:
    """The upstream ports nginx sends ``path`` to: the first regex location that
    matches (nginx's rule), else ``location /``."""
    locations = re.findall(r'location ~ "([^"]+)" \{\s*proxy_pass http://([^;]+);', conf)
    matching = [upstream for regex, upstream in locations if re.match(regex, path)]
    if matching:
        upstream = matching[0]
    else:
        fallback = re.search(r"location / \{\s*proxy_pass http://([^;]+);", conf)
        assert fallback is not None
        upstream = fallback.group(1)
    servers = re.search(r"upstream " + re.escape(upstream) + r" \{(.*?)\}", conf, re.S)
    assert servers is not None, upstream
    return {int(p) for p in re.findall(r"server 127\.0\.0\.1:(\d+)", servers.group(1))}


def generic_ports(fleet: FleetPeer) -> set[int]:
    return {p for n in fleet.layout if "generic" in n
            if (p := fleet.processes[n].client_port) is not None}


def test_fleet_serves_federation_over_tls_from_generic_workers(
        fleet_pair: tuple[FleetPeer, MyelinPeer]) -> None:
    fleet, _ = fleet_pair
    assert fleet.server_name == f"localhost:{fleet.tls_port}"
    assert key_of(fleet)["server_name"] == fleet.server_name
    # The clients' plain port still works next to the TLS one.
    status, _ = fleet.endpoint().request("GET", "/_matrix/client/versions")
    assert status == 200
    with open(f"{fleet.nginx_dir}/nginx.conf") as f:
        conf = f.read()
    for path in ("/_matrix/key/v2/server", "/_matrix/federation/v1/openid/userinfo"):
        assert nginx_destination(conf, path) <= generic_ports(fleet), path
    # A path no worker route declares goes to main: the check can tell them apart.
    main = fleet.processes["main"].client_port
    assert nginx_destination(conf, "/_synapse/admin/v1/register") == {main}


def test_fleet_routes_the_federation_api_to_generic_workers(
        fleet_pair: tuple[FleetPeer, MyelinPeer]) -> None:
    fleet, _ = fleet_pair
    with open(f"{fleet.nginx_dir}/nginx.conf") as f:
        conf = f.read()
    for path in ("/_matrix/federation/v1/send/txn1",
                 "/_matrix/federation/v1/make_join/!room:x/@u:x",
                 "/_matrix/federation/v2/send_join/!room:x/$event",
                 "/_matrix/federation/v1/backfill/!room:x",
                 "/_matrix/federation/v1/query/profile",
                 "/_matrix/federation/v1/user/keys/query",
                 "/_matrix/key/v2/query"):
        assert nginx_destination(conf, path) <= generic_ports(fleet), path


def test_fleet_runs_two_federation_senders_and_main_sends_nothing(
        fleet_pair: tuple[FleetPeer, MyelinPeer]) -> None:
    fleet, _ = fleet_pair
    deadline = time.monotonic() + 10
    while True:
        roles = {name: fleet.status(name)["roles"] for name in fleet.layout}
        if all("federation_sender" in roles[n] for n in FLEET_SENDERS) or \
                time.monotonic() > deadline:
            break
        time.sleep(0.5)
    senders = {name for name, r in roles.items() if "federation_sender" in r}
    assert senders == set(FLEET_SENDERS), roles
