"""Homeservers that federate on loopback, the way the judges run them.

Each homeserver sits behind its own nginx terminating TLS on a free port with a
certificate from a throwaway local CA, and is named ``localhost:<tls port>``,
so server discovery takes the explicit port and never needs DNS or
``.well-known``. Each server trusts the CA (``federation_custom_ca_list``),
may reach loopback (``federation_ip_range_blocklist: []``) and fetches keys
only from their origin (``trusted_key_servers: []``).

Clients of the tests talk plain HTTP to a server's own listener (or the fleet's
nginx): only server-to-server traffic goes through TLS.

* :class:`LocalCA`: the CA (the openssl CLI; ``cryptography`` is not a test
  dependency) and the one ``localhost``/``127.0.0.1`` certificate every nginx uses;
* :func:`launch_myelin_peer`: a monolith on SQLite (or PostgreSQL), with nginx
  from ``myelin routes --nginx --full`` plus the TLS listener;
* :func:`launch_fleet_peer`: the seed's example fleet on PostgreSQL + Redis with
  two federation senders, federation routed to the generic workers by the
  generated nginx config;
* :mod:`tests.support.synapse_peer`: a real Synapse behind the same CA.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import yaml

from tests.support.fleet import LAYOUT, STREAM_WRITERS, Fleet, FleetEndpoint, start_nginx
from tests.support.postgres import PostgresServer, free_port
from tests.support.server import ServerProcess, make_server_config

MYELIN = [sys.executable, "-m", "myelin.cli"]
CERT_DAYS = 7


def _openssl(*args: str, cwd: str) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                          check=False, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{done.stderr}")


class LocalCA:
    """A CA made for this test session and the server certificate it issued for
    ``localhost`` and ``127.0.0.1`` (every homeserver here is on localhost)."""

    def __init__(self, workdir: str | None = None) -> None:
        self.workdir = workdir or tempfile.mkdtemp(prefix="myelin-ca-")
        self.ca_pem = os.path.join(self.workdir, "ca.pem")
        self.cert_pem = os.path.join(self.workdir, "localhost.pem")
        self.key_pem = os.path.join(self.workdir, "localhost.key")
        if shutil.which("openssl") is None:
            raise RuntimeError("the openssl CLI is needed for the federation tests' CA")
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
                 "-out", "ca.pem", "-days", str(CERT_DAYS), "-subj", "/CN=Myelin test CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=self.workdir)
        leaf_ext = os.path.join(self.workdir, "leaf.ext")
        with open(leaf_ext, "w") as f:
            f.write("basicConstraints = critical, CA:FALSE\n"
                    "keyUsage = critical, digitalSignature, keyEncipherment\n"
                    "extendedKeyUsage = serverAuth\n"
                    "subjectKeyIdentifier = hash\n"
                    "authorityKeyIdentifier = keyid, issuer\n"
                    "subjectAltName = DNS:localhost, IP:127.0.0.1\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "localhost.key",
                 "-out", "localhost.csr", "-subj", "/CN=localhost", cwd=self.workdir)
        _openssl("x509", "-req", "-in", "localhost.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", "localhost.pem", "-days", str(CERT_DAYS),
                 "-sha256", "-extfile", "leaf.ext", cwd=self.workdir)

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA (for tests that speak HTTPS)."""
        return ssl.create_default_context(cafile=self.ca_pem)


_ca: LocalCA | None = None
_ca_lock = threading.Lock()


def local_ca() -> LocalCA:
    """The test session's CA, made on first use."""
    global _ca
    with _ca_lock:
        if _ca is None:
            _ca = LocalCA()
        return _ca


def federation_settings(ca: LocalCA) -> dict[str, Any]:
    """What a Myelin under test needs to federate on loopback through the CA."""
    return {"federation_custom_ca_list": [ca.ca_pem],
            "federation_verify_certificates": True,
            "federation_ip_range_blocklist": [],
            "trusted_key_servers": [],
            "suppress_key_server_warning": True}


# -- nginx ------------------------------------------------------------------------------

