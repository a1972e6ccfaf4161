"""Which process of a fleet serves each declared route, and where a proxy sends it.

Two questions, answered from the same route tables the processes dispatch on:

* **who can serve** a route: the main process serves every route of the
  resources its listeners name; a worker serves the same except the
  ``main_only`` routes;
* **where a reverse proxy should send it** (one choice per route, used by
  ``myelin routes``):

  1. ``/health`` goes to main, so the proxy's health is the server's;
  2. a ``main_only`` route goes to main;
  3. a room's event (``stream="events"``, room affinity) goes straight to
     the room's persister when every events writer has a ``client``
     listener: nginx hashes the room exactly as ``roles.shard_index`` does;
     else
  3b. a route whose write lands on stream S (``Route.stream``) goes to S's
     writer when S has exactly one writer, other than main, and that writer
     serves the route (it has a ``client`` listener): the write happens where
     it arrives. (Any process can take any write — it forwards to the writer
     over HTTP replication — so writes of streams main keeps, such as
     ``device_lists`` on login, still spread over the workers.)
  4. ``/sync`` and ``/events`` go to the *sync pool* hashed by the user of
     the access token; ``/initialSync``, ``/rooms/{roomId}/initialSync`` and
     a ``/sync`` without ``since`` go to the *initial-sync workers* (workers
     whose ``worker_name`` contains ``initial_sync``) if there are any,
     else to the sync pool;
  5. everything else goes to the pool, hashed by user or room when the route
     declares an ``affinity``, round robin otherwise.

  Routes of the private resources (``replication``, ``metrics``) are never
  proxied: other processes and Prometheus call those listeners directly.

  The pool is the workers that serve the route and are not *dedicated*. A
  dedicated worker is a stream writer or an initial-sync worker: it gets its
  own routes only, so a burst of syncs never delays typing notifications or
  event persistence. With no such worker the route goes to main, and if main
  does not serve it either, to the dedicated workers that do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from myelin.app.roles import JOBS, MAIN, WRITER_STREAMS, ProcessRoles
from myelin.app.servlets import all_routes, served_resources
from myelin.config.schema import ListenerConfig
from myelin.http.routing import PathPattern, Route

# "persister": hashed by room exactly as roles.shard_index maps rooms onto the
# events writers, so each request lands on its room's persister.
Balance = Literal["one", "round_robin", "user", "room", "persister"]

# A worker whose name contains this receives the initial syncs (and only them).
INITIAL_SYNC_MARKER = "initial_sync"

_CLIENT = "/_matrix/client"
SYNC_PATHS = frozenset({"/sync", "/events"})
INITIAL_SYNC_PATHS = frozenset({"/initialSync", "/rooms/{roomId}/initialSync"})

# Resources a public reverse proxy must not expose.
PRIVATE_RESOURCES = frozenset({"replication", "metrics"})

# Listener types that speak HTTP (a manhole does not).
HTTP_LISTENER_TYPES = ("http", "metrics")


def compact_roles(roles: Sequence[str]) -> str:
    """``main, writer:events, writer:typing, pusher`` -> ``main, writes events+typing, pusher``;
    every stream or every job is said in one word."""
    writes = [r.removeprefix("writer:") for r in roles if r.startswith("writer:")]
    jobs = [r for r in roles if not r.startswith("writer:") and r not in ("main", "generic")]
    out = [r for r in roles if r in ("main", "generic")]
    if writes:
        out.append("writes all streams" if set(writes) >= set(WRITER_STREAMS)
                   else "writes " + "+".join(writes))
    if jobs:
        out.append("all jobs" if set(jobs) >= set(JOBS) else ", ".join(jobs))
    return ", ".join(out) or "-"


def local_host(listener: ListenerConfig) -> str:
    """The address on this machine that reaches a TCP listener."""
    specific = [a for a in listener.bind_addresses if a not in ("0.0.0.0", "::")]
    if specific:
        return specific[0]
    if "0.0.0.0" in listener.bind_addresses or not listener.bind_addresses:
        return "127.0.0.1"
    return "::1"  # asyncio binds "::" IPv6-only


def canonical_instance(name: str) -> str:
    """The main process is "master" inside, whichever spelling a file uses."""
    return MAIN if name in ("main", "master") else name


def display_name(name: str) -> str:
    """How admins see an instance: the main process is "main"."""
    return "main" if name == MAIN else name


@dataclass(frozen=True)
class ProcessInfo:
    """One process of the fleet, as far as routing cares."""

    name: str                                 # instance name; "master" is main
    app: str                                  # worker_app
    listeners: tuple[ListenerConfig, ...]
    roles: ProcessRoles

    @property
    def is_main(self) -> bool:
        return self.name == MAIN

    @property
    def initial_sync(self) -> bool:
        return not self.is_main and INITIAL_SYNC_MARKER in self.name

    @property
    def writes(self) -> list[str]:
        """The streams this process writes (normalised names)."""
        return [stream for stream, writers in self.roles.writers.items()
                if self.name in {canonical_instance(w) for w in writers}]

    @property
    def dedicated(self) -> bool:
        return not self.is_main and (bool(self.writes) or self.initial_sync)

    def http_listeners(self) -> list[ListenerConfig]:
        return [lst for lst in self.listeners if lst.type in HTTP_LISTENER_TYPES]

    def listener_for(self, resource: str) -> ListenerConfig | None:
        """The listener that serves routes of ``resource`` (a route table's resource).

        For health, which every listener serves, one serving clients is preferred.
        """
        matching = [lst for lst in self.http_listeners()
                    if resource in served_resources(lst.resources, self.roles.media_serving)]
        if resource == "health":
            preferred = [lst for lst in matching if "client" in lst.resources]
            matching = preferred or matching
        return matching[0] if matching else None

    def serves(self, route: Route) -> bool:
        if route.main_only and not self.is_main:
            return False
        return self.listener_for(route.resource) is not None


@dataclass(frozen=True)
class Target:
    """Where the proxy sends a route: one process, or a pool and how to balance it."""

    processes: tuple[str, ...]
    balance: Balance
    reason: str

    def describe(self) -> str:
        names = ", ".join(display_name(p) for p in self.processes)
        how = {"one": "", "round_robin": " (round robin)", "user": " (by user)",
               "room": " (by room)", "persister": " (the room's persister)"}[self.balance]
        return f"{names}{how}"


@dataclass(frozen=True)
class Decision:
    route: Route
    served_by: tuple[str, ...]     # every process able to serve the route
    target: Target | None          # None: not proxied (private, or no process serves it)
    initial: Target | None = None  # /sync without `since`, when it differs from target
    private: bool = False          # of a resource the proxy must not expose


@dataclass
class RoutingPlan:
    processes: dict[str, ProcessInfo]
    decisions: list[Decision]

    def decision(self, method: str, pattern: PathPattern) -> Decision:
        for decision in self.decisions:
            if decision.route.key == (method, pattern):
                return decision
        raise KeyError((method, pattern))

    def find(self, method: str, path: str) -> Decision | None:
        """The decision of the route that serves ``method path`` (a raw path)."""
        for decision in self.decisions:
            route = decision.route
            if route.method == method and route.regex.match(path):
                return decision
        return None

    def unserved(self) -> list[Decision]:
        """Public routes that no process serves (no listener has their resource)."""
        return [d for d in self.decisions if d.target is None and not d.private]

    def private(self) -> list[Decision]:
        return [d for d in self.decisions if d.private]


def _is_sync(route: Route) -> bool:
    return route.pattern.prefix == _CLIENT and route.pattern.path in SYNC_PATHS


def _is_initial_sync(route: Route) -> bool:
    return route.pattern.prefix == _CLIENT and route.pattern.path in INITIAL_SYNC_PATHS


def _is_sync_with_since(route: Route) -> bool:
    """``/sync``: initial (no ``since``) or incremental, told apart by the proxy."""
    return route.pattern.prefix == _CLIENT and route.pattern.path == "/sync"


class _Planner:
    def __init__(self, processes: Sequence[ProcessInfo]) -> None:
        self.processes = list(processes)
        self.by_name = {p.name: p for p in self.processes}
        if len(self.by_name) != len(self.processes):
            raise ValueError("two processes of the fleet have the same instance name")
        main = self.by_name.get(MAIN)
        self.main = main
        # Every process computes its roles from the same shared config; main's
        # view (or any) tells who writes what.
        reference = main or (self.processes[0] if self.processes else None)
        self.roles = reference.roles if reference is not None else None

    def writers_of(self, stream: str) -> list[str]:
        if self.roles is None:
            return [MAIN]
        return list(dict.fromkeys(canonical_instance(w) for w in self.roles.writers_of(stream)))

    def decide(self, route: Route) -> Decision:
        candidates = [p for p in self.processes if p.serves(route)]
        served_by = tuple(p.name for p in candidates)
        if route.resource in PRIVATE_RESOURCES:
            return Decision(route, served_by, None, private=True)
        if not candidates:
            return Decision(route, served_by, None)
        main_serves = self.main is not None and self.main in candidates

        if route.resource == "health" and main_serves:
            return Decision(route, served_by, Target((MAIN,), "one", "health of main"))
        if route.main_only:
            return Decision(route, served_by, Target((MAIN,), "one", "main only"))
        if route.stream is not None:
            writers = self.writers_of(route.stream)
            # Every stream has a writer seam, so any process can take the write;
            # a dedicated writer takes it first-hand, main is not loaded with it.
            if len(writers) == 1 and writers[0] in served_by and writers[0] != MAIN:
                return Decision(route, served_by,
                                Target((writers[0],), "one", f"writer of {route.stream}"))
            if route.stream == "events" and route.affinity == "room" and len(writers) > 1 \
                    and all(w in served_by for w in writers):
                # Every persister takes client requests: send each to its room's.
                return Decision(route, served_by,
                                Target(tuple(writers), "persister", "the room's persister"))

        workers = [p for p in candidates if not p.is_main]
        pool = [p for p in workers if not p.dedicated]
        initial_pool = [p for p in workers if p.initial_sync]
        fallback: list[ProcessInfo] = [self.main] if main_serves and self.main else workers

        def target(members: list[ProcessInfo], balance: Balance, reason: str) -> Target:
            if not members:
                members = fallback
                reason = "main (no worker serves it)" if main_serves else reason
            if len(members) == 1:
                balance = "one"
            return Target(tuple(p.name for p in members), balance, reason)

        if _is_initial_sync(route):
            return Decision(route, served_by,
                            target(initial_pool or pool, "user", "initial sync"))
        if _is_sync(route):
            main_target = target(pool, "user", "sync")
            initial = None
            if _is_sync_with_since(route) and initial_pool:
                initial = target(initial_pool, "user", "initial sync")
            return Decision(route, served_by, main_target, initial)
        if route.affinity == "user":
            return Decision(route, served_by, target(pool, "user", "by user"))
        if route.affinity == "room":
            return Decision(route, served_by, target(pool, "room", "by room"))
        return Decision(route, served_by, target(pool, "round_robin", "any worker"))


def plan_routes(processes: Sequence[ProcessInfo],
                routes: Iterable[Route] | None = None) -> RoutingPlan:
    """Decide, for every declared route (or ``routes``), who serves it and
    where the proxy sends it."""
    planner = _Planner(processes)
    decisions = [planner.decide(route) for route in (all_routes() if routes is None else routes)]
    return RoutingPlan({p.name: p for p in processes}, decisions)
