"""``myelin routes``: the reverse-proxy side of a fleet, generated from the routes.

``myelin routes --nginx`` turns a :class:`~myelin.app.routing_plan.RoutingPlan`
into an nginx config (an include for the ``http {}`` block, or with ``--full``
a whole ``nginx.conf``); ``myelin routes --check`` prints the plan as a table.

The nginx config is written so that it cannot drift from the code:

* one ``location ~ regex`` per group of routes with the same destination,
  the regexes being the routes' own ``PathPattern.proxy_regex()``; a path
  with routes of different destinations per method picks by
  ``$request_method`` (a ``map``); only paths no route declares reach the
  final ``location /`` (main);
* ``/sync`` and the other user-affine routes hash on the localpart inside our
  ``syt_<localpart>_<random>_<crc>`` access tokens (header or
  ``access_token`` parameter), room-affine routes on the room in the path;
* ``proxy_pass`` carries no URI part, so the request line is forwarded as the
  client sent it (``%2F`` stays ``%2F``); upstreams keep connections alive
  (HTTP/1.1, empty ``Connection``); ``proxy_read_timeout`` outlasts the
  longest ``/sync`` long-poll.

Note that nginx matches locations against the *decoded* path: a path
parameter holding an encoded ``/`` (say a state key ``a%2Fb``) does not match
its route's location and falls through to main, which serves every route.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO
from urllib.parse import urlsplit

from myelin.app.roles import MAIN
from myelin.app.routing_plan import (
    Balance,
    ProcessInfo,
    RoutingPlan,
    Target,
    compact_roles,
    display_name,
    local_host,
    plan_routes,
)
from myelin.config import HomeserverConfig, ListenerConfig
from myelin.http.routing import Route

# The longest /sync long-poll a client may ask for is 5 minutes; nginx must
# wait longer than that for the answer.
PROXY_READ_TIMEOUT_S = 330
KEEPALIVE_CONNECTIONS = 32

# Paths with their own resource that should reach main's listener for it when
# that is not main's client listener.
_FALLBACK_PREFIXES = (("/_matrix/federation/", "federation"), ("/_matrix/key/", "keys"),
                      ("/_matrix/media/", "media"))

# The destination of the location that refuses the private routes.
BLOCKED = "-"
_UNRECOGNIZED = '{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}'

_TOKEN_TAIL = "_[A-Za-z0-9]{20}_[A-Za-z0-9]{6}$"
USER_VAR = "$myelin_user"
ROOM_VAR = "$myelin_room"

_BALANCE_WORDS = {"round_robin": "round_robin", "user": "by_user", "room": "by_room",
                  "persister": "persister"}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def upstream_address(process: ProcessInfo, listener: ListenerConfig,
                     config: HomeserverConfig) -> str:
    """What nginx's ``server`` line names for one listener of one process."""
    if listener.path is not None:
        return f"unix:{listener.path}"
    host = local_host(listener)
    specific = [a for a in listener.bind_addresses if a not in ("0.0.0.0", "::")]
    located = config.instance_map.get(process.name)
    if not specific and located is not None and located.path is None and located.host.lower() \
            not in ("localhost", "127.0.0.1", "::1", "[::1]", "ip6-localhost"):
        host = located.host  # listening on every address of another machine
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{listener.port}"


# nginx's limit on one config parameter is 4096 bytes; a location's regex
# stays well below it (with its quotes and escapes).
MAX_LOCATION_REGEX = 3500


