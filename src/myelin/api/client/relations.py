"""Relations servlets: a parent's children (``/relations``) and a room's threads."""

from __future__ import annotations

from typing import Any

from myelin.domain import MatrixError
from myelin.handlers.relations import (
    DEFAULT_RELATIONS_LIMIT,
    DEFAULT_THREADS_LIMIT,
    MAX_RELATIONS_LIMIT,
    MAX_THREADS_LIMIT,
)
from myelin.http.request import Request
from myelin.http.routing import RouteTable, client_path, client_v1_path

routes = RouteTable("client")


def _limit(request: Request, default: int, maximum: int) -> int:
    limit = request.query_int("limit", default)
    assert limit is not None
    if limit <= 0:
        raise MatrixError(400, "M_INVALID_PARAM", "limit must be a positive integer")
    return min(limit, maximum)


@routes.get(client_path("/rooms/{roomId}/relations/{eventId}/{relType?}/{eventType?}",
                        ("v1", "unstable")), affinity="room")
async def relations(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    direction = request.query_str("dir", "b")
    if direction not in ("b", "f"):
        raise MatrixError(400, "M_INVALID_PARAM", "dir must be b or f")
    rel_type = request.params.get("relType") or None
    event_type = request.params.get("eventType") or None
    if event_type is not None and rel_type is None:
        raise MatrixError(400, "M_INVALID_PARAM", "An event type needs a relation type")
    return await request.hs.relations.get_relations(
        requester, request.param("roomId"), request.param("eventId"), rel_type=rel_type,
        event_type=event_type, from_token=request.query_str("from"),
        to_token=request.query_str("to"), backwards=direction == "b",
        limit=_limit(request, DEFAULT_RELATIONS_LIMIT, MAX_RELATIONS_LIMIT),
        recurse=request.query_bool("recurse") or request.query_bool(
            "org.matrix.msc3981.recurse"))


@routes.get(client_v1_path("/rooms/{roomId}/threads"), affinity="room")
async def threads(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    include = request.query_str("include", "all")
    if include not in ("all", "participated"):
        raise MatrixError(400, "M_INVALID_PARAM", "include must be all or participated")
    return await request.hs.relations.get_threads(
        requester, request.param("roomId"), participated=include == "participated",
        from_token=request.query_str("from"),
        limit=_limit(request, DEFAULT_THREADS_LIMIT, MAX_THREADS_LIMIT))
