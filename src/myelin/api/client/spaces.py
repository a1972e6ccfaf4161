"""Space and room preview servlets: ``/hierarchy`` and ``/room_summary``
(also under nheko's unstable summary path, with the same answer)."""

from __future__ import annotations

from typing import Any

from myelin.domain import MatrixError, Requester
from myelin.http.request import Request
from myelin.http.routing import PathPattern, RouteTable, client_v1_path

routes = RouteTable("client")


@routes.get(client_v1_path("/rooms/{roomId}/hierarchy"), affinity="room")
async def hierarchy(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    limit = request.query_int("limit")
    if limit is not None and limit <= 0:
        raise MatrixError(400, "M_INVALID_PARAM", "limit must be greater than zero")
    max_depth = request.query_int("max_depth")
    if max_depth is not None and max_depth < 0:
        raise MatrixError(400, "M_INVALID_PARAM", "max_depth must not be negative")
    return await request.hs.spaces.hierarchy(
        requester, request.param("roomId"), suggested_only=request.query_bool("suggested_only"),
        max_depth=max_depth, limit=limit, from_token=request.query_str("from"))


def _has_credentials(request: Request) -> bool:
    return "Authorization" in request.raw.headers or "access_token" in request.raw.query


@routes.get(client_v1_path("/room_summary/{roomIdOrAlias}"))
@routes.get(PathPattern("/_matrix/client", ("unstable",),
                        "/im.nheko.summary/rooms/{roomIdOrAlias}/summary"))
async def room_summary(request: Request) -> dict[str, Any]:
    # Anyone may preview a room they could peek at; a token adds their membership.
    requester: Requester | None = None
    if _has_credentials(request):
        requester = await request.requester(allow_guest=True)
    return await request.hs.spaces.room_summary(requester, request.param("roomIdOrAlias"))
