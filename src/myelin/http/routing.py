"""Declarative routes: each servlet states its path patterns once.

A pattern is written as a path with ``{name}`` placeholders and a set of
version prefixes; from it we derive the matching regex used here, and the
plain regex a reverse proxy needs (``proxy_regex``), so routing tables and
generated nginx config never drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

if TYPE_CHECKING:
    from myelin.http.request import Request

Handler = Callable[["Request"], Awaitable[Any]]

_PLACEHOLDER = re.compile(r"/\{([A-Za-z_]+)(\??)\}")

CLIENT_VERSIONS = ("r0", "v3")
# Endpoints that clients (and the seed's proxy patterns) still reach under
# the pre-r0 prefix as well.
LEGACY = ("api/v1", "r0", "v3")


@dataclass(frozen=True)
class PathPattern:
    """A family of URL paths: ``/_matrix/client/{r0,v3}/rooms/{roomId}/send``."""

    prefix: str           # e.g. "/_matrix/client"
    versions: tuple[str, ...]  # e.g. ("r0", "v3"); empty for unversioned paths
    path: str             # e.g. "/rooms/{roomId}/send/{eventType}/{txnId}"

    def _body(self, named: bool) -> str:
        def repl(m: re.Match[str]) -> str:
            name, optional = m.group(1), m.group(2)
            group = f"(?P<{name}>[^/]*)" if named else "[^/]*"
            if optional:
                return f"(?:/{group})?"
            return f"/(?P<{name}>[^/]+)" if named else "/[^/]+"

        out, last = [], 0
        for m in _PLACEHOLDER.finditer(self.path):
            out.append(re.escape(self.path[last:m.start()]))
            out.append(repl(m))
            last = m.end()
        out.append(re.escape(self.path[last:]))
        return "".join(out)

    def _version_part(self) -> str:
        if not self.versions:
            return ""
        return "/(?:" + "|".join(re.escape(v) for v in self.versions) + ")"

    def regex(self) -> str:
        return "^" + re.escape(self.prefix) + self._version_part() + self._body(True) + "$"

    def proxy_regex(self) -> str:
        """The same pattern as a PCRE a reverse proxy can use (no named groups)."""
        versions = ""
        if self.versions:
            versions = "/(" + "|".join(self.versions) + ")"
        return "^" + self.prefix + versions + self._body(False) + "$"


def client_path(path: str, versions: Iterable[str] = CLIENT_VERSIONS) -> PathPattern:
    return PathPattern("/_matrix/client", tuple(versions), path)


def client_v1_path(path: str) -> PathPattern:
    return PathPattern("/_matrix/client", ("v1",), path)


def plain_path(prefix: str, path: str = "") -> PathPattern:
    return PathPattern(prefix, (), path)


Affinity = Literal["user", "room"]
AFFINITIES = ("user", "room")


@dataclass
class Route:
    """One method on one path pattern, and what a fleet needs to know about it.

    ``stream``: the stream this route's write lands on (``"typing"``,
    ``"events"``...), so a proxy can send it straight to that stream's writer.
    ``affinity``: requests of one ``"user"`` (by access token) or one
    ``"room"`` (by the room in the path) should reach the same process.
    ``main_only``: only the main process can serve it, because it depends on
    memory that lives in main across requests (e.g. registration nonces).
    """

    method: str
    pattern: PathPattern
    handler: Handler
    resource: str
    stream: str | None = None
    affinity: Affinity | None = None
    main_only: bool = False
    regex: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        if self.affinity is not None and self.affinity not in AFFINITIES:
            raise ValueError(f"affinity must be one of {AFFINITIES} or None, "
                             f"not {self.affinity!r}")
        self.regex = re.compile(self.pattern.regex())

    @property
    def key(self) -> tuple[str, PathPattern]:
        """What identifies the route: its method and pattern."""
        return self.method, self.pattern

    def describe(self) -> str:
        """``PUT /_matrix/client/{api/v1,r0,v3}/rooms/{roomId}/typing/{userId}``."""
        versions = ""
        if self.pattern.versions:
            versions = "/" + (self.pattern.versions[0] if len(self.pattern.versions) == 1
                              else "{" + ",".join(self.pattern.versions) + "}")
        return f"{self.method} {self.pattern.prefix}{versions}{self.pattern.path}"


class RouteTable:
    """The routes one API module declares, grouped under a listener resource."""

    def __init__(self, resource: str) -> None:
        self.resource = resource
        self.routes: list[Route] = []

    def route(self, method: str, *patterns: PathPattern, stream: str | None = None,
              affinity: Affinity | None = None,
              main_only: bool = False) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            for pattern in patterns:
                self.routes.append(Route(method, pattern, handler, self.resource,
                                         stream=stream, affinity=affinity,
                                         main_only=main_only))
            return handler

        return register

    def get(self, *patterns: PathPattern, stream: str | None = None,
            affinity: Affinity | None = None,
            main_only: bool = False) -> Callable[[Handler], Handler]:
        return self.route("GET", *patterns, stream=stream, affinity=affinity,
                          main_only=main_only)

    def post(self, *patterns: PathPattern, stream: str | None = None,
             affinity: Affinity | None = None,
             main_only: bool = False) -> Callable[[Handler], Handler]:
        return self.route("POST", *patterns, stream=stream, affinity=affinity,
                          main_only=main_only)

    def put(self, *patterns: PathPattern, stream: str | None = None,
            affinity: Affinity | None = None,
            main_only: bool = False) -> Callable[[Handler], Handler]:
        return self.route("PUT", *patterns, stream=stream, affinity=affinity,
                          main_only=main_only)

    def delete(self, *patterns: PathPattern, stream: str | None = None,
               affinity: Affinity | None = None,
               main_only: bool = False) -> Callable[[Handler], Handler]:
        return self.route("DELETE", *patterns, stream=stream, affinity=affinity,
                          main_only=main_only)


class Router:
    """Matches (method, raw path) to a route; knows 404 from 405."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        # Bucket by the first four path segments' prefix to avoid trying every regex.
        self._by_prefix: dict[str, list[Route]] = {}
        for route in self.routes:
            self._by_prefix.setdefault(self._key(route.pattern.prefix), []).append(route)

    @staticmethod
    def _key(path: str) -> str:
        parts = path.split("/", 3)
        return "/".join(parts[:3])

    def match(self, method: str, raw_path: str) -> tuple[Route | None, dict[str, str], bool]:
        """Returns (route, params, path_known). ``path_known`` without a route is a 405."""
        candidates = self._by_prefix.get(self._key(raw_path), ())
        path_known = False
        for route in candidates:
            m = route.regex.match(raw_path)
            if m is None:
                continue
            path_known = True
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                params = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
                return route, params, True
        return None, {}, path_known
