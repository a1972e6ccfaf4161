"""Inviting by email (or phone): third-party invites through an identity server.

``POST /rooms/{roomId}/invite`` with ``id_server``, ``id_access_token``,
``medium`` and ``address``, and ``invite_3pid`` of ``/createRoom``. As
Synapse does, an identity server the client names together with an
``id_access_token`` is trusted; without a token it is not
(``M_SERVER_NOT_TRUSTED``). The server asks the identity server who the
address belongs to (v2 ``hash_details`` then ``lookup``, hashed with sha256
and the server's pepper when offered, else plain): a bound user is invited
directly; otherwise the identity server stores the invite (``store-invite``)
and the room gets an ``m.room.third_party_invite`` state event whose
``state_key`` is the identity server's token, for the invitee to redeem
when they bind the address (``exchange_third_party_invite``, on the
federation side).

``/account/3pid/bind`` asks the identity server to bind a session it
validated to the user (v2 ``3pid/bind``) and remembers the server
(``user_threepid_id_server``); ``/account/3pid/unbind``, deleting the
address with ``/account/3pid/delete`` and deactivation ask each such server
(or the one named) to unbind, with a request signed by this server
(``X-Matrix``, as the identity service API has it), and answer
``id_server_unbind_result`` "success" only if every server did.

Every address is looked up before anything changes, so an identity server
that cannot be reached or refuses the token answers ``M_SERVER_NOT_TRUSTED``
before a room is created or an invite sent. Requests go over HTTPS, with
federation's TLS settings (``federation_custom_ca_list``, verification)
and its IP blocklist applied to every address the name resolves to.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

from myelin.domain import MatrixError, Requester, bad_json

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)

TIMEOUT_S = 15.0
INVITE_EVENT = "m.room.third_party_invite"
# A server name (host and optional port): nothing that could change the URL.
_SERVER_NAME = re.compile(r"^([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$")


@dataclass(frozen=True)
class ThirdPartyInvite:
    """One address to invite, and who it belongs to (None: nobody yet)."""

    id_server: str
    id_access_token: str
    medium: str
    address: str
    user_id: str | None


def not_trusted(id_server: str, why: str) -> MatrixError:
    return MatrixError(400, "M_SERVER_NOT_TRUSTED",
                       f"Identity server {id_server!r} cannot be used: {why}")


def parse_invite(invite: Any) -> tuple[str, str | None, str, str]:
    """(id_server, id_access_token, medium, address) of one invite body."""
    if not isinstance(invite, dict) or not all(
            isinstance(invite.get(key), str) for key in ("id_server", "medium", "address")):
        raise bad_json("third-party invites need string id_server, medium and address")
    if not _SERVER_NAME.match(invite["id_server"]):
        raise MatrixError(400, "M_INVALID_PARAM", "id_server must be a host name and port")
    token = invite.get("id_access_token")
    if token is not None and not isinstance(token, str):
        raise bad_json("id_access_token must be a string")
    return invite["id_server"], token, invite["medium"], invite["address"]


def lookup_hash(medium: str, address: str, pepper: str) -> str:
    """The identity service API's sha256 lookup hash (unpadded URL-safe base64)."""
    digest = hashlib.sha256(f"{address} {medium} {pepper}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class IdentityHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            from myelin.federation.client import BlocklistResolver, IpFilter, client_ssl_context

            config = self.hs.config.federation
            self.ip_filter = IpFilter(config.ip_range_blocklist, config.ip_range_whitelist)
            tls = False if self.hs.config.push.insecure_tls else client_ssl_context(config)
            connector = aiohttp.TCPConnector(resolver=BlocklistResolver(self.ip_filter),
                                             ssl=tls)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, id_server: str, token: str, method: str, path: str,
                    body: Any = None) -> dict[str, Any]:
        session = self._client()
        host = urlsplit(f"https://{id_server}").hostname or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass  # a name: the resolver filters what it resolves to
        else:
            if not self.ip_filter.allowed(host):
                raise not_trusted(id_server, "its address is blocked")
        try:
            async with session.request(method, f"https://{id_server}{path}", json=body,
                                       headers={"Authorization": f"Bearer {token}"}) as resp:
                answer = await resp.json(content_type=None)
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as e:
            logger.info("identity server %s: %s %s failed: %s", id_server, method, path, e)
            raise not_trusted(id_server, "it could not be reached") from None
        if status != 200 or not isinstance(answer, dict):
            logger.info("identity server %s: %s %s answered %s", id_server, method, path,
                        status)
            raise not_trusted(id_server, f"it answered {status}")
        return answer

    async def key_is_valid(self, url: str, public_key: str) -> bool:
        """Whether the identity server at ``url`` (a ``key_validity_url``)
        still vouches for ``public_key``; an unreachable one does not."""
        session = self._client()
        host = urlsplit(url).hostname or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            if not self.ip_filter.allowed(host):
                return False
        try:
            async with session.get(url, params={"public_key": public_key}) as resp:
                answer = await resp.json(content_type=None)
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as e:
            logger.info("key validity check at %s failed: %s", url, e)
            return False
        return status == 200 and isinstance(answer, dict) and answer.get("valid") is True

    async def bind(self, user_id: str, body: dict[str, Any]) -> None:
        for key in ("client_secret", "id_server", "id_access_token", "sid"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise MatrixError(400, "M_MISSING_PARAM", f"{key} is required")
        id_server, token = body["id_server"], body["id_access_token"]
        parse_invite({"id_server": id_server, "medium": "", "address": ""})
        answer = await self._call(id_server, token, "POST", "/_matrix/identity/v2/3pid/bind",
                                  {"sid": body["sid"], "client_secret": body["client_secret"],
                                   "mxid": user_id})
        medium, address = answer.get("medium"), answer.get("address")
        if not isinstance(medium, str) or not isinstance(address, str):
            raise not_trusted(id_server, "its bind answer is malformed")
        await self.hs.db.execute(
            "INSERT INTO user_threepid_id_server (user_id, medium, address, id_server)"
            " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", user_id, medium, address, id_server)

    async def unbind(self, user_id: str, medium: str, address: str,
                     id_server: str | None = None) -> str:
        """Unbind everywhere we bound it (or on ``id_server``): the
        ``id_server_unbind_result``."""
        if id_server is not None:
            servers = [id_server]
        else:
            rows = await self.hs.db.fetchall(
                "SELECT id_server FROM user_threepid_id_server WHERE user_id = ?"
                " AND medium = ? AND address = ?", user_id, medium, address)
            servers = [r[0] for r in rows]
        if not servers:
            return "no-support"
        ok = True
        for server in servers:
            if await self._unbind_on(server, user_id, medium, address):
                await self.hs.db.execute(
                    "DELETE FROM user_threepid_id_server WHERE user_id = ? AND medium = ?"
                    " AND address = ? AND id_server = ?", user_id, medium, address, server)
            else:
                ok = False
        return "success" if ok else "no-support"

    async def unbind_all(self, user_id: str) -> str:
        rows = await self.hs.db.fetchall(
            "SELECT DISTINCT medium, address FROM user_threepid_id_server WHERE user_id = ?",
            user_id)
        results = [await self.unbind(user_id, medium, address) for medium, address in rows]
        return "success" if all(r == "success" for r in results) else "no-support"

    async def _unbind_on(self, id_server: str, user_id: str, medium: str,
                         address: str) -> bool:
        from myelin.federation.auth import sign_request_header

        if not _SERVER_NAME.match(id_server):
            return False
        path = "/_matrix/identity/v2/3pid/unbind"
        body = {"mxid": user_id, "id_server": id_server,
                "threepid": {"medium": medium, "address": address}}
        header = sign_request_header(self.hs.server_name, id_server, self.hs.signing_key,
                                     "POST", path, body)
        session = self._client()
        try:
            async with session.post(f"https://{id_server}{path}", json=body,
                                    headers={"Authorization": header}) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            logger.info("identity server %s: unbind failed: %s", id_server, e)
            return False

    async def lookup(self, id_server: str, token: str, medium: str, address: str) -> str | None:
        """The user the address is bound to on ``id_server``, if any."""
        details = await self._call(id_server, token, "GET", "/_matrix/identity/v2/hash_details")
        algorithms = details.get("algorithms")
        pepper = details.get("lookup_pepper")
        if not isinstance(algorithms, list):
            raise not_trusted(id_server, "no lookup algorithms")
        if "sha256" in algorithms and isinstance(pepper, str):
            key = lookup_hash(medium, address, pepper)
            body = {"addresses": [key], "algorithm": "sha256", "pepper": pepper}
        elif "none" in algorithms:
            key = f"{address} {medium}"
            body = {"addresses": [key], "algorithm": "none", "pepper": pepper or ""}
        else:
            raise not_trusted(id_server, "no lookup algorithm this server knows")
        answer = await self._call(id_server, token, "POST", "/_matrix/identity/v2/lookup", body)
        mappings = answer.get("mappings")
        user_id = mappings.get(key) if isinstance(mappings, dict) else None
        return user_id if isinstance(user_id, str) and user_id.startswith("@") else None

    async def resolve(self, invites: list[Any]) -> list[ThirdPartyInvite]:
        """Check and look up every invite before anything is sent."""
        out = []
        for invite in invites:
            id_server, token, medium, address = parse_invite(invite)
            if not token:
                raise not_trusted(id_server, "no id_access_token was given")
            user_id = await self.lookup(id_server, token, medium, address)
            out.append(ThirdPartyInvite(id_server, token, medium, address, user_id))
        return out

    async def invite(self, requester: Requester, room_id: str, body: dict[str, Any]) -> None:
        """``/rooms/{roomId}/invite`` by third-party identifier."""
        await self.send(requester, room_id, await self.resolve([body]))

    async def send(self, requester: Requester, room_id: str,
                   invites: list[ThirdPartyInvite]) -> None:
        """Invite the bound users; store the invites of everyone else."""
        for invite in invites:
            if invite.user_id is not None:
                await self.hs.membership.change_member(requester, room_id, invite.user_id,
                                                       "invite", "invite")
                continue
            content = await self._store_invite(requester, room_id, invite)
            await self.hs.event_creation.send(requester.user_id, room_id, INVITE_EVENT,
                                              content, state_key=content.pop("_token"))

    async def _store_invite(self, requester: Requester, room_id: str,
                            invite: ThirdPartyInvite) -> dict[str, Any]:
        state = self.hs.stores.state
        body: dict[str, Any] = {"medium": invite.medium, "address": invite.address,
                                "room_id": room_id, "sender": requester.user_id}
        for etype, key, name in (("m.room.name", "name", "room_name"),
                                 ("m.room.canonical_alias", "alias", "room_alias"),
                                 ("m.room.avatar", "url", "room_avatar_url"),
                                 ("m.room.join_rules", "join_rule", "room_join_rules")):
            event = await state.get_current_state_event(room_id, etype)
            value = event.content.get(key) if event is not None else None
            if isinstance(value, str):
                body[name] = value
        create = await state.get_current_state_event(room_id, "m.room.create")
        room_type = create.content.get("type") if create is not None else None
        if isinstance(room_type, str):
            body["room_type"] = room_type
        member = await state.get_current_state_event(room_id, "m.room.member",
                                                     requester.user_id)
        for key, name in (("displayname", "sender_display_name"),
                          ("avatar_url", "sender_avatar_url")):
            value = member.content.get(key) if member is not None else None
            if isinstance(value, str):
                body[name] = value
        answer = await self._call(invite.id_server, invite.id_access_token, "POST",
                                  "/_matrix/identity/v2/store-invite", body)
        token, display_name = answer.get("token"), answer.get("display_name")
        keys = answer.get("public_keys")
        if not isinstance(token, str) or not token or not isinstance(keys, list) or not keys \
                or not all(isinstance(k, dict) and isinstance(k.get("public_key"), str)
                           and isinstance(k.get("key_validity_url"), str) for k in keys):
            raise not_trusted(invite.id_server, "its store-invite answer is malformed")
        return {"display_name": display_name if isinstance(display_name, str) else "",
                "public_key": keys[0]["public_key"],
                "key_validity_url": keys[0]["key_validity_url"],
                "public_keys": keys, "_token": token}
