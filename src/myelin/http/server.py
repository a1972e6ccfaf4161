"""The HTTP listeners of a process and the dispatcher behind them.

Each configured listener gets an aiohttp low-level server whose single
handler looks the request up in the :class:`Router` built from the
resources that listener serves. Errors become Matrix error JSON here, and
CORS headers are added to every response, so servlets only return data.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from myelin.config import ListenerConfig
from myelin.domain import MatrixError, unrecognized
from myelin.http.request import Request
from myelin.http.routing import Route, Router
from myelin.logs import current_request

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("myelin.access")

# Whether the listener trusts X-Forwarded-For, stored on the request.
X_FORWARDED_KEY: Any = (web.RequestKey("myelin.x_forwarded", bool)
                        if hasattr(web, "RequestKey") else "myelin.x_forwarded")

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization, Date",
    "Access-Control-Expose-Headers": "Synapse-Trace-Id, Server",
}


def json_response(status: int, body: Any) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=CORS_HEADERS,
    )


class HttpDispatcher:
    """Turns a raw request into a servlet call and its result into a response."""

    def __init__(self, hs: HomeServer, routes: Iterable[Route], *,
                 x_forwarded: bool = False) -> None:
        self.hs = hs
        self.router = Router(routes)
        self.x_forwarded = x_forwarded

    async def __call__(self, raw: web.BaseRequest) -> web.StreamResponse:
        start = time.monotonic()
        status = 500
        metrics = self.hs.http_metrics
        # Each request runs in its own task: the log records it causes say which.
        request_id = metrics.next_request_id(raw.method)
        current_request.set(f"{request_id} {raw.path}")
        route = self._route(raw)
        servlet = _servlet_name(raw.method, route)
        metrics.started(servlet)
        try:
            response = await self._dispatch(raw, route)
            status = response.status
            return response
        except MatrixError as e:
            status = e.status
            return json_response(e.status, e.to_json())
        except asyncio.CancelledError:
            status = 499
            raise
        except web.HTTPException:
            raise
        except Exception:
            logger.exception("error handling %s %s", raw.method, raw.path)
            return json_response(500, {"errcode": "M_UNKNOWN", "error": "Internal server error"})
        finally:
            metrics.finished(servlet, raw.method, status, time.monotonic() - start)
            if access_logger.isEnabledFor(logging.INFO):
                access_logger.info("%s %s %s %d %.1fms", raw.remote, raw.method,
                                   _redact_token(raw.path_qs), status,
                                   (time.monotonic() - start) * 1000)

    def _route(self, raw: web.BaseRequest) -> tuple[Route | None, dict[str, str], bool]:
        if raw.method == "OPTIONS":
            return None, {}, True
        return self.router.match(raw.method, raw.raw_path.split("?", 1)[0])

    async def _dispatch(self, raw: web.BaseRequest,
                        matched: tuple[Route | None, dict[str, str], bool],
                        ) -> web.StreamResponse:
        # Whether this listener sits behind a proxy whose X-Forwarded-For we trust.
        raw[X_FORWARDED_KEY] = self.x_forwarded
        if raw.method == "OPTIONS":
            return json_response(200, {})
        route, params, path_known = matched
        if route is None:
            raise unrecognized(405 if path_known else 404)
        result = await route.handler(Request(self.hs, raw, params))
        if isinstance(result, web.StreamResponse):
            # A servlet's own response (a file, a stream): it starts sending
            # only after we return it, so the CORS headers still go in.
            if not result.prepared:
                for name, value in CORS_HEADERS.items():
                    result.headers.setdefault(name, value)
            return result
        if isinstance(result, tuple):
            return json_response(result[0], result[1])
        return json_response(200, result)


def _servlet_name(method: str, matched: tuple[Route | None, dict[str, str], bool]) -> str:
    """``<module>.<function>`` of the servlet, e.g. ``sync.sync``: few, stable
    label values (never the path, which holds ids)."""
    route = matched[0]
    if route is None:
        return "options" if method == "OPTIONS" else "unmatched"
    handler = route.handler
    module = getattr(handler, "__module__", "") or ""
    return f"{module.rsplit('.', 1)[-1]}.{getattr(handler, '__name__', 'servlet')}"


def _redact_token(path_qs: str) -> str:
    if "access_token=" not in path_qs:
        return path_qs
    head, _, tail = path_qs.partition("access_token=")
    _, amp, rest = tail.partition("&")
    return f"{head}access_token=<redacted>{amp}{rest}"


class ListenError(OSError):
    """A listener could not bind; ``str()`` is the one-line reason, without ``[Errno n]``."""

    def __str__(self) -> str:
        return str(self.strerror)


def server_ssl_context(certificate_path: str, private_key_path: str) -> ssl.SSLContext:
    """The TLS context of a ``tls: true`` listener (the certificate file may
    hold the chain after the leaf)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate_path, private_key_path)
    return context


class Listener:
    """One bound HTTP listener (a port, or a unix socket)."""

    def __init__(self, config: ListenerConfig, dispatcher: HttpDispatcher,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self.dispatcher = dispatcher
        # Set for a `tls: true` listener: it serves HTTPS.
        self.ssl_context = ssl_context
        self._runner: web.ServerRunner | None = None
        self.bound: list[str] = []

    async def start(self) -> None:
        server = web.Server(self.dispatcher, access_log=None)
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=10.0)
        await runner.setup()
        self._runner = runner
        if self.config.path:
            site: web.BaseSite = web.UnixSite(runner, self.config.path)
            await site.start()
            self.bound.append(self.config.path)
            return
        for address in self.config.bind_addresses:
            site = web.TCPSite(runner, address, self.config.port, reuse_address=True,
                               ssl_context=self.ssl_context)
            try:
                await site.start()
            except OSError as e:
                # "::" and "0.0.0.0" together fail on hosts where v6 sockets
                # already take the v4 wildcard; one of them is enough.
                if address in ("::", "0.0.0.0") and self.bound:
                    continue
                if address == "::" and len(self.config.bind_addresses) > 1:
                    continue
                reason = os.strerror(e.errno) if e.errno else str(e)
                raise ListenError(e.errno, f"cannot listen on {address}:{self.config.port}: "
                                           f"{reason}") from e
            self.bound.append(f"{address}:{self.config.port}")

    @property
    def port(self) -> int | None:
        if self._runner is None:
            return self.config.port
        for addr in self._runner.addresses:
            if isinstance(addr, tuple):
                return int(addr[1])
        return self.config.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
