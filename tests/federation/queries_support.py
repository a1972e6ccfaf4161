"""Helpers of the federation query tests (tests/federation/test_queries*.py):
users with device keys, requests signed as one of the servers, uploads and
authenticated downloads, and counting what a server's nginx saw."""

from __future__ import annotations

import io
import json
import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from PIL import Image
from signedjson.key import generate_signing_key, get_verify_key
from signedjson.sign import sign_json
from unpaddedbase64 import encode_base64

from tests.support.client import LoggedIn
from tests.support.fed_client import sign_request, signing_key

FED = "/_matrix/federation/v1"
MEDIA = "/_matrix/client/v1/media"
# A server name nobody listens on: connection refused at once.
NOWHERE = "localhost:1"


def q(value: str) -> str:
    return quote(value, safe="")


class Crypto(LoggedIn):
    """A user with a device key to sign device keys and one-time keys with."""

    PREFIX = "fedq"

    def __init__(self, hs: Any, login: dict[str, Any]) -> None:
        super().__init__(hs, login)
        self.device_key = generate_signing_key(self.device_id)

    @property
    def ed25519(self) -> str:
        return encode_base64(get_verify_key(self.device_key).encode())

    def device_keys(self) -> dict[str, Any]:
        return sign_json({
            "user_id": self.user_id, "device_id": self.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"curve25519:{self.device_id}": f"curve-{self.device_id}",
                     f"ed25519:{self.device_id}": self.ed25519}},
            self.user_id, self.device_key)

    def one_time_keys(self, count: int) -> dict[str, Any]:
        return {f"signed_curve25519:K{i}": sign_json({"key": f"otk-{self.device_id}-{i}"},
                                                     self.user_id, self.device_key)
                for i in range(count)}


def as_server(origin: Any, destination: Any, method: str, uri: str,
              body: Any = None) -> tuple[int, Any]:
    """``origin`` calling ``destination``'s federation API, signed with its key."""
    key = signing_key(os.path.join(origin.workdir, "signing.key"))
    auth = sign_request(key, origin.server_name, destination.server_name, method, uri, body)
    return destination.https(method, uri, body, {"Authorization": auth})


def fetch_raw(peer: Any, path: str, headers: dict[str, str]) -> tuple[int, bytes, str]:
    assert peer.ca is not None
    request = urllib.request.Request(f"https://localhost:{peer.tls_port}{path}",
                                     headers=headers)
    with urllib.request.urlopen(request, timeout=30, context=peer.ca.ssl_context()) as r:
        return r.status, r.read(), r.headers.get("Content-Type", "")


def requests_to(peer: Any, fragment: str) -> int:
    """How many requests with ``fragment`` in their path ``peer``'s nginx saw."""
    assert peer.tls is not None
    return sum(fragment in line for line in peer.tls.access_log().splitlines())


def png(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def download(user: LoggedIn, path: str) -> tuple[int, bytes, str]:
    request = urllib.request.Request(user.hs.url(path),
                                     headers={"Authorization": f"Bearer {user.token}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


def upload(user: LoggedIn, content: bytes, content_type: str,
           filename: str | None = None) -> str:
    """Upload to the user's server; the media id."""
    path = "/_matrix/media/v3/upload" + (f"?filename={quote(filename)}" if filename else "")
    request = urllib.request.Request(
        user.hs.url(path), data=content,
        headers={"Authorization": f"Bearer {user.token}", "Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=30) as r:
        return str(json.loads(r.read())["content_uri"].rsplit("/", 1)[1])

