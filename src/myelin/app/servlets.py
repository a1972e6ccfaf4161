"""Which servlet modules exist, and which listener resource serves each.

The single list of route tables: listeners, and later the reverse-proxy
config generator, derive from it.
"""

from __future__ import annotations

from collections.abc import Iterable

from myelin.http.routing import Route, RouteTable

# resource name -> the resources whose routes it serves
RESOURCE_ALIASES = {
    "client": {"client"},
    "federation": {"federation", "keys"},
    "keys": {"keys"},
    "health": {"health"},
    "media": {"media"},
    "replication": {"replication"},
    "metrics": {"metrics"},
}


def all_route_tables() -> list[RouteTable]:
    from myelin.api import health
    from myelin.api.admin import register as admin_register
    from myelin.api.client import account, login, register, versions
    from myelin.api.keys import server as key_server
    from myelin.api.metrics import routes as metrics_routes
    from myelin.api.replication import routes as replication_routes
    from myelin.api.status_page import routes as status_page_routes

    tables = [versions.routes, login.routes, register.routes, account.routes,
              admin_register.routes, key_server.routes, health.routes, replication_routes,
              metrics_routes, status_page_routes]
    tables.extend(_optional_tables())
    return tables


def _optional_tables() -> list[RouteTable]:
    """Route tables of feature modules; imported lazily to keep start-up lean."""
    import importlib

    tables = []
    for name in OPTIONAL_MODULES:
        module = importlib.import_module(name)
        tables.append(module.routes)
    return tables


OPTIONAL_MODULES: list[str] = [
    "myelin.api.client.rooms",
    "myelin.api.client.sync",
    "myelin.api.client.ephemeral",
    "myelin.api.client.account_data",
    "myelin.api.client.directory",
    "myelin.api.client.profile",
    "myelin.api.client.push_rules",
    "myelin.api.client.push",
    "myelin.api.client.keys",
    "myelin.api.media.content",
    "myelin.api.admin.media",
    "myelin.api.client.room_keys",
    "myelin.api.client.reports",
    "myelin.api.client.discovery",
    "myelin.api.client.voip",
    "myelin.api.client.openid",
    "myelin.api.client.thirdparty",
    "myelin.api.client.room_lookups",
    "myelin.api.federation.openid",
    "myelin.api.federation.version",
    "myelin.api.federation.transaction",
    "myelin.api.federation.events",
    "myelin.api.federation.queries",
    "myelin.api.federation.media",
    "myelin.api.federation.membership",
    "myelin.api.client.threepids",
    "myelin.api.client.email_links",
    "myelin.api.client.admin",
    "myelin.api.client.relations",
    "myelin.api.client.spaces",
    "myelin.api.client.room_upgrades",
    "myelin.api.client.search",
    "myelin.api.admin.server",
    "myelin.api.admin.users",
    "myelin.api.admin.rooms",
    "myelin.api.admin.tokens",
    "myelin.api.admin.notices",
    "myelin.api.admin.reports",
    "myelin.api.admin.stats",
]


# Listener resources that also carry the media repository on a process whose
# roles say media_serving == "client" (the main process, as in Synapse).
MEDIA_WITH = frozenset({"client", "federation", "media"})


def served_resources(resources: Iterable[str], media_serving: str = "listed") -> set[str]:
    """The route-table resources a listener with ``resources`` serves (always health).

    ``media_serving`` is the process's ``ProcessRoles.media_serving``: whether
    the ``media`` routes are served on listeners naming ``media`` ("listed"),
    also on its client/federation listeners ("client"), or nowhere ("none")."""
    wanted: set[str] = {"health"}
    names = set(resources)
    for resource in names:
        wanted |= RESOURCE_ALIASES.get(resource, {resource})
    if media_serving == "client" and names & MEDIA_WITH:
        wanted.add("media")
    elif media_serving == "none":
        wanted.discard("media")
    return wanted


def all_routes() -> list[Route]:
    """Every route the code declares, in table order."""
    return [route for table in all_route_tables() for route in table.routes]


def routes_for_resources(resources: Iterable[str], *, main: bool = True,
                         media_serving: str = "listed") -> list[Route]:
    """The routes a listener with ``resources`` serves. A worker (``main=False``)
    leaves out the ``main_only`` routes: their state lives in main's memory."""
    wanted = served_resources(resources, media_serving)
    return [route for table in all_route_tables() if table.resource in wanted
            for route in table.routes if main or not route.main_only]
