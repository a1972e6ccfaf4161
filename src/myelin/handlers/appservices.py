"""Application services as clients see them: ``as_token`` authentication with
``user_id`` masquerading, ``m.login.application_service`` registration and
login, exclusive namespaces closed to everyone else, queries to a service
when a client touches an unknown user or alias in its namespace, and the
third-party lookups, network room directories and pings of the
``hs.appservices`` seam (handlers/thirdparty.py).

Delivery of transactions is the ``appservice`` job (appservice/sender.py).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from myelin.appservice.api import AppServiceApi
from myelin.appservice.registration import AppService
from myelin.domain import MatrixError, Requester, forbidden, not_found

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)

PROTOCOL_CACHE_S = 3600.0


def exclusive_error(what: str) -> MatrixError:
    return MatrixError(400, "M_EXCLUSIVE", f"This {what} is reserved by an application service.")


class AppServiceHandler:
    """The registered services; implements ``AppServiceSeam``."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.services: list[AppService] = list(hs.config.app_services)
        self._by_token = {s.as_token: s for s in self.services}
        self._by_id = {s.id: s for s in self.services}
        # Synapse's use_insecure_ssl_client_just_for_testing_do_not_use covers
        # every outbound client but federation's: previews and services alike.
        self._protocol_cache: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self.api = AppServiceApi(hs.config.use_appservice_legacy_authorization,
                                 verify_tls=not hs.config.media.insecure_tls_for_testing)

    def get(self, appservice_id: str | None) -> AppService | None:
        return self._by_id.get(appservice_id) if appservice_id else None

    def by_token(self, token: str) -> AppService | None:
        return self._by_token.get(token)

    async def close(self) -> None:
        await self.api.close()

    async def register_senders(self) -> None:
        """Each service's sender user exists (as Synapse has it), so it can
        join rooms and hold a profile from the first request."""
        for service in self.services:
            async with self.hs.db.transaction("appservice_sender") as txn:
                await self.hs.stores.accounts.create_user(txn, service.sender, None,
                                                          appservice_id=service.id)

    # -- authentication --------------------------------------------------------
    async def requester_for(self, service: AppService, user_id: str | None,
                            device_id: str | None) -> Requester:
        """The requester of an ``as_token`` request: the sender, or the user
        named by ``?user_id=`` when it is in the service's namespace."""
        target = service.sender if not user_id else user_id
        if target != service.sender:
            if not service.is_interested_in_user(target):
                raise forbidden(f"Application service cannot masquerade as this user ({target}).")
            user = await self.hs.stores.accounts.get_user(target)
            if user is None or user.deactivated:
                raise forbidden(f"Application service has not registered this user ({target})")
        if device_id is not None:
            if await self.hs.stores.accounts.get_device(target, device_id) is None:
                # As Synapse answers it (MSC3202/MSC4326 device masquerading).
                raise MatrixError(400, "M_FORBIDDEN", "Application service trying to use a "
                                  f"device that doesn't exist ({device_id} for {target})")
        return Requester(target, device_id, service.as_token, appservice_id=service.id)

    @staticmethod
    def sender_requester(service: AppService) -> Requester:
        return Requester(service.sender, None, service.as_token, appservice_id=service.id)

    def appservice_of(self, requester: Requester) -> str | None:
        return requester.appservice_id

    def exempt_from_ratelimit(self, requester: Requester) -> bool:
        service = self.get(requester.appservice_id)
        return service is not None and not service.rate_limited

    # -- exclusive namespaces ----------------------------------------------------
    def check_user_allowed(self, user_id: str, service: AppService | None = None) -> None:
        """M_EXCLUSIVE when another service claims ``user_id`` exclusively."""
        for other in self.services:
            if other is not service and other.is_exclusive_user(user_id):
                raise exclusive_error("user ID")

    def check_alias_allowed(self, alias: str, requester: Requester) -> None:
        service = self.get(requester.appservice_id)
        if service is not None:
            if not service.is_interested_in_alias(alias):
                raise MatrixError(400, "M_EXCLUSIVE",
                                  "This application service has not reserved this kind of alias.")
            return
        if any(s.is_exclusive_alias(alias) for s in self.services):
            raise exclusive_error("room alias")

    async def register_as(self, requester: Requester, localpart: str) -> str:
        """``m.login.application_service`` registration of ``localpart``."""
        service = self.get(requester.appservice_id)
        if service is None:
            raise MatrixError(401, "M_MISSING_TOKEN",
                              "m.login.application_service needs the service's as_token")
        user_id = f"@{localpart}:{self.hs.server_name}"
        if not service.is_interested_in_user(user_id):
            raise MatrixError(400, "M_EXCLUSIVE",
                              "Invalid user localpart for this application service.")
        self.check_user_allowed(user_id, service)
        return user_id

    async def check_login(self, requester: Requester, user_id: str) -> None:
        """``m.login.application_service`` login as ``user_id``."""
        service = self.get(requester.appservice_id)
        if service is None:
            raise MatrixError(401, "M_MISSING_TOKEN",
                              "m.login.application_service needs the service's as_token")
        if not service.is_interested_in_user(user_id):
            raise forbidden("Invalid user for this application service.")
        user = await self.hs.stores.accounts.get_user(user_id)
        if user is None or user.deactivated:
            raise forbidden("Invalid username or password")

    # -- queries ---------------------------------------------------------------
    async def query_user(self, user_id: str) -> bool:
        """An unknown local ``user_id`` was touched: ask the services whose
        namespace has it (exclusive ones first) to create it. True when it
        exists afterwards."""
        if not self.services or not self.hs.is_mine(user_id):
            return False
        candidates = sorted((s for s in self.services if s.is_interested_in_user(user_id)),
                            key=lambda s: not s.is_exclusive_user(user_id))
        for service in candidates:
            if await self.api.query_user(service, user_id):
                if await self.hs.stores.accounts.get_user(user_id) is not None:
                    return True
        return False

    async def query_alias(self, alias: str) -> bool:
        """An unknown local alias was resolved: ask the services whose
        namespace has it; True when the alias exists afterwards."""
        if not self.services:
            return False
        candidates = sorted((s for s in self.services if s.is_interested_in_alias(alias)),
                            key=lambda s: not s.is_exclusive_alias(alias))
        for service in candidates:
            if await self.api.query_alias(service, alias):
                if await self.hs.stores.rooms.get_alias(alias) is not None:
                    return True
        return False

    # -- third-party networks (the seam) ----------------------------------------
    def _services_for(self, protocol: str) -> list[AppService]:
        return [s for s in self.services if protocol in s.protocols]

    def bridges(self, protocol: str) -> bool:
        return bool(self._services_for(protocol))

    async def protocols(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        names = sorted({p for s in self.services for p in s.protocols})
        for name in names:
            found = await self.protocol(name)
            if found is not None:
                out[name] = found
        return out

    async def protocol(self, name: str) -> dict[str, Any] | None:
        """The protocol as its services describe it, their instances merged;
        an instance with a ``network_id`` gets the ``instance_id``
        /publicRooms takes. None when no service describes it."""
        merged: dict[str, Any] | None = None
        for service in self._services_for(name):
            info = await self._protocol_info(service, name)
            if info is None:
                continue
            instances = []
            for instance in info.get("instances") or []:
                if isinstance(instance, dict):
                    instance = dict(instance)
                    network = instance.get("network_id")
                    if isinstance(network, str):
                        instance["instance_id"] = f"{service.id}|{network}"
                    instances.append(instance)
            if merged is None:
                merged = {**info, "instances": instances}
            else:
                merged["instances"].extend(instances)
        return merged

    async def _protocol_info(self, service: AppService, name: str) -> dict[str, Any] | None:
        """A service's description of a protocol, kept for an hour (it is
        metadata: clients ask for it on every directory screen)."""
        key = (service.id, name)
        cached = self._protocol_cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        info = await self.api.thirdparty(service, f"/protocol/{name}", {})
        if not isinstance(info, dict):
            return None
        self._protocol_cache[key] = (time.monotonic() + PROTOCOL_CACHE_S, info)
        return info

    async def _lookup(self, services: list[AppService], path: str,
                      fields: dict[str, str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for service in services:
            found = await self.api.thirdparty(service, path, fields)
            if isinstance(found, list):
                out.extend(item for item in found if isinstance(item, dict))
        return out

    async def query_locations(self, protocol: str,
                              fields: dict[str, str]) -> list[dict[str, Any]]:
        return await self._lookup(self._services_for(protocol), f"/location/{protocol}", fields)

    async def query_users(self, protocol: str, fields: dict[str, str]) -> list[dict[str, Any]]:
        return await self._lookup(self._services_for(protocol), f"/user/{protocol}", fields)

    async def locations_for_alias(self, alias: str) -> list[dict[str, Any]]:
        services = [s for s in self.services if s.protocols]
        return await self._lookup(services, "/location", {"alias": alias})

    async def users_for_user_id(self, user_id: str) -> list[dict[str, Any]]:
        services = [s for s in self.services if s.protocols]
        return await self._lookup(services, "/user", {"userid": user_id})

    # -- the appservice-only endpoints -------------------------------------------
    async def set_network_room_visibility(self, appservice_id: str, network_id: str,
                                          room_id: str, visibility: str) -> None:
        if await self.hs.stores.rooms.get_room_version(room_id) is None:
            raise not_found(f"Room {room_id} not found")
        await self.hs.stores.appservices.set_network_room(
            appservice_id, network_id, room_id, visibility == "public")

    async def network_room_ids(self, instance_id: str | None,
                               include_all: bool) -> list[str] | None:
        """The extra rooms /publicRooms lists: one network's (``instance_id``
        is ``service|network``), or every network's; None for neither."""
        if instance_id is not None:
            service_id, _, network = instance_id.partition("|")
            if self.get(service_id) is None:
                return []  # no such network: nothing is on it
            return await self.hs.stores.appservices.network_rooms(service_id, network)
        if include_all:
            return await self.hs.stores.appservices.all_network_rooms()
        return None

    async def ping(self, appservice_id: str, transaction_id: str | None) -> int:
        service = self.get(appservice_id)
        assert service is not None
        return await self.api.ping(service, transaction_id)
