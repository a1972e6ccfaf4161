"""Asking other servers what a client wants to know about their users, rooms and media.

Each method is one kind of federation query a client request turns into:
profiles (cached briefly, as the spec invites), room aliases, the public
room list, a space's hierarchy, device keys and one-time keys (one request
per server, all servers at once, each with its own timeout), and media
downloads (the authenticated ``/_matrix/federation/v1/media`` endpoints,
falling back to the legacy ``/_matrix/media/v3/download``). Errors the remote
answers with come back to the client as that Matrix error where it means
something to them (404 stays 404); a server we cannot reach is a 502.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from myelin.domain import MatrixError, not_found, server_of
from myelin.federation.client import FederationError, FederationUnreachable

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer
    from myelin.storage.stream_rows import EventsRow

logger = logging.getLogger(__name__)

T = TypeVar("T")

FEDERATION_V1 = "/_matrix/federation/v1"
# How long a remote profile answer is reused (the spec: "MAY wish to cache");
# a member event of the user (a profile change reaches rooms that way) drops it.
PROFILE_CACHE_SECONDS = 30.0
PROFILE_CACHE_SIZE = 10_000
QUERY_TIMEOUT_S = 30.0
DEFAULT_KEYS_TIMEOUT_MS = 10_000
# Errors a remote answers with that mean the same to the client ("no such
# thing", "not telling"); any other failure is the client's 502.
_PASSED_THROUGH = (403, 404)


def quoted(value: str) -> str:
    return quote(value, safe="")


def as_matrix_error(e: Exception, what: str) -> MatrixError:
    """The client's view of a failed federation request."""
    if isinstance(e, FederationError) and e.code in _PASSED_THROUGH and e.errcode:
        body = e.body if isinstance(e.body, dict) else {}
        message = body.get("error")
        return MatrixError(e.code, e.errcode, message if isinstance(message, str) else what)
    if isinstance(e, FederationError) and e.code == 404:
        return not_found(what)
    return MatrixError(502, "M_UNKNOWN", f"{what}: the remote server could not be reached")


def failure(e: BaseException) -> dict[str, Any]:
    """A ``failures`` entry of /keys/query and /keys/claim for one server."""
    if isinstance(e, FederationError):
        return {"status": e.code, "message": f"The remote server answered {e.code}"}
    if isinstance(e, TimeoutError):
        return {"status": 503, "message": "The remote server did not answer in time"}
    return {"status": 503, "message": "The remote server could not be reached"}


@dataclass(frozen=True)
class RemoteFile:
    body: bytes
    content_type: str | None
    filename: str | None


