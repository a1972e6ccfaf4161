"""A real ``myelin run`` with a ``tls: true`` listener: federation and keys over
HTTPS with the configured certificate, next to its plain client listener."""

from __future__ import annotations

import json
import os
import ssl
import tempfile
import urllib.request
from collections.abc import Iterator

import pytest
import yaml

from tests.federation_keys.tls import make_ca
from tests.support.postgres import free_port
from tests.support.server import ServerProcess, make_server_config


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[ServerProcess, int, str]]:
    workdir = tempfile.mkdtemp(prefix="myelin-tls-")
    ca = make_ca(os.path.join(workdir, "ca"))
    tls_port = free_port()
    config, secret, port = make_server_config("sqlite", None, workdir, {
        "tls_certificate_path": ca.cert, "tls_private_key_path": ca.key})
    # The plain client listener (the harness's health checks) and a TLS one
    # for federation.
    config["listeners"].append({"port": tls_port, "bind_addresses": ["127.0.0.1"],
                                "type": "http", "tls": True,
                                "resources": [{"names": ["federation"]}]})
    config_path = os.path.join(workdir, "homeserver.yaml")
    with open(config_path, "w") as f:
        yaml.safe_dump(config, f)
    server = ServerProcess(base_url=f"http://127.0.0.1:{port}", config_path=config_path,
                           shared_secret=secret, workdir=workdir, engine="sqlite",
                           log_path=os.path.join(workdir, "server.log"))
    server.start()
    try:
        yield server, tls_port, ca.ca_cert
    finally:
        server.stop()


def _get(url: str, cafile: str) -> tuple[int, dict[str, object]]:
    context = ssl.create_default_context(cafile=cafile)
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_tls_listener_serves_federation_and_keys(
        tls_server: tuple[ServerProcess, int, str]) -> None:
    server, port, cafile = tls_server
    status, body = _get(f"https://127.0.0.1:{port}/_matrix/federation/v1/version", cafile)
    assert status == 200 and body["server"] == {"name": "Myelin", "version": body["server"][
        "version"]}  # type: ignore[index]
    status, body = _get(f"https://localhost:{port}/_matrix/key/v2/server", cafile)
    assert status == 200 and body["server_name"] == server.server_name


def test_tls_listener_refuses_plain_http(tls_server: tuple[ServerProcess, int, str]) -> None:
    _, port, _ = tls_server
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/_matrix/federation/v1/version",
                               timeout=10).read()


def test_tls_listener_without_certificate_is_a_config_error(
        tls_server: tuple[ServerProcess, int, str]) -> None:
    import subprocess
    import sys

    server, _, _ = tls_server
    with open(server.config_path) as f:
        config = yaml.safe_load(f)
    del config["tls_certificate_path"]
    path = os.path.join(server.workdir, "no-cert.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    result = subprocess.run([sys.executable, "-m", "myelin", "check-config", "--config-path",
                             path], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "tls_certificate_path" in result.stderr + result.stdout