def tls_lines(tls_port: int, ca: LocalCA, indent: str = "    ") -> str:
    return (f"{indent}listen 127.0.0.1:{tls_port} ssl;\n"
            f"{indent}ssl_certificate {ca.cert_pem};\n"
            f"{indent}ssl_certificate_key {ca.key_pem};\n"
            f"{indent}ssl_protocols TLSv1.2 TLSv1.3;\n")


def add_tls_listener(conf: str, tls_port: int, ca: LocalCA) -> str:
    """Add a TLS ``listen`` (and the certificate) next to the first ``listen``
    of a generated nginx.conf: the server keeps its plain port for the tests'
    clients and serves federation over TLS."""
    match = re.search(r"^([ \t]*)listen [^;]+;\n", conf, flags=re.MULTILINE)
    if match is None:
        raise ValueError("no listen directive in the generated nginx config")
    return conf[:match.end()] + tls_lines(tls_port, ca, match.group(1)) + conf[match.end():]


def simple_proxy_conf(prefix: str, tls_port: int, upstream_port: int, ca: LocalCA) -> str:
    """A whole nginx.conf: TLS on ``tls_port`` in front of a plain HTTP server
    (for Synapse, which ``myelin routes`` knows nothing of)."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{
    worker_connections 1024;
}}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body_temp;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;
    server {{
{tls_lines(tls_port, ca, "        ")}        server_name localhost;
        client_max_body_size 100m;
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host:$server_port;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_read_timeout 330s;
        }}
    }}
}}
"""