class _TtlCache:
    """A small per-process cache of recent answers, oldest dropped first."""

    def __init__(self, seconds: float, size: int) -> None:
        self.seconds = seconds
        self.size = size
        self._entries: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any) -> Any | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[key]
            return None
        return entry[1]

    def drop(self, matches: Callable[[Any], bool]) -> None:
        for key in [k for k in self._entries if matches(k)]:
            del self._entries[key]

    def put(self, key: Any, value: Any) -> None:
        self._entries[key] = (time.monotonic() + self.seconds, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class FederationQueries:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self._profiles = _TtlCache(PROFILE_CACHE_SECONDS, PROFILE_CACHE_SIZE)

    def on_events_rows(self, writer: str, rows: Sequence[tuple[int, EventsRow]]) -> None:
        """A remote user's member event may carry a new profile: forget theirs."""
        users = {r.state_key for _, r in rows if r.membership is not None and r.state_key
                 and not self.hs.is_mine(r.state_key)}
        if users:
            self._profiles.drop(lambda key: key[0] in users)

    @property
    def client(self) -> Any:
        return self.hs.federation_client

    def _check_remote(self, server: str) -> None:
        if not server or server == self.hs.server_name:
            raise MatrixError(400, "M_INVALID_PARAM", "Not a remote server")

    # -- profiles --------------------------------------------------------------
    async def profile(self, user_id: str, field: str | None = None) -> dict[str, Any]:
        """A remote user's profile (or one field of it), cached briefly."""
        server = server_of(user_id)
        self._check_remote(server)
        key = (user_id, field)
        cached = self._profiles.get(key)
        if cached is not None:
            return dict(cached)
        args = {"user_id": user_id}
        if field is not None:
            args["field"] = field
        try:
            answer = await self.client.get_json(server, f"{FEDERATION_V1}/query/profile", args,
                                                timeout=QUERY_TIMEOUT_S)
        except (FederationError, FederationUnreachable) as e:
            raise as_matrix_error(e, "Profile not found") from None
        if not isinstance(answer, dict):
            raise MatrixError(502, "M_UNKNOWN", "The remote server sent a malformed profile")
        if field is not None:
            answer = {field: answer[field]} if answer.get(field) is not None else {}
        else:
            answer = {k: v for k, v in answer.items() if v is not None}
        self._profiles.put(key, answer)
        return dict(answer)

    # -- room aliases ----------------------------------------------------------
    async def resolve_alias(self, alias: str) -> dict[str, Any]:
        server = server_of(alias)
        self._check_remote(server)
        try:
            answer = await self.client.get_json(server, f"{FEDERATION_V1}/query/directory",
                                                {"room_alias": alias},
                                                timeout=QUERY_TIMEOUT_S)
        except (FederationError, FederationUnreachable) as e:
            raise as_matrix_error(e, f"Room alias {alias} not found.") from None
        room_id = answer.get("room_id") if isinstance(answer, dict) else None
        servers = answer.get("servers") if isinstance(answer, dict) else None
        if not isinstance(room_id, str) or not isinstance(servers, list):
            raise MatrixError(502, "M_UNKNOWN", "The remote server sent a malformed answer")
        listed = [s for s in servers if isinstance(s, str)]
        # The alias's server knows the room: it goes first if it did not say so.
        return {"room_id": room_id,
                "servers": listed if server in listed else [server, *listed]}

    # -- the public room list ----------------------------------------------------
    async def public_rooms(self, server: str, *, limit: int | None, since: str | None,
                           search_filter: dict[str, Any] | None, include_all_networks: bool,
                           third_party_instance_id: str | None) -> dict[str, Any]:
        self._check_remote(server)
        path = f"{FEDERATION_V1}/publicRooms"
        try:
            if search_filter:
                body: dict[str, Any] = {"filter": search_filter,
                                        "include_all_networks": include_all_networks}
                if limit is not None:
                    body["limit"] = limit
                if since is not None:
                    body["since"] = since
                if third_party_instance_id is not None:
                    body["third_party_instance_id"] = third_party_instance_id
                answer = await self.client.post_json(server, path, body,
                                                     timeout=QUERY_TIMEOUT_S)
            else:
                args: dict[str, str | list[str]] = {
                    "include_all_networks": "true" if include_all_networks else "false"}
                if limit is not None:
                    args["limit"] = str(limit)
                if since is not None:
                    args["since"] = since
                if third_party_instance_id is not None:
                    args["third_party_instance_id"] = third_party_instance_id
                answer = await self.client.get_json(server, path, args,
                                                    timeout=QUERY_TIMEOUT_S)
        except (FederationError, FederationUnreachable) as e:
            raise as_matrix_error(e, f"Cannot list the public rooms of {server}") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("chunk"), list):
            raise MatrixError(502, "M_UNKNOWN", "The remote server sent a malformed room list")
        return answer

    # -- spaces -------------------------------------------------------------------
    async def hierarchy(self, servers: list[str], room_id: str,
                        suggested_only: bool) -> dict[str, Any] | None:
        """A remote space's summary and children from the first of ``servers``
        that answers, None if none does."""
        for server in servers:
            if not isinstance(server, str) or server == self.hs.server_name:
                continue
            try:
                answer = await self.client.get_json(
                    server, f"{FEDERATION_V1}/hierarchy/{quoted(room_id)}",
                    {"suggested_only": "true" if suggested_only else "false"},
                    timeout=QUERY_TIMEOUT_S)
            except (FederationError, FederationUnreachable) as e:
                logger.info("hierarchy of %s from %s failed: %s", room_id, server, e)
                continue
            room = answer.get("room") if isinstance(answer, dict) else None
            if isinstance(room, dict) and room.get("room_id") == room_id:
                return dict(answer)
        return None

    # -- device keys and one-time keys ---------------------------------------------
    async def per_server(self, servers: dict[str, T], timeout_s: float,
                         ask: Callable[[str, T], Awaitable[dict[str, Any]]],
                         ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """``ask(server, what)`` for every server at once, each within
        ``timeout_s``: (answers by server, failures by server)."""
        names = list(servers)

        async def one(server: str) -> dict[str, Any]:
            return await asyncio.wait_for(ask(server, servers[server]), timeout_s)

        results = await asyncio.gather(*(one(s) for s in names), return_exceptions=True)
        answers: dict[str, dict[str, Any]] = {}
        failures: dict[str, Any] = {}
        for server, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, FederationError | FederationUnreachable
                                  | TimeoutError | MatrixError):
                    logger.warning("keys request to %s failed", server, exc_info=result)
                failures[server] = failure(result)
            else:
                answers[server] = result
        return answers, failures

    async def query_keys(self, server: str, wanted: dict[str, list[str]],
                         timeout_s: float) -> dict[str, Any]:
        answer = await self.client.post_json(server, f"{FEDERATION_V1}/user/keys/query",
                                             {"device_keys": wanted}, timeout=timeout_s)
        if not isinstance(answer, dict):
            raise MatrixError(502, "M_UNKNOWN", "malformed keys answer")
        return answer

    async def claim_keys(self, server: str, wanted: dict[str, dict[str, str]],
                         timeout_s: float) -> dict[str, Any]:
        answer = await self.client.post_json(server, f"{FEDERATION_V1}/user/keys/claim",
                                             {"one_time_keys": wanted}, timeout=timeout_s)
        if not isinstance(answer, dict):
            raise MatrixError(502, "M_UNKNOWN", "malformed claim answer")
        return answer

    async def user_devices(self, user_id: str) -> dict[str, Any]:
        answer = await self.client.get_json(
            server_of(user_id), f"{FEDERATION_V1}/user/devices/{quoted(user_id)}",
            timeout=QUERY_TIMEOUT_S)
        if not isinstance(answer, dict):
            raise MatrixError(502, "M_UNKNOWN", "malformed device list")
        return answer

    # -- media --------------------------------------------------------------------
    async def download_media(self, server: str, media_id: str, *, max_size: int,
                             timeout_ms: int | None) -> RemoteFile:
        """The bytes of ``mxc://server/media_id``: the authenticated federation
        endpoint first, the legacy media endpoint if the remote does not have it."""
        self._check_remote(server)
        args: dict[str, str | list[str]] = {}
        if timeout_ms is not None:
            args["timeout_ms"] = str(timeout_ms)
        try:
            body, headers = await self.client.get_file(
                server, f"{FEDERATION_V1}/media/download/{quoted(media_id)}", args,
                max_size=max_size)
            content_type = _header(headers, "Content-Type") or ""
            try:
                return media_from_multipart(body, content_type)
            except MediaRedirect as redirect:
                return await self._follow_media_redirect(server, redirect.location, max_size)
        except FederationError as e:
            if not _means_unsupported(e):
                raise as_matrix_error(e, "Remote media not found") from None
            logger.info("%s has no federation media endpoint (%s): trying the legacy one",
                        server, e.code)
        except FederationUnreachable as e:
            raise as_matrix_error(e, "Remote media not found") from None
        except ValueError as e:
            logger.info("bad multipart media from %s: %s: trying the legacy endpoint", server, e)
        legacy_args: dict[str, str | list[str]] = {"allow_remote": "false", **args}
        try:
            body, headers = await self.client.get_file(
                server, f"/_matrix/media/v3/download/{quoted(server)}/{quoted(media_id)}",
                legacy_args, max_size=max_size)
        except (FederationError, FederationUnreachable) as e:
            raise as_matrix_error(e, "Remote media not found") from None
        return RemoteFile(body, _header(headers, "Content-Type"),
                          filename_from_disposition(_header(headers, "Content-Disposition")))

    async def _follow_media_redirect(self, server: str, location: str,
                                     max_size: int) -> RemoteFile:
        """The file a federation media answer points at with ``Location``:
        fetched without our signature, and never from an address outbound
        federation may not reach (``federation_ip_range_blocklist``)."""
        from myelin.media import preview

        config = self.hs.config.federation
        policy = preview.AddressPolicy(config.ip_range_blocklist, config.ip_range_whitelist)
        try:
            fetched = await preview.fetch(location, policy, max_size, [],
                                          verify_tls=config.verify_certificates)
        except (preview.PreviewBlocked, preview.PreviewDnsBlocked, preview.PreviewFailed) as e:
            logger.info("media redirect of %s to %s failed: %s", server, location, e)
            raise MatrixError(502, "M_UNKNOWN", "Remote media could not be fetched") from None
        except preview.PreviewTooLarge:
            raise MatrixError(502, "M_TOO_LARGE", "Remote media is too large") from None
        if fetched.status != 200:
            raise MatrixError(502, "M_UNKNOWN",
                              f"Remote media redirect answered {fetched.status}")
        return RemoteFile(fetched.body, fetched.content_type or None, None)


