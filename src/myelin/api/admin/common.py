"""What every admin servlet does first: authenticate, require a server admin
(403 ``M_FORBIDDEN`` before the request is read any further), and parse the
paging parameters the way Synapse's admin API does."""

from __future__ import annotations

from typing import Any

from myelin.domain import MatrixError, Requester, invalid_param
from myelin.http.request import Request


async def admin(request: Request) -> Requester:
    requester = await request.requester()
    request.hs.auth.require_admin(requester)
    return requester


async def body_of(request: Request, *, allow_empty: bool = False) -> dict[str, Any]:
    body = await request.json(allow_empty=allow_empty)
    if not isinstance(body, dict):
        raise MatrixError(400, "M_BAD_JSON", "Content must be a JSON object")
    return body


def nonnegative(request: Request, name: str, default: int) -> int:
    value = request.query_int(name, default)
    assert value is not None
    if value < 0:
        raise invalid_param(f"Query parameter {name} must be a string representing a "
                            "positive integer.")
    return value


def direction(request: Request, default: str = "f") -> str:
    value = request.query_str("dir", default) or default
    if value not in ("f", "b"):
        raise invalid_param("Unknown direction: " + value)
    return value
