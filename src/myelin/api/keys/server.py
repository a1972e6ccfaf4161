"""The key server: ``/_matrix/key/v2/server`` (our keys) and
``/_matrix/key/v2/query`` (notary: other servers' keys, countersigned by us).

Unauthenticated, as the spec has them: anyone may ask for keys.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from signedjson.key import encode_verify_key_base64, get_verify_key
from signedjson.sign import sign_json

from myelin.domain import MatrixError
from myelin.http.request import Request
from myelin.http.routing import RouteTable, plain_path

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

routes = RouteTable("keys")

# How many servers one notary query may ask about.
MAX_QUERY_SERVERS = 100


def own_key_response(hs: HomeServer) -> dict[str, Any]:
    """Our signed key document: the current key and ``old_signing_keys``."""
    key = hs.signing_key
    federation = hs.config.federation
    document: dict[str, Any] = {
        "server_name": hs.server_name,
        "valid_until_ts": int(time.time() * 1000) + federation.key_refresh_interval_ms,
        "verify_keys": {
            f"{key.alg}:{key.version}": {"key": encode_verify_key_base64(get_verify_key(key))},
        },
        "old_verify_keys": {
            old.key_id: {"key": old.key, "expired_ts": old.expired_ts}
            for old in federation.old_signing_keys
        },
    }
    signed: dict[str, Any] = sign_json(document, hs.server_name, key)
    return signed


@routes.get(plain_path("/_matrix/key/v2/server"),
            plain_path("/_matrix/key/v2/server", "/{keyId}"))
async def server_keys(request: Request) -> dict[str, Any]:
    return own_key_response(request.hs)


def _minimum(criteria: Any) -> int | None:
    if not isinstance(criteria, dict):
        return None
    value = criteria.get("minimum_valid_until_ts")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def _notary_answer(request: Request,
                         query: dict[str, dict[str, Any]]) -> dict[str, Any]:
    hs = request.hs
    out: list[dict[str, Any]] = []
    for server_name, keys in query.items():
        criteria = {key_id: _minimum(c) for key_id, c in keys.items()}
        for response in await hs.keyring.key_responses(server_name, criteria):
            if server_name != hs.server_name:
                response = sign_json(response, hs.server_name, hs.signing_key)
            out.append(response)
    return {"server_keys": out}


@routes.post(plain_path("/_matrix/key/v2/query"))
async def query_keys(request: Request) -> dict[str, Any]:
    body = await request.json()
    criteria = body.get("server_keys")
    if not isinstance(criteria, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) for k, v in criteria.items()):
        raise MatrixError(400, "M_BAD_JSON",
                          "server_keys must map server names to key criteria")
    if len(criteria) > MAX_QUERY_SERVERS:
        raise MatrixError(400, "M_BAD_JSON",
                          f"at most {MAX_QUERY_SERVERS} servers per query")
    return await _notary_answer(request, criteria)


@routes.get(plain_path("/_matrix/key/v2/query", "/{serverName}"),
            plain_path("/_matrix/key/v2/query", "/{serverName}/{keyId}"))
async def query_server_keys(request: Request) -> dict[str, Any]:
    server_name = request.param("serverName")
    key_id = request.params.get("keyId")
    if not key_id:
        return await _notary_answer(request, {server_name: {}})
    minimum = request.query_int("minimum_valid_until_ts")
    return await _notary_answer(request, {server_name: {
        key_id: {} if minimum is None else {"minimum_valid_until_ts": minimum}}})
