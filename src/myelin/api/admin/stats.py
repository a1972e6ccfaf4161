"""Synapse's ``v1/statistics/users/media``: how many local media each user
uploaded and their total size, with paging, ordering and filters. Admins only.
(``v1/room/{roomId}/media`` is the media admin API's, api/admin/media.py.)"""

from __future__ import annotations

from typing import Any

from myelin.api.admin.common import admin, direction, nonnegative
from myelin.domain import invalid_param
from myelin.http.request import Request
from myelin.http.routing import RouteTable, plain_path

routes = RouteTable("client")

V1 = "/_synapse/admin/v1"
ORDER = ("user_id", "displayname", "media_length", "media_count")


@routes.get(plain_path(V1, "/statistics/users/media"), main_only=True)
async def users_media(request: Request) -> dict[str, Any]:
    await admin(request)
    start = nonnegative(request, "from", 0)
    limit = nonnegative(request, "limit", 100)
    order_by = request.query_str("order_by", "user_id") or "user_id"
    if order_by not in ORDER:
        raise invalid_param(f"Unknown value for order_by: {order_by}")
    forwards = direction(request) == "f"
    since = nonnegative(request, "from_ts", 0)
    until = request.query_int("until_ts")
    search = (request.query_str("search_term") or "").lower()
    hs = request.hs
    rows = []
    for user_id, count, length in await hs.stores.admin.media_by_user(since, until):
        profile = await hs.stores.accounts.get_profile(user_id)
        displayname = profile[0] if profile else None
        if search and search not in user_id.lower() and search not in (displayname or "").lower():
            continue
        rows.append({"user_id": user_id, "displayname": displayname, "media_count": count,
                     "media_length": length})
    rows.sort(key=lambda r: (r[order_by] is not None, r[order_by] or 0, r["user_id"]),
              reverse=not forwards)
    page = rows[start:start + limit]
    body: dict[str, Any] = {"users": page, "total": len(rows)}
    if start + len(page) < len(rows):
        body["next_token"] = start + len(page)
    return body
