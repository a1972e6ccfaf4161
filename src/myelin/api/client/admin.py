"""Client-API account administration: ``/admin/whois``, ``/admin/lock``,
``/admin/suspend`` (handlers/account_admin.py)."""

from __future__ import annotations

from typing import Any

from myelin.handlers.account_admin import FLAGS
from myelin.http.request import Request
from myelin.http.routing import RouteTable, client_path, client_v1_path

routes = RouteTable("client")


@routes.get(client_path("/admin/whois/{userId}"))
async def whois(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    return await request.hs.account_admin.whois(requester, request.param("userId"))


def _flag_servlets(flag: str) -> None:
    verb = "lock" if flag == "locked" else "suspend"

    async def get_flag(request: Request) -> dict[str, Any]:
        requester = await request.requester()
        value = await request.hs.account_admin.get_flag(requester, request.param("userId"),
                                                        flag)
        return {flag: value}

    async def put_flag(request: Request) -> dict[str, Any]:
        requester = await request.requester()
        body = await request.json()
        value = await request.hs.account_admin.set_flag(requester, request.param("userId"),
                                                        flag, body.get(flag))
        return {flag: value}

    get_flag.__name__, put_flag.__name__ = f"get_{flag}", f"put_{flag}"
    path = client_v1_path(f"/admin/{verb}/{{userId}}")
    routes.get(path)(get_flag)
    routes.put(path)(put_flag)


for _flag in FLAGS:
    _flag_servlets(_flag)
