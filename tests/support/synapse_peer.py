"""A real Synapse on loopback, as the far side of federation tests.

Synapse runs from its own venv (it must not share Myelin's): ``$MYELIN_SYNAPSE_PYTHON``,
else the repository's ``.venv-synapse`` (``.ci/run`` makes it), else the
development machine's ``/work/synapse-venv``. Its config is generated here:
SQLite, a plain HTTP listener behind an nginx with TLS from the tests' CA
(:mod:`tests.support.federation`), the CA trusted for outbound federation,
loopback allowed, no trusted key servers, shared-secret registration and rate
limits out of the way. Its logs stay in its work directory; ``close()`` prints
the tail when Synapse failed.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml
from signedjson.key import generate_signing_key, write_signing_keys

from tests.support.federation import LocalCA, TlsProxy, https_request, local_ca, simple_proxy_conf
from tests.support.postgres import free_port
from tests.support.server import ServerProcess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CANDIDATES = [os.path.join(REPO, ".venv-synapse", "bin", "python"),
              "/work/synapse-venv/bin/python"]
START_TIMEOUT_S = 180.0


@cache
def synapse_python() -> tuple[str | None, str]:
    """(the Python that can run Synapse, or None; why not / which version)."""
    env = os.environ.get("MYELIN_SYNAPSE_PYTHON")
    tried = []
    for python in ([env] if env else []) + CANDIDATES:
        if not os.path.exists(python):
            tried.append(f"{python}: missing")
            continue
        done = subprocess.run([python, "-c", "import synapse.app.homeserver, synapse; "
                               "print(synapse.__version__)"],
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode == 0:
            return python, done.stdout.strip()
        tried.append(f"{python}: {done.stderr.strip().splitlines()[-1:]}")
    return None, ("no Python with matrix-synapse (make one with .ci/run, or set "
                  "MYELIN_SYNAPSE_PYTHON): " + "; ".join(tried))


LENIENT = {"per_second": 10000, "burst_count": 10000}


def synapse_config(workdir: str, server_name: str, port: int, ca: LocalCA,
                   secret: str) -> dict[str, Any]:
    log_config = os.path.join(workdir, "log.yaml")
    with open(log_config, "w") as f:
        yaml.safe_dump({
            "version": 1,
            "formatters": {"precise": {"format": "%(asctime)s - %(name)s - %(lineno)d - "
                                                 "%(levelname)s - %(request)s - %(message)s"}},
            "filters": {"context": {"()": "synapse.logging.context.LoggingContextFilter",
                                    "request": ""}},
            "handlers": {"file": {"class": "logging.FileHandler", "formatter": "precise",
                                  "filters": ["context"],
                                  "filename": os.path.join(workdir, "homeserver.log")}},
            "root": {"level": os.environ.get("MYELIN_SYNAPSE_LOG_LEVEL", "INFO"),
                     "handlers": ["file"]},
            "disable_existing_loggers": False}, f)
    return {
        "server_name": server_name,
        "public_baseurl": f"https://{server_name}/",
        "pid_file": os.path.join(workdir, "homeserver.pid"),
        "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http",
                       "tls": False, "x_forwarded": True,
                       "resources": [{"names": ["client", "federation"], "compress": False}]}],
        "database": {"name": "sqlite3",
                     "args": {"database": os.path.join(workdir, "homeserver.db")}},
        "log_config": log_config,
        "media_store_path": os.path.join(workdir, "media"),
        "signing_key_path": os.path.join(workdir, "signing.key"),
        "report_stats": False,
        "macaroon_secret_key": secrets.token_hex(16),
        "form_secret": secrets.token_hex(16),
        "registration_shared_secret": secret,
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_verify_certificates": True,
        "federation_custom_ca_list": [ca.ca_pem],
        "ip_range_blacklist": [],
        "federation_ip_range_blacklist": [],
        "allow_public_rooms_over_federation": True,
        "allow_public_rooms_without_auth": True,
        "presence": {"enabled": True},
        "url_preview_enabled": False,
        "enable_metrics": False,
        "rc_message": LENIENT, "rc_registration": LENIENT, "rc_admin_redaction": LENIENT,
        "rc_login": {"address": LENIENT, "account": LENIENT, "failed_attempts": LENIENT},
        "rc_joins": {"local": LENIENT, "remote": LENIENT},
        "rc_joins_per_room": LENIENT,
        "rc_invites": {"per_room": LENIENT, "per_user": LENIENT, "per_issuer": LENIENT},
        "rc_room_creation": LENIENT,
        "rc_key_requests": LENIENT,
        "rc_presence": {"per_user": LENIENT},
        "rc_delayed_event_mgmt": LENIENT,
        "rc_federation": {"window_size": 1000, "sleep_limit": 10000, "sleep_delay": 1,
                          "reject_limit": 10000, "concurrent": 100},
    }


@dataclass
class SynapsePeer(ServerProcess):
    """A running Synapse named ``localhost:<tls port>``; ``base_url`` is its plain
    client listener. ``register`` (shared-secret admin API) is inherited: Synapse
    and Myelin speak the same one."""

    python: str = ""
    tls: TlsProxy | None = None
    ca: LocalCA | None = None
    kind: str = "synapse"

    @property
    def tls_port(self) -> int:
        assert self.tls is not None
        return self.tls.port

    def https(self, method: str, path: str, body: Any = None,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """A request to this server's TLS port (what another server sees)."""
        assert self.ca is not None
        return https_request(self.ca, self.tls_port, method, path, body, headers)

    def start(self) -> None:
        out = open(os.path.join(self.workdir, "stdout.log"), "ab")
        self.proc = subprocess.Popen(
            [self.python, "-m", "synapse.app.homeserver", "-c", self.config_path],
            stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir,
            env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"synapse exited early ({self.proc.returncode}):\n"
                                   f"{self.log()}")
            try:
                with urllib.request.urlopen(self.url("/health"), timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"synapse did not come up in {START_TIMEOUT_S}s:\n{self.log()}")

    def log(self) -> str:
        parts = []
        for name in ("stdout.log", "homeserver.log"):
            try:
                with open(os.path.join(self.workdir, name), errors="replace") as f:
                    parts.append(f"--- {name}\n" + f.read()[-15000:])
            except OSError:
                pass
        return "\n".join(parts)

    def close(self) -> None:
        code = self.stop()
        if self.tls is not None:
            self.tls.stop()
        if code not in (0, None, -15):
            print(f"== synapse {self.server_name} exited {code}; logs in {self.workdir} ==\n"
                  f"{self.log()}")


