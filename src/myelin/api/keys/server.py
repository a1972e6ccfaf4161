"""``/_matrix/key/v2/server``: this server's signed verify keys."""

from __future__ import annotations

import time
from typing import Any

from signedjson.key import encode_verify_key_base64, get_verify_key
from signedjson.sign import sign_json

from myelin.http.request import Request
from myelin.http.routing import RouteTable, plain_path

routes = RouteTable("keys")

KEY_VALIDITY_MS = 7 * 24 * 3600 * 1000


@routes.get(plain_path("/_matrix/key/v2/server"),
             plain_path("/_matrix/key/v2/server", "/{keyId}"))
async def server_keys(request: Request) -> dict[str, Any]:
    hs = request.hs
    key = hs.signing_key
    verify_key = get_verify_key(key)
    document: dict[str, Any] = {
        "server_name": hs.server_name,
        "valid_until_ts": int(time.time() * 1000) + KEY_VALIDITY_MS,
        "verify_keys": {
            f"{key.alg}:{key.version}": {"key": encode_verify_key_base64(verify_key)},
        },
        "old_verify_keys": {},
    }
    signed: dict[str, Any] = sign_json(document, hs.server_name, key)
    return signed