@dataclass(frozen=True)
class Upstream:
    name: str
    servers: tuple[str, ...]
    members: tuple[str, ...]   # instance names, for comments
    balance: Balance

    def render(self) -> list[str]:
        how = {"one": "", "round_robin": "; round robin",
               "user": "; hashed by the user of the access token",
               "room": "; hashed by the room in the path",
               "persister": "; the room's persister (roles.shard_index)"}[self.balance]
        lines = [f"upstream {self.name} {{",
                 f"    # {', '.join(display_name(m) for m in self.members)}{how}"]
        if self.balance == "user":
            lines.append(f"    hash {USER_VAR} consistent;")
        elif self.balance == "room":
            lines.append(f"    hash {ROOM_VAR} consistent;")
        elif self.balance == "persister":
            # Plain (not consistent) hash: CRC-32 of the room, as Myelin shards
            # rooms; the servers are the events writers in stream_writers order.
            lines.append(f"    hash {ROOM_VAR};")
        lines += [f"    server {server};" for server in self.servers]
        lines += [f"    keepalive {KEEPALIVE_CONNECTIONS};", "}"]
        return lines


@dataclass
class Location:
    regexes: list[str]        # proxy regexes (each ^...$)
    destination: str          # an upstream name or a $variable
    routes: list[str]         # route descriptions, for comments

    @property
    def regex(self) -> str:
        if len(self.regexes) == 1:
            return self.regexes[0]
        bodies = [r.removeprefix("^").removesuffix("$") for r in self.regexes]
        return "^(?:" + "|".join(bodies) + ")$"


@dataclass(frozen=True)
class VariableMap:
    source: str               # e.g. $request_method, $arg_since
    variable: str             # e.g. $myelin_method_1
    default: str
    values: tuple[tuple[str, str], ...]

    def render(self) -> list[str]:
        lines = [f"map {self.source} {self.variable} {{", f"    default {self.default};"]
        for key, value in self.values:
            lines.append(f'    "{key}" {value};')
        lines.append("}")
        return lines

    def resolve(self, key: str) -> str:
        return dict(self.values).get(key, self.default)


