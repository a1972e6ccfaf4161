"""``GET /_matrix/federation/v1/version``: which server software this is.

Unauthenticated, as the spec has it."""

from __future__ import annotations

from typing import Any

import myelin
from myelin.http.request import Request
from myelin.http.routing import PathPattern, RouteTable

routes = RouteTable("federation")


@routes.get(PathPattern("/_matrix/federation", ("v1",), "/version"))
async def version(request: Request) -> dict[str, Any]:
    return {"server": {"name": "Myelin", "version": myelin.__version__}}
