"""``/versions`` and ``/capabilities``: what this server speaks."""

from __future__ import annotations

from typing import Any

from myelin.http.request import Request
from myelin.http.routing import RouteTable, client_path, plain_path

routes = RouteTable("client")

SUPPORTED_VERSIONS = ["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7",
                      "v1.8", "v1.9", "v1.10", "v1.11", "v1.12"]


@routes.get(plain_path("/_matrix/client/versions"))
async def versions(request: Request) -> dict[str, Any]:
    return {"versions": SUPPORTED_VERSIONS, "unstable_features": {}}


@routes.get(client_path("/capabilities"))
async def capabilities(request: Request) -> dict[str, Any]:
    await request.requester()
    from myelin.events.room_versions import KNOWN_ROOM_VERSIONS, STABLE_ROOM_VERSIONS

    return {"capabilities": {
        "m.room_versions": {
            "default": request.hs.config.default_room_version,
            "available": {v: ("stable" if v in STABLE_ROOM_VERSIONS else "unstable")
                          for v in KNOWN_ROOM_VERSIONS},
        },
        "m.change_password": {"enabled": True},
        "m.profile_fields": {"enabled": True},
        "m.set_displayname": {"enabled": True},
        "m.set_avatar_url": {"enabled": True},
        "m.3pid_changes": {"enabled": False},
        "m.get_login_token": {"enabled": False},
    }}
