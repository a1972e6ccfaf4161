"""``X-Matrix`` request authentication, both directions.

Outbound (:func:`sign_request_header`): the JSON object
``{method, uri, origin, destination[, content]}`` is signed with our key and
sent as ``Authorization: X-Matrix origin=…,destination=…,key=…,sig=…``.

Inbound (:func:`authenticate_request`, the first line of every federation
servlet but the unauthenticated ones): the header is parsed (quoted and bare
values), ``destination`` must be us when present, the same object is rebuilt
from the request as received and verified with the origin's key
(``hs.keyring``); anything else is 401 ``M_UNAUTHORIZED`` (400 when the
header does not parse or its origin is not a server name). An origin outside
``federation_domain_whitelist`` is 403 ``M_FORBIDDEN``. The origin is added to
the request's log context, and the federation sender is told the origin is
up (its queue for it stops backing off).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from signedjson.sign import sign_json

from myelin.domain import MatrixError, parse_json_object
from myelin.events.signing import SignatureError
from myelin.federation.discovery import DiscoveryError, parse_server_name
from myelin.logs import current_request

if TYPE_CHECKING:
    from myelin.http.request import Request

logger = logging.getLogger(__name__)

# A transaction may carry 50 PDUs of up to 64 KiB each, plus EDUs: inbound
# federation bodies may be as large as Synapse accepts (200 PDUs' worth),
# whatever the client API's max_request_body_size.
MAX_FEDERATION_BODY = 200 * 65536

# The authenticated origin, stored on the aiohttp request.
ORIGIN_KEY: Any = (web.RequestKey("myelin.federation_origin", str)
                   if hasattr(web, "RequestKey") else "myelin.federation_origin")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def request_json(method: str, uri: str, origin: str, destination: str,
                 content: Any = None) -> dict[str, Any]:
    """The object an X-Matrix signature covers."""
    signed: dict[str, Any] = {"method": method, "uri": uri, "origin": origin,
                              "destination": destination}
    if content is not None:
        signed["content"] = content
    return signed


def sign_request_header(origin: str, destination: str, signing_key: Any, method: str,
                        uri: str, content: Any = None) -> str:
    """The ``Authorization`` header value for a request from ``origin``.

    ``signing_key`` is the server's signedjson key (``hs.signing_key``);
    ``uri`` is the path with its query string, exactly as sent."""
    signed = sign_json(request_json(method, uri, origin, destination, content), origin,
                       signing_key)
    key_id = f"{signing_key.alg}:{signing_key.version}"
    sig = signed["signatures"][origin][key_id]
    return (f"X-Matrix origin={_quote(origin)},destination={_quote(destination)},"
            f"key={_quote(key_id)},sig={_quote(sig)}")


def parse_x_matrix(header: str) -> dict[str, str]:
    """The auth-params of an ``X-Matrix`` header (names lower-cased).

    Values may be tokens or quoted strings with backslash escapes (RFC 9110).
    Raises ``ValueError`` when the header is not X-Matrix or is malformed."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "x-matrix":
        raise ValueError("not an X-Matrix header")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t,":
            i += 1
        if i >= n:
            break
        eq = rest.find("=", i)
        if eq < 0:
            raise ValueError("auth-param without a value")
        name = rest[i:eq].strip().lower()
        if not name or any(c in name for c in ' \t,"'):
            raise ValueError("bad auth-param name")
        i = eq + 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            value_chars: list[str] = []
            while True:
                if i >= n:
                    raise ValueError("unterminated quoted string")
                c = rest[i]
                if c == "\\":
                    if i + 1 >= n:
                        raise ValueError("unterminated quoted string")
                    value_chars.append(rest[i + 1])
                    i += 2
                    continue
                if c == '"':
                    i += 1
                    break
                value_chars.append(c)
                i += 1
            value = "".join(value_chars)
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            value = rest[i:end].strip()
            i = end
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] != ",":
            raise ValueError("garbage after auth-param")
        if name in params:
            raise ValueError(f"repeated auth-param {name}")
        params[name] = value
    return params


def _unauthorized(message: str) -> MatrixError:
    return MatrixError(401, "M_UNAUTHORIZED", message)


def _malformed(message: str) -> MatrixError:
    # A header that does not parse (or names no valid server) is a bad
    # request, as Synapse answers it: 400, still M_UNAUTHORIZED.
    return MatrixError(400, "M_UNAUTHORIZED", message)


async def authenticate_request(request: Request) -> str:
    """The origin server of a signed federation request; 401 otherwise."""
    hs = request.hs
    raw = request.raw
    params: dict[str, str] | None = None
    for header in raw.headers.getall("Authorization", []):
        if header.strip().lower().startswith("x-matrix"):
            try:
                params = parse_x_matrix(header)
            except ValueError as e:
                raise _malformed(f"Malformed X-Matrix Authorization header: {e}") from None
            break
    if params is None:
        raise _unauthorized("Missing X-Matrix Authorization header")
    origin, key_id, sig = params.get("origin"), params.get("key"), params.get("sig")
    if not origin or not key_id or not sig:
        raise _unauthorized("X-Matrix Authorization header lacks origin, key or sig")
    try:
        parse_server_name(origin)
    except DiscoveryError:
        raise _malformed(f"Invalid origin {origin!r}") from None
    # Checked before any key is fetched: we do not talk to servers we refuse.
    if not hs.config.federation.allows_domain(origin):
        raise MatrixError(403, "M_FORBIDDEN", f"Federation denied with {origin}.")
    destination = params.get("destination")
    if destination is not None and destination != hs.server_name:
        raise _unauthorized(f"Request is for {destination}, not for this server")
    content = None
    if raw.body_exists:
        data = await request.body_bytes(
            max(hs.config.max_request_body_size, MAX_FEDERATION_BODY))
        if data.strip():
            content = parse_json_object(data, "Content")
            request.cache_json(content)
    signed = request_json(raw.method, raw.raw_path, origin, hs.server_name, content)
    signed["signatures"] = {origin: {key_id: sig}}
    try:
        await hs.keyring.verify_json(origin, signed, valid_at_ts=int(time.time() * 1000))
    except SignatureError as e:
        logger.info("refused a request claiming to be from %s: %s", origin, e)
        raise _unauthorized(f"Invalid signature from {origin}: {e}") from None
    raw[ORIGIN_KEY] = origin
    current_request.set(f"{current_request.get()} from {origin}")
    # It just reached us: our queue of transactions for it may stop backing off.
    hs.federation_sender.server_up(origin)
    return origin