def launch_synapse_peer(ca: LocalCA | None = None) -> SynapsePeer:
    """A Synapse behind TLS, running; raises RuntimeError if no Synapse can run
    (callers skip on it with :func:`synapse_python`'s reason)."""
    python, why = synapse_python()
    if python is None:
        raise RuntimeError(why)
    ca = ca or local_ca()
    tls_port = free_port()
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="synapse-peer-")
    server_name = f"localhost:{tls_port}"
    secret = secrets.token_hex(16)
    config = synapse_config(workdir, server_name, port, ca, secret)
    with open(config["signing_key_path"], "w") as f:
        write_signing_keys(f, [generate_signing_key("a_" + secrets.token_hex(2))])
    config_path = os.path.join(workdir, "homeserver.yaml")
    with open(config_path, "w") as f:
        yaml.safe_dump(config, f)
    prefix = os.path.join(workdir, "nginx")
    os.makedirs(prefix, exist_ok=True)
    peer = SynapsePeer(base_url=f"http://127.0.0.1:{port}", config_path=config_path,
                       shared_secret=secret, workdir=workdir, engine="sqlite",
                       log_path=os.path.join(workdir, "homeserver.log"),
                       server_name=server_name, python=python, ca=ca,
                       tls=TlsProxy(prefix, tls_port,
                                    simple_proxy_conf(prefix, tls_port, port, ca)))
    try:
        peer.start()
        assert peer.tls is not None
        peer.tls.start()
    except BaseException:
        peer.close()
        raise
    return peer


if __name__ == "__main__":  # a manual check: start one, print its key, stop it
    p = launch_synapse_peer()
    print(p.server_name, p.https("GET", "/_matrix/key/v2/server"), file=sys.stderr)
    p.close()