class NginxConfig:
    """The nginx configuration of a plan, as data (for tests) and as text."""

    def __init__(self, plan: RoutingPlan, config: HomeserverConfig) -> None:
        self.plan = plan
        self.config = config
        self.upstreams: dict[tuple[tuple[str, ...], Balance], Upstream] = {}
        self.maps: dict[str, VariableMap] = {}     # variable -> map
        self.locations: list[Location] = []
        self.fallbacks: list[tuple[str, str]] = []  # (prefix, upstream name)
        self.unserved: list[Route] = []
        self.private: list[Route] = []
        self._build()

    # -- building -----------------------------------------------------------------
    def _upstream(self, target: Target, resource: str) -> str:
        servers: list[str] = []
        for name in target.processes:
            process = self.plan.processes[name]
            listener = process.listener_for(resource)
            if listener is None:  # cannot happen: the plan only targets servers
                raise ValueError(f"{name} has no listener for {resource}")
            servers.append(upstream_address(process, listener, self.config))
        key = (tuple(servers), target.balance)
        existing = self.upstreams.get(key)
        if existing is not None:
            return existing.name
        if target.balance == "one":
            base = f"myelin_{_safe(display_name(target.processes[0]))}"
        else:
            base = f"myelin_{_BALANCE_WORDS[target.balance]}"
        taken = {u.name for u in self.upstreams.values()}
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        self.upstreams[key] = Upstream(name, tuple(servers), target.processes, target.balance)
        return name

    def _map(self, source: str, prefix: str, default: str,
             values: list[tuple[str, str]]) -> str:
        for existing in self.maps.values():
            if (existing.source, existing.default, existing.values) == (
                    source, default, tuple(values)):
                return existing.variable
        variable = f"${prefix}_{sum(1 for v in self.maps if v.startswith('$' + prefix)) + 1}"
        self.maps[variable] = VariableMap(source, variable, default, tuple(values))
        return variable

    def _build(self) -> None:
        per_regex: dict[str, dict[str, str]] = {}
        notes: dict[str, list[str]] = {}
        blocked = Location([], BLOCKED, [])
        for decision in self.plan.decisions:
            route = decision.route
            if decision.private:
                self.private.append(route)
                # The whole prefix, not just the route: whatever nginx decodes
                # a path under it to, it must not reach a process.
                regex = "^" + re.escape(route.pattern.prefix) + "(?:/.*)?$"
                if regex not in blocked.regexes:
                    blocked.regexes.append(regex)
                blocked.routes.append(f"{route.describe()} -> not exposed (private "
                                      f"{route.resource} resource)")
                continue
            if decision.target is None:
                self.unserved.append(route)
                continue
            destination = self._upstream(decision.target, route.resource)
            if decision.initial is not None:
                initial = self._upstream(decision.initial, route.resource)
                destination = self._map("$arg_since", "myelin_sync", destination,
                                        [("", initial)])
            regex = route.pattern.proxy_regex()
            per_regex.setdefault(regex, {})[route.method] = destination
            notes.setdefault(regex, []).append(
                f"{route.describe()} -> {decision.target.describe()}"
                + (f"; without since: {decision.initial.describe()}" if decision.initial
                   else ""))
        grouped: dict[str, Location] = {}
        for regex, methods in per_regex.items():
            if "GET" in methods and "HEAD" not in methods:
                methods = {**methods, "HEAD": methods["GET"]}
            distinct = list(dict.fromkeys(methods.values()))
            if len(distinct) == 1:
                destination = distinct[0]
            else:
                default = methods.get("GET", distinct[0])
                values = [(m, d) for m, d in sorted(methods.items()) if d != default]
                destination = self._map("$request_method", "myelin_method", default, values)
            location = grouped.get(destination)
            if location is None:
                location = grouped[destination] = Location([], destination, [])
                self.locations.append(location)
            elif len(location.regex) + len(regex) > MAX_LOCATION_REGEX:
                # nginx refuses longer parameters: continue in a location right
                # after this one, so the order regexes are tried in is unchanged.
                follow = Location([], destination, [])
                self.locations.insert(self.locations.index(location) + 1, follow)
                location = grouped[destination] = follow
            location.regexes.append(regex)
            location.routes.extend(notes[regex])
        if blocked.regexes:
            # First, so no public location can ever shadow it.
            self.locations.insert(0, blocked)
        main = self.plan.processes.get(MAIN)
        client = main.listener_for("client") if main is not None else None
        if main is not None and client is not None:
            home = Target((MAIN,), "one", "fallback")
            self.fallbacks.append(("/", self._upstream(home, "client")))
            for prefix, resource in _FALLBACK_PREFIXES:
                listener = main.listener_for(resource)
                if listener is not None and listener is not client:
                    self.fallbacks.append((prefix, self._upstream(home, resource)))
        elif main is not None and main.http_listeners():
            listener = main.http_listeners()[0]
            resource = next(iter(sorted(listener.resources)), "health")
            self.fallbacks.append(("/", self._upstream(Target((MAIN,), "one", "fallback"),
                                                       resource)))

    # -- what nginx would do (for tests and --check) -------------------------------
    def resolve(self, method: str, path: str, since: bool = True) -> Upstream | None:
        """The upstream nginx picks for ``method path`` (a decoded path)."""
        destination: str | None = None
        for location in self.locations:
            if re.match(location.regex, path):
                destination = location.destination
                break
        if destination is None:
            prefix = max((p for p, _ in self.fallbacks if path.startswith(p)), key=len,
                         default=None)
            destination = dict(self.fallbacks).get(prefix) if prefix else None
        while destination is not None and destination.startswith("$"):
            variable_map = self.maps[destination]
            key = method if variable_map.source == "$request_method" else (
                "x" if since else "")
            destination = variable_map.resolve(key)
        if destination is None or destination == BLOCKED:
            return None
        return next(u for u in self.upstreams.values() if u.name == destination)

    def blocked(self, path: str) -> bool:
        """Whether nginx refuses ``path`` (a private route) instead of proxying it."""
        for location in self.locations:
            if re.match(location.regex, path):
                return location.destination == BLOCKED
        return False

    # -- text ----------------------------------------------------------------------
    def _uses(self, balance: Balance) -> bool:
        return any(u.balance == balance for u in self.upstreams.values())

    def render_http(self, listen: str = "8008", sources: Sequence[str] = ()) -> str:
        """The ``http {}``-level include: maps, upstreams and the server."""
        out: list[str] = [
            "# Generated by `myelin routes --nginx`" + (f" from {', '.join(sources)}"
                                                       if sources else "") + ".",
            "# Regenerate it after changing the fleet or upgrading Myelin; do not edit it.",
            "",
        ]
        if self._uses("user"):
            out += [
                "# The user of a request: the localpart inside our access tokens",
                "# (syt_<localpart>_<random>_<crc>), from the Authorization header or the",
                "# access_token parameter; any other token hashes as itself.",
                "map $arg_access_token $myelin_user_from_query {",
                "    default $arg_access_token;",
                f'    "~^syt_(?<myelin_query_user>.+){_TOKEN_TAIL}" $myelin_query_user;',
                "}",
                f"map $http_authorization {USER_VAR} {{",
                "    default $http_authorization;",
                f'    "~*^Bearer syt_(?<myelin_header_user>.+){_TOKEN_TAIL}" '
                "$myelin_header_user;",
                '    "" $myelin_user_from_query;',
                "}",
                "",
            ]
        if self._uses("room") or self._uses("persister"):
            out += [
                "# The room of a request: the path segment after /rooms/ (or /join/, /knock/).",
                f"map $uri {ROOM_VAR} {{",
                '    default "";',
                '    "~^/_matrix/client/(?:api/v1|[^/]+)/(?:rooms|join|knock)/'
                '(?<myelin_room_id>[^/]+)" $myelin_room_id;',
                "}",
                "",
            ]
        for variable_map in self.maps.values():
            if variable_map.source == "$arg_since":
                out.append("# /sync without `since` is an initial sync: it has its own workers.")
            else:
                out.append("# One path, different destinations per method.")
            out += variable_map.render()
            out.append("")
        for upstream in self.upstreams.values():
            out += upstream.render()
            out.append("")
        names = [urlsplit(self.config.public_baseurl).hostname or "_"]
        body_size = max(self.config.max_upload_size, self.config.max_request_body_size)
        out += [
            "server {",
            f"    listen {listen};",
            f"    server_name {' '.join(dict.fromkeys(names))};",
            "",
            f"    client_max_body_size {body_size};",
            "    proxy_http_version 1.1;",
            '    proxy_set_header Connection "";',
            "    proxy_set_header Host $host;",
            "    # Myelin trusts the first address of X-Forwarded-For on x_forwarded",
            "    # listeners: set it, do not append to what the client sent.",
            "    proxy_set_header X-Forwarded-For $remote_addr;",
            "    proxy_set_header X-Forwarded-Proto $scheme;",
            f"    proxy_read_timeout {PROXY_READ_TIMEOUT_S}s;",
            f"    proxy_send_timeout {PROXY_READ_TIMEOUT_S}s;",
            "",
        ]
        for location in self.locations:
            for note in location.routes:
                out.append(f"    # {note}")
            if location.destination == BLOCKED:
                out += ["    # Replication and metrics are for the fleet and Prometheus, on their",
                        "    # own listeners: never through the public proxy.",
                        f'    location ~ "{location.regex}" {{',
                        "        default_type application/json;",
                        f"        return 404 '{_UNRECOGNIZED}';",
                        "    }", ""]
                continue
            out += [f'    location ~ "{location.regex}" {{',
                    f"        proxy_pass http://{location.destination};",
                    "    }", ""]
        for route in self.unserved:
            out.append(f"    # not served by any process (no listener has its resource "
                       f"{route.resource}): {route.describe()}")
        if self.unserved:
            out.append("")
        for prefix, destination in self.fallbacks:
            what = "everything no route above declares" if prefix == "/" else (
                f"{prefix}... that no route above declares")
            out += [f"    # {what}: the main process",
                    f"    location {prefix} {{",
                    f"        proxy_pass http://{destination};",
                    "    }"]
        out.append("}")
        return "\n".join(out) + "\n"

    def render_full(self, prefix: str, listen: str = "8008", user: str | None = None,
                    sources: Sequence[str] = ()) -> str:
        """A whole nginx.conf whose files all live under ``prefix``, for
        ``nginx -p PREFIX -c nginx.conf`` run by an unprivileged user."""
        prefix = os.path.abspath(prefix)
        head = ["# A complete nginx.conf generated by `myelin routes --nginx --full`.",
                f"# Run it with: nginx -p {prefix} -e {prefix}/error.log -c nginx.conf"]
        if user:
            head.append(f"user {user};")
        head += [
            "worker_processes auto;",
            f"pid {prefix}/nginx.pid;",
            f"error_log {prefix}/error.log;",
            "",
            "events {",
            "    worker_connections 1024;",
            "}",
            "",
            "http {",
            f"    access_log {prefix}/access.log;",
            f"    client_body_temp_path {prefix}/client_body_temp;",
            f"    proxy_temp_path {prefix}/proxy_temp;",
            f"    fastcgi_temp_path {prefix}/fastcgi_temp;",
            f"    uwsgi_temp_path {prefix}/uwsgi_temp;",
            f"    scgi_temp_path {prefix}/scgi_temp;",
            "",
        ]
        body = self.render_http(listen, sources)
        indented = ["    " + line if line else "" for line in body.splitlines()]
        return "\n".join([*head, *indented, "}"]) + "\n"