@dataclass
class TlsProxy:
    """One nginx process terminating TLS for one homeserver."""

    prefix: str
    port: int
    conf: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_nginx(self.prefix, self.conf, self.port)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def access_log(self) -> str:
        try:
            with open(os.path.join(self.prefix, "access.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def https_request(ca: LocalCA, port: int, method: str, path: str, body: Any = None,
                  headers: dict[str, str] | None = None,
                  timeout: float = 30.0) -> tuple[int, Any]:
    """``method https://localhost:<port><path>`` trusting only the test CA;
    (status, decoded JSON or text)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"https://localhost:{port}{path}", data=data,
                                     method=method,
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout,
                                    context=ca.ssl_context()) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, payload = e.code, e.read()
    try:
        return status, json.loads(payload) if payload else None
    except ValueError:
        return status, payload.decode(errors="replace")


# -- a Myelin monolith ------------------------------------------------------------------

@dataclass
class MyelinPeer(ServerProcess):
    """A Myelin process named ``localhost:<tls port>`` with its TLS nginx.

    ``base_url`` is the plain client listener (for the tests' clients);
    ``stop``/``start`` stop and start the homeserver (nginx stays up and
    answers 502 meanwhile, as a real deployment whose backend is down)."""

    tls: TlsProxy | None = None
    ca: LocalCA | None = None
    kind: str = "myelin"

    @property
    def tls_port(self) -> int:
        assert self.tls is not None
        return self.tls.port

    def https(self, method: str, path: str, body: Any = None,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """A request to this server's TLS port (what another server sees)."""
        assert self.ca is not None
        return https_request(self.ca, self.tls_port, method, path, body, headers)

    def close(self) -> None:
        """Stop everything (the server, then nginx); prints the log if it failed."""
        code = self.stop()
        if self.tls is not None:
            self.tls.stop()
        if code not in (0, None):
            print(f"== {self.server_name} exited {code} ==\n{self.log()}")


def myelin_nginx_conf(config_paths: list[str], workers_dir: str | None, prefix: str,
                      tls_port: int, ca: LocalCA) -> str:
    """``myelin routes --nginx --full`` listening with TLS on ``tls_port`` only."""
    command = [*MYELIN, "routes", "--nginx", "--full", "--prefix", prefix,
               "--listen", f"127.0.0.1:{tls_port} ssl"]
    for path in config_paths:
        command += ["-c", path]
    if workers_dir:
        command += ["--workers", workers_dir]
    if os.geteuid() == 0:
        command += ["--user", "root"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"myelin routes failed: {done.stderr}")
    conf = done.stdout
    listen = f"listen 127.0.0.1:{tls_port} ssl;\n"
    at = conf.index(listen) + len(listen)
    indent = re.search(r"([ \t]*)" + re.escape(listen), conf)
    pad = indent.group(1) if indent else "    "
    return (conf[:at] + f"{pad}ssl_certificate {ca.cert_pem};\n"
            f"{pad}ssl_certificate_key {ca.key_pem};\n" + conf[at:])


def launch_myelin_peer(engine: str = "sqlite", pg: PostgresServer | None = None,
                       extra: dict[str, Any] | None = None,
                       ca: LocalCA | None = None) -> MyelinPeer:
    """A Myelin monolith behind TLS, running. Call ``close()`` when done."""
    ca = ca or local_ca()
    tls_port = free_port()
    workdir = tempfile.mkdtemp(prefix="myelin-fed-")
    config, secret, port = make_server_config(engine, pg, workdir)
    server_name = f"localhost:{tls_port}"
    config["server_name"] = server_name
    config["public_baseurl"] = f"https://{server_name}/"
    config["listeners"][0]["x_forwarded"] = True
    config.update(federation_settings(ca))
    config.update(extra or {})
    config_path = os.path.join(workdir, "homeserver.yaml")
    with open(config_path, "w") as f:
        yaml.safe_dump(config, f)
    peer = MyelinPeer(base_url=f"http://127.0.0.1:{port}", config_path=config_path,
                      shared_secret=secret, workdir=workdir, engine=engine,
                      log_path=os.path.join(workdir, "server.log"),
                      extra_config=extra or {}, server_name=server_name, ca=ca)
    prefix = os.path.join(workdir, "nginx")
    os.makedirs(prefix, exist_ok=True)
    try:
        peer.tls = TlsProxy(prefix, tls_port,
                            myelin_nginx_conf([config_path], None, prefix, tls_port, ca))
        peer.start()
        peer.tls.start()
    except BaseException:
        peer.close()
        raise
    return peer


# -- a Myelin fleet ---------------------------------------------------------------------

FLEET_LAYOUT: dict[str, tuple[bool, bool]] = {
    **LAYOUT, "federation_sender1": (False, True), "federation_sender2": (False, True)}
FLEET_SENDERS = ["federation_sender1", "federation_sender2"]


class FleetPeer(Fleet):
    """The seed's example fleet plus two federation senders, named
    ``localhost:<tls port>``: nginx (generated by ``myelin routes``) serves the
    clients on ``nginx_port`` and federation with TLS on ``tls_port``, routing
    federation paths to the generic workers."""

    kind = "fleet"

    def __init__(self, pg: PostgresServer, ca: LocalCA | None = None,
                 extra_shared: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.ca = ca or local_ca()
        self.tls_port = free_port()
        name = f"localhost:{self.tls_port}"
        shared = {**federation_settings(self.ca),
                  "federation_sender_instances": FLEET_SENDERS,
                  "public_baseurl": f"https://{name}/",
                  **(extra_shared or {})}
        super().__init__(pg, extra_shared=shared, layout=dict(FLEET_LAYOUT),
                         stream_writers=dict(STREAM_WRITERS), server_name=name,
                         nginx_rewrite=lambda conf: add_tls_listener(conf, self.tls_port,
                                                                     self.ca),
                         **kwargs)

    def endpoint(self, name: str | None = None) -> FleetEndpoint:
        view = super().endpoint(name)
        view.server_name = self.server_name
        return view

    def https(self, method: str, path: str, body: Any = None,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """A request to the fleet's TLS port (what another server sees)."""
        return https_request(self.ca, self.tls_port, method, path, body, headers)

    def close(self) -> None:
        errors = self.all_errors()
        self.stop()
        if errors:
            print(f"== fleet {self.server_name} errors ==\n{errors}")


def launch_fleet_peer(pg: PostgresServer, ca: LocalCA | None = None,
                      extra_shared: dict[str, Any] | None = None) -> FleetPeer:
    fleet = FleetPeer(pg, ca, extra_shared)
    try:
        fleet.start()
    except BaseException:
        fleet.close()
        raise
    return fleet
