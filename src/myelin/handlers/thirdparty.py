"""Third-party networks and application-service-only endpoints: the seam where
application services plug in.

``hs.appservices`` (handlers/appservices.py) answers everything an
application service would: the protocols bridged, third-party lookups,
whether a request was made with an ``as_token``, the per-network room
directory, pings. With no services registered it answers as a server with
no bridges: no protocols, no third-party users or locations, and no caller
is an application service (so the appservice-only endpoints refuse
everyone).
"""

from __future__ import annotations

from typing import Any, Protocol

from myelin.domain import Requester


class AppServiceSeam(Protocol):
    async def protocols(self) -> dict[str, dict[str, Any]]:
        """protocol id -> the Protocol object (fields, instances)."""

    async def protocol(self, name: str) -> dict[str, Any] | None: ...

    def bridges(self, protocol: str) -> bool:
        """Whether some service bridges ``protocol``."""

    async def query_locations(self, protocol: str,
                              fields: dict[str, str]) -> list[dict[str, Any]]: ...

    async def query_users(self, protocol: str, fields: dict[str, str]) -> list[dict[str, Any]]: ...

    async def locations_for_alias(self, alias: str) -> list[dict[str, Any]]: ...

    async def users_for_user_id(self, user_id: str) -> list[dict[str, Any]]: ...

    def appservice_of(self, requester: Requester) -> str | None:
        """The id of the application service whose as_token made the request."""

    async def set_network_room_visibility(self, appservice_id: str, network_id: str,
                                          room_id: str, visibility: str) -> None: ...

    async def ping(self, appservice_id: str, transaction_id: str | None) -> int:
        """Ping the application service; the round trip in milliseconds."""