# -- --check ----------------------------------------------------------------------------

def _declares(route: Route) -> str:
    bits = []
    if route.stream:
        bits.append(f"stream={route.stream}")
    if route.affinity:
        bits.append(f"affinity={route.affinity}")
    if route.main_only:
        bits.append("main_only")
    return " ".join(bits) or "-"


def check_table(plan: RoutingPlan) -> str:
    header = ["ROUTE", "DECLARES", "SERVED BY", "PROXY SENDS TO"]
    rows = []
    for decision in plan.decisions:
        served = ", ".join(display_name(p) for p in decision.served_by) or "nobody"
        if decision.private:
            sends = f"- (private {decision.route.resource} resource: not proxied)"
        elif decision.target is None:
            sends = "- (no listener has its resource: main answers 404)"
        else:
            sends = decision.target.describe()
            if decision.initial is not None:
                sends += f"; without since: {decision.initial.describe()}"
        rows.append([decision.route.describe(), _declares(decision.route), served, sends])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
             for row in [header, *rows]]
    processes = ", ".join(f"{display_name(p.name)} ({compact_roles(p.roles.describe())})"
                          for p in plan.processes.values())
    count = len(plan.processes)
    lines += ["", f"{len(plan.decisions)} routes over {count} process"
                  f"{'es' if count != 1 else ''}: {processes}"]
    unserved = plan.unserved()
    if unserved:
        lines.append(f"{len(unserved)} routes are served by no process: "
                     f"{', '.join(d.route.describe() for d in unserved)}")
    return "\n".join(lines)


def routes_command(config_paths: Sequence[str], workers_dir: str | None, *, nginx: bool,
                   listen: str = "8008", full: bool = False, prefix: str | None = None,
                   user: str | None = None, out: IO[str] | None = None,
                   err: IO[str] | None = None) -> int:
    from myelin.app.fleet import FleetError, load_fleet

    out = out or sys.stdout
    err = err or sys.stderr
    try:
        fleet = load_fleet(config_paths, workers_dir)
    except FleetError as e:
        print(f"myelin: {e}", file=err)
        return 1
    if fleet.errors:
        for line in fleet.errors:
            print(f"myelin: {line}", file=err)
        return 1
    plan = plan_routes([p.info for p in fleet.processes])
    main = fleet.processes[0].config
    if not nginx:
        print(check_table(plan), file=out)
        return 0
    sources = [*config_paths, *([workers_dir + "/*.yaml"] if workers_dir else [])]
    generated = NginxConfig(plan, main)
    if full:
        text = generated.render_full(prefix or os.getcwd(), listen, user, sources)
    else:
        text = generated.render_http(listen, sources)
    out.write(text)
    return 0