class MediaRedirect(Exception):
    """A federation media answer whose file part is a ``Location`` to fetch."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def _header(headers: dict[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _means_unsupported(e: FederationError) -> bool:
    """A remote that does not serve the federation media endpoints at all."""
    if e.code == 404:
        return e.errcode != "M_NOT_FOUND"
    return e.code in (400, 401, 403, 405, 501)


def multipart_boundary(content_type: str) -> bytes:
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/mixed":
        raise ValueError(f"not multipart/mixed: {content_type!r}")
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if value:
                return value.encode("latin-1")
    raise ValueError("multipart/mixed without a boundary")


def split_multipart(body: bytes, boundary: bytes) -> list[tuple[dict[str, str], bytes]]:
    """The parts (headers, content) of a multipart body (RFC 2046 §5.1.1)."""
    delimiter = b"--" + boundary
    if body.startswith(delimiter):
        position = len(delimiter)
    else:
        first = body.find(b"\r\n" + delimiter)
        if first < 0:
            raise ValueError("no boundary in the body")
        position = first + 2 + len(delimiter)
    parts: list[tuple[dict[str, str], bytes]] = []
    while True:
        if body[position:position + 2] == b"--":
            return parts
        line_end = body.find(b"\r\n", position)
        if line_end < 0:
            raise ValueError("truncated multipart body")
        start = line_end + 2
        end = body.find(b"\r\n" + delimiter, start)
        if end < 0:
            raise ValueError("unterminated multipart part")
        parts.append(_parse_part(body[start:end]))
        position = end + 2 + len(delimiter)


def _parse_part(raw: bytes) -> tuple[dict[str, str], bytes]:
    if raw.startswith(b"\r\n"):
        return {}, raw[2:]
    head, sep, content = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("a part without a header block end")
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers, content


def media_from_multipart(body: bytes, content_type: str) -> RemoteFile:
    """The file of a federation media response: its second part (the first is
    JSON metadata). A part that redirects raises :class:`MediaRedirect`;
    anything malformed ValueError (the caller tries the legacy endpoint)."""
    parts = split_multipart(body, multipart_boundary(content_type))
    if len(parts) != 2:
        raise ValueError(f"{len(parts)} parts, not 2")
    headers, content = parts[1]
    if "location" in headers:
        location = headers["location"]
        if not location.startswith(("https://", "http://")):
            raise ValueError(f"a redirect to {location!r}")
        raise MediaRedirect(location)
    return RemoteFile(content, headers.get("content-type"),
                      filename_from_disposition(headers.get("content-disposition")))


def filename_from_disposition(value: str | None) -> str | None:
    """The file name of a Content-Disposition header (``filename*=`` first)."""
    if not value:
        return None
    from urllib.parse import unquote

    plain = None
    for param in value.split(";")[1:]:
        name, _, raw = param.strip().partition("=")
        name = name.strip().lower()
        raw = raw.strip()
        if name == "filename*" and "''" in raw:
            return unquote(raw.split("''", 1)[1]) or None
        if name == "filename":
            plain = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
    return plain or None
