"""A throw-away certificate authority for TLS tests, made with the openssl CLI.

fed-harness builds the shared CA fixture of the federation suite; this one
is the small version the key and client tests need: a CA, and one server
certificate for 127.0.0.1 and localhost signed by it."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class LocalCA:
    ca_cert: str
    cert: str
    key: str


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: str, names: tuple[str, ...] = ("localhost",),
            ips: tuple[str, ...] = ("127.0.0.1",)) -> LocalCA:
    """A CA and a server certificate valid for ``names`` and ``ips``."""
    os.makedirs(directory, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=Myelin test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={names[0]}",
             cwd=directory)
    san = ",".join([*(f"DNS:{n}" for n in names), *(f"IP:{ip}" for ip in ips)])
    with open(os.path.join(directory, "ext.cnf"), "w") as f:
        f.write(f"subjectAltName={san}\n"
                "basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n"
                "authorityKeyIdentifier=keyid\n"
                "subjectKeyIdentifier=hash\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf",
             cwd=directory)
    return LocalCA(os.path.join(directory, "ca.crt"), os.path.join(directory, "server.crt"),
                  os.path.join(directory, "server.key"))
