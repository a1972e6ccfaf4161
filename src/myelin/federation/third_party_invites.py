"""Third-party invites being claimed: an address invited by email is now bound.

An ``m.room.third_party_invite`` waits in a room for whoever proves the
address. Two things end the wait, both on the invitee's server:

- the identity server calls ``/3pid/onbind`` with the invites stored for the
  address, each carrying a ``signed`` block naming the Matrix ID now bound;
- the invitee's client joins with ``third_party_signed`` (the same block,
  handed to it directly).

Either way the invite is *exchanged* for a real ``m.room.member`` invite from
the original inviter: made here when the inviter is ours, otherwise asked of
the inviter's server with ``/exchange_third_party_invite``. The auth rules check
the signature against the keys of the room's ``m.room.third_party_invite``;
before making the event we also ask the identity server (its
``key_validity_url``) whether that key is still valid, so a revoked key or an
identity server that has gone away cannot admit anyone.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from myelin.domain import MatrixError, forbidden, server_of
from myelin.events.auth import third_party_signing_key
from myelin.federation.client import FederationError, FederationUnreachable

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)


def parse_signed(signed: Any) -> dict[str, Any]:
    """A ``signed`` block with its required fields, or 400 M_BAD_JSON."""
    if not isinstance(signed, dict) or not isinstance(signed.get("mxid"), str) \
            or not isinstance(signed.get("token"), str) \
            or not isinstance(signed.get("signatures"), dict):
        raise MatrixError(400, "M_BAD_JSON", "signed needs mxid, token and signatures")
    return signed


class ThirdPartyInviteExchange:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def on_bind(self, body: dict[str, Any]) -> None:
        """``/3pid/onbind``: exchange each pending invite for our bound user.

        One bad invite does not stop the others; the identity server learns
        nothing from us either way (it cannot act on a refusal)."""
        invites = body.get("invites")
        if not isinstance(invites, list):
            return
        for invite in invites:
            if not isinstance(invite, dict):
                continue
            mxid, room_id, sender = invite.get("mxid"), invite.get("room_id"), invite.get("sender")
            if not (isinstance(mxid, str) and isinstance(room_id, str)
                    and isinstance(sender, str)) or not self.hs.is_mine(mxid):
                logger.info("onbind: ignoring an invite for %r in %r", mxid, room_id)
                continue
            try:
                await self.exchange(sender, mxid, room_id, invite.get("signed"))
            except MatrixError as e:
                logger.info("onbind: the invite of %s to %s was refused: %s", mxid, room_id,
                            e.message)

    async def exchange(self, sender: str, target: str, room_id: str, signed: Any) -> None:
        """Turn the third-party invite ``signed`` proves into an invite of ``target``."""
        signed = parse_signed(signed)
        if signed["mxid"] != target:
            raise forbidden("The signed third-party invite names another user")
        if self.hs.is_mine(sender):
            content = await self.checked_invite_content(room_id, signed)
            await self.hs.event_creation.send(sender, room_id, "m.room.member", content,
                                              state_key=target)
            return
        event = {"type": "m.room.member", "room_id": room_id, "sender": sender,
                 "state_key": target,
                 "content": {"membership": "invite", "third_party_invite": {"signed": signed}}}
        server = server_of(sender)
        try:
            await self.hs.federation_client.put_json(
                server,
                f"/_matrix/federation/v1/exchange_third_party_invite/{quote(room_id, safe='')}",
                event)
        except FederationError as e:
            errcode = e.errcode or "M_FORBIDDEN"
            raise MatrixError(e.code if 400 <= e.code < 500 else 502, errcode,
                              f"{server} refused the third-party invite") from None
        except FederationUnreachable as e:
            raise MatrixError(502, "M_UNKNOWN", f"cannot reach {server}: {e.reason}") from None

    async def checked_invite_content(self, room_id: str, signed: dict[str, Any]
                                     ) -> dict[str, Any]:
        """The content of the invite ``signed`` claims, once the identity server
        confirms the key that signed it is still valid; 403 otherwise."""
        pending = await self.hs.stores.state.get_current_state_event(
            room_id, "m.room.third_party_invite", signed["token"])
        if pending is None:
            raise forbidden("No pending third-party invite has that token")
        content = pending.content
        candidates: list[tuple[str, str | None]] = []
        if isinstance(content.get("public_key"), str):
            url = content.get("key_validity_url")
            candidates.append((content["public_key"], url if isinstance(url, str) else None))
        for entry in content.get("public_keys") or []:
            if isinstance(entry, dict) and isinstance(entry.get("public_key"), str):
                url = entry.get("key_validity_url")
                candidates.append((entry["public_key"], url if isinstance(url, str) else None))
        key = third_party_signing_key(signed, [k for k, _ in candidates])
        if key is None:
            raise forbidden("The third-party invite is not signed by the room's identity server")
        urls = [url for k, url in candidates if k == key and url]
        for url in urls:
            if not await self.hs.identity.key_is_valid(url, key):
                raise forbidden("The identity server says its key is no longer valid")
        invite: dict[str, Any] = {"signed": signed}
        if isinstance(content.get("display_name"), str):
            invite["display_name"] = content["display_name"]
        return {"membership": "invite", "third_party_invite": invite}
