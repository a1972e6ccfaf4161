"""HTTP replication: calls between processes that need an answer.

An endpoint is declared once, as a :class:`ReplicationEndpoint` subclass
next to the handler whose writes it carries: its ``NAME``, the ``STREAM``
whose writer serves it, how a payload picks that writer (``shard_key``) and
``handle`` — what the writer runs. :meth:`ReplicationClient.call` is the
client side: it runs ``handle`` in-process when this process is the writer
(the monolith's path) and POSTs to the writer's ``replication`` listener
otherwise, with

- an idempotency key in the path (``/_synapse/replication/<name>/<txn>``):
  a retried call gets the first call's answer;
- retries with backoff on connection errors, bounded so no client request
  hangs on a dead writer;
- ``worker_replication_secret`` as a Bearer token, compared in constant time;
- a fence: the answer says how far the writer's stream got, and the caller
  waits until *it* has received the stream that far, so a client never
  misses its own write on its next read.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
import orjson

from myelin.domain import MatrixError
from myelin.storage.caches import Cache

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)

PATH_PREFIX = "/_synapse/replication"
RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0)
REQUEST_TIMEOUT_S = 30.0
FENCE_TIMEOUT_S = 10.0
RETRY_KEY = "_retry"  # in a retried call's payload: the attempt number

REGISTRY: dict[str, type[ReplicationEndpoint]] = {}


class ReplicationEndpoint:
    NAME: ClassVar[str] = ""
    STREAM: ClassVar[str] = ""
    # The payload field (a room or user id) that picks the writer of a sharded
    # stream; None: the stream's only writer.
    SHARD_BY: ClassVar[str | None] = None
    # True: not a stream write; any instance the caller picks serves it
    # (called with ReplicationClient.call_on).
    ANY_INSTANCE: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.NAME:
            if cls.NAME in REGISTRY and REGISTRY[cls.NAME] is not cls:
                raise ValueError(f"replication endpoint {cls.NAME} declared twice")
            REGISTRY[cls.NAME] = cls

    @classmethod
    def shard_key(cls, payload: Mapping[str, Any]) -> str | None:
        """The room or user this write belongs to (None: the stream's only writer)."""
        return None if cls.SHARD_BY is None else str(payload[cls.SHARD_BY])

    @staticmethod
    async def handle(hs: HomeServer, payload: dict[str, Any]) -> Any:
        raise NotImplementedError


class WriterUnavailable(MatrixError):
    def __init__(self, instance: str, reason: str) -> None:
        super().__init__(502, "M_UNKNOWN", f"The writer {instance} is unreachable: {reason}")


class ReplicationClient:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.instance_name = hs.config.instance_name
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self.calls = 0
        self.remote_calls = 0

    def _session(self, instance: str) -> tuple[aiohttp.ClientSession, str]:
        location = self.hs.config.instance_map.get(instance)
        if location is None:
            raise WriterUnavailable(instance, "not in instance_map")
        session = self._sessions.get(instance)
        if session is None or session.closed:
            connector: aiohttp.BaseConnector
            if location.path:
                connector = aiohttp.UnixConnector(path=location.path)
            else:
                connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=60)
            session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
            self._sessions[instance] = session
        base = f"http://{location.host}" if location.path else location.base_url
        return session, base

    async def call(self, endpoint: type[ReplicationEndpoint], payload: dict[str, Any],
                   *, fence: bool = True) -> Any:
        """Run ``endpoint`` on the writer for ``payload``; return its answer."""
        self.calls += 1
        stream = endpoint.STREAM
        writer = self.hs.roles.writer_for(stream, endpoint.shard_key(payload))
        if writer == self.instance_name:
            result = await endpoint.handle(self.hs, payload)
            position = self.hs.streams.fence_position(stream)
        else:
            self.remote_calls += 1
            answer = await self._post(writer, endpoint.NAME, payload)
            result, position = answer.get("result"), int(answer.get("position", 0))
        if fence and position:
            await self.hs.streams.view.wait_for(stream, writer, position, FENCE_TIMEOUT_S)
        return result

    async def call_on(self, instance: str, endpoint: type[ReplicationEndpoint],
                      payload: dict[str, Any]) -> Any:
        """Run an ``ANY_INSTANCE`` endpoint on ``instance`` (here when it is us)."""
        self.calls += 1
        if instance == self.instance_name:
            return await endpoint.handle(self.hs, payload)
        self.remote_calls += 1
        answer = await self._post(instance, endpoint.NAME, payload)
        return answer.get("result")

    async def _post(self, instance: str, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        session, base = self._session(instance)
        url = f"{base}{PATH_PREFIX}/{name}/{secrets.token_urlsafe(12)}"
        headers = {"Content-Type": "application/json"}
        secret = self.hs.config.worker_replication_secret
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        body = orjson.dumps(payload)
        last_error = ""
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS_S)):
            if delay:
                await asyncio.sleep(delay)
                # The writer may have done it and restarted before answering:
                # a retry says so, so it looks for the first attempt's effects.
                body = orjson.dumps({**payload, RETRY_KEY: attempt})
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    raw = await response.read()
                    answer = orjson.loads(raw) if raw else {}
                    if response.status == 200:
                        return answer  # type: ignore[no-any-return]
                    if isinstance(answer, dict) and "errcode" in answer:
                        raise MatrixError(response.status, answer["errcode"],
                                          answer.get("error", ""), **{
                                              k: v for k, v in answer.items()
                                              if k not in ("errcode", "error")})
                    raise WriterUnavailable(instance, f"HTTP {response.status}")
            except (aiohttp.ClientConnectionError, TimeoutError) as e:
                last_error = str(e) or type(e).__name__
                logger.warning("replication call %s to %s failed (attempt %d): %s", name,
                               instance, attempt + 1, last_error)
        raise WriterUnavailable(instance, last_error)

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


class ReplicationServer:
    """The server side: authenticates, de-duplicates retries, runs the handler."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self._answers: Cache[tuple[str, str], Any] = hs.caches.register(
            "replication_answers", 10_000)
        self._in_flight: dict[tuple[str, str], asyncio.Future[Any]] = {}

    def authorised(self, authorization: str | None) -> bool:
        secret = self.hs.config.worker_replication_secret
        if not secret:
            return True
        expected = f"Bearer {secret}".encode()
        return hmac.compare_digest((authorization or "").encode(), expected)

    async def serve(self, name: str, txn_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        endpoint = REGISTRY.get(name)
        if endpoint is None:
            raise MatrixError(404, "M_UNRECOGNIZED", f"Unknown replication endpoint {name}")
        key = (name, txn_id)
        cached = self._answers.get(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        pending = self._in_flight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)  # type: ignore[no-any-return]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            writer = (self.hs.config.instance_name if endpoint.ANY_INSTANCE else
                      self.hs.roles.writer_for(endpoint.STREAM, endpoint.shard_key(payload)))
            if writer != self.hs.config.instance_name:
                raise MatrixError(409, "M_UNKNOWN",
                                  f"{self.hs.config.instance_name} does not write"
                                  f" {endpoint.STREAM} for this call; {writer} does")
            result = await endpoint.handle(self.hs, payload)
            answer = {"result": result,
                      "position": 0 if endpoint.ANY_INSTANCE else
                      self.hs.streams.fence_position(endpoint.STREAM)}
            self._answers.put(key, answer)
            future.set_result(answer)
            return answer
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as e:
            future.set_exception(e)
            future.exception()  # retrieved: no "never retrieved" warning
            raise
        finally:
            del self._in_flight[key]
