"""The request object servlets see: path params, query, JSON body, requester."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

from myelin.domain import MatrixError, Requester, missing_param, parse_json_object, too_large

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer


class Request:
    """Wraps aiohttp's request with Matrix conventions."""

    __slots__ = ("_body", "_requester", "hs", "params", "raw")

    def __init__(self, hs: HomeServer, raw: web.BaseRequest, params: dict[str, str]) -> None:
        self.hs = hs
        self.raw = raw
        self.params = params
        self._body: Any = None
        self._requester: Requester | None = None

    @property
    def method(self) -> str:
        return self.raw.method

    @property
    def query(self) -> Any:
        return self.raw.query

    def query_str(self, name: str, default: str | None = None) -> str | None:
        value = self.raw.query.get(name)
        return default if value is None else value

    def query_int(self, name: str, default: int | None = None, *, minimum: int | None = None,
                  maximum: int | None = None) -> int | None:
        value = self.raw.query.get(name)
        if value is None or value == "":
            return default
        try:
            number = int(value)
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be an integer") from None
        if minimum is not None and number < minimum:
            number = minimum
        if maximum is not None and number > maximum:
            number = maximum
        return number

    def query_bool(self, name: str, default: bool = False) -> bool:
        value = self.raw.query.get(name)
        if value is None:
            return default
        if value in ("true", "1"):
            return True
        if value in ("false", "0"):
            return False
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be true or false")

    @property
    def client_ip(self) -> str:
        if self.hs.trust_forwarded_for(self.raw):
            forwarded = self.raw.headers.get("X-Forwarded-For")
            if forwarded:
                return forwarded.split(",")[0].strip()
        return self.raw.remote or ""

    async def body_bytes(self, limit: int | None = None) -> bytes:
        """The whole body; ``M_TOO_LARGE`` past ``limit`` (default
        ``max_request_body_size``)."""
        limit = limit or self.hs.config.max_request_body_size
        length = self.raw.content_length
        if length is not None and length > limit:
            raise too_large(f"Request body exceeds {limit} bytes")
        # read() returns what has arrived so far, not the whole body: loop to EOF.
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = await self.raw.content.read(65536)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise too_large(f"Request body exceeds {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def body_stream(self, limit: int, *,
                          what: str = "Request body") -> AsyncIterator[bytes]:
        """The body chunk by chunk, for bodies too large to hold (uploads).

        ``M_TOO_LARGE`` at once when Content-Length says the body is over
        ``limit`` (nothing is read); with a chunked body, as soon as more than
        ``limit`` bytes have arrived (nothing past the limit is read). A client
        waiting on ``Expect: 100-continue`` is told to go on only then."""
        length = self.raw.content_length
        if length is not None and length > limit:
            raise too_large(f"{what} exceeds {limit} bytes")
        if self.raw.headers.get("Expect", "").lower() == "100-continue":
            writer = self.raw.writer
            if writer is not None:
                await writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        total = 0
        while True:
            chunk = await self.raw.content.readany()
            if not chunk:
                return
            total += len(chunk)
            if total > limit:
                raise too_large(f"{what} exceeds {limit} bytes")
            yield chunk

    async def json(self, *, allow_empty: bool = False) -> dict[str, Any]:
        """The body as a JSON object: ``M_NOT_JSON`` / ``M_BAD_JSON`` otherwise."""
        if self._body is not None:
            return self._body  # type: ignore[no-any-return]
        data = await self.body_bytes()
        if not data.strip():
            if allow_empty:
                self._body = {}
                return {}
            raise MatrixError(400, "M_NOT_JSON", "Content not JSON.")
        body = parse_json_object(data, "Content")
        self._body = body
        return body

    def cache_json(self, body: dict[str, Any]) -> None:
        """Keep ``body`` as the parsed JSON body (for a caller that read the bytes itself)."""
        self._body = body

    def query_json(self, name: str) -> dict[str, Any] | None:
        """A query parameter holding a JSON object (such as ``filter``), or None."""
        raw = self.raw.query.get(name)
        return parse_json_object(raw, name) if raw else None

    async def requester(self, *, allow_guest: bool = False, allow_deactivated: bool = False,
                        allow_locked: bool = False) -> Requester:
        """Who is asking. Guests get 403 ``M_GUEST_ACCESS_FORBIDDEN`` unless the
        endpoint is one the spec lets guests call (``allow_guest``); a locked
        account gets 401 ``M_USER_LOCKED`` on everything but logging out."""
        if self._requester is None:
            self._requester = await self.hs.auth.authenticate(self.raw)
        if self._requester.is_locked and not allow_locked:
            raise MatrixError(401, "M_USER_LOCKED", "This account has been locked",
                              soft_logout=True)
        if self._requester.is_guest and not allow_guest:
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access not allowed")
        return self._requester

    def param(self, name: str) -> str:
        try:
            return self.params[name]
        except KeyError:
            raise missing_param(f"Missing {name}") from None
