"""Third-party identifiers of local users, without an identity server.

The table (``stores/threepids.py``) is what ``/account/3pid`` lists and what
logins by email or phone resolve through. Adding an address needs a
validated session: a validation token sent by email or SMS. That sending is
the seam ``ThreepidSender`` (an email sender arrives in a later issue); with
none configured, ``requestToken`` answers ``M_THREEPID_MEDIUM_NOT_SUPPORTED``
and there is never a validated session to add from.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Protocol

from myelin.domain import MatrixError
from myelin.storage.stores.threepids import Threepid

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

MEDIA = ("email", "msisdn")
# The spec's grammar of a client_secret.
_CLIENT_SECRET = re.compile(r"^[0-9a-zA-Z.=_-]{1,255}$")


class ThreepidSender(Protocol):
    async def send_validation(self, medium: str, address: str, client_secret: str,
                              send_attempt: int, purpose: str) -> str:
        """Send a validation token to ``address``; returns the session id."""

    async def validated_address(self, sid: str, client_secret: str) -> tuple[str, str] | None:
        """(medium, address) of a session whose token was submitted, else None."""


class ThreepidHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.threepids
        # None until an email/SMS sender exists (a later issue).
        self.senders: dict[str, ThreepidSender] = {}

    async def list(self, user_id: str) -> list[Threepid]:
        return await self.store.get_threepids(user_id)

    async def request_token(self, purpose: str, medium: str, body: dict[str, Any],
                            ) -> dict[str, Any]:
        """``/{register,account/3pid,account/password}/{email,msisdn}/requestToken``."""
        client_secret = body.get("client_secret")
        if not isinstance(client_secret, str):
            raise MatrixError(400, "M_MISSING_PARAM", "client_secret is required")
        if not _CLIENT_SECRET.match(client_secret):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid client_secret")
        send_attempt = body.get("send_attempt")
        if not isinstance(send_attempt, int) or isinstance(send_attempt, bool):
            raise MatrixError(400, "M_MISSING_PARAM", "send_attempt must be an integer")
        if medium == "email":
            address = body.get("email")
            if not isinstance(address, str) or "@" not in address:
                raise MatrixError(400, "M_INVALID_PARAM", "Invalid email address")
        else:
            country, number = body.get("country"), body.get("phone_number")
            if not isinstance(country, str) or not isinstance(number, str):
                raise MatrixError(400, "M_MISSING_PARAM", "country and phone_number are required")
            address = re.sub(r"\D", "", number)
        owner = await self.store.user_by_threepid(medium, address)
        if purpose in ("register", "add") and owner is not None:
            raise MatrixError(400, "M_THREEPID_IN_USE", "This address is already in use")
        if purpose == "password" and owner is None:
            raise MatrixError(400, "M_THREEPID_NOT_FOUND", "No account has this address")
        sender = self.senders.get(medium)
        if sender is None:
            raise MatrixError(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED",
                              f"This server cannot send {medium} validation tokens")
        sid = await sender.send_validation(medium, address, client_secret, send_attempt,
                                           purpose)
        return {"sid": sid}

    async def add_from_session(self, user_id: str, sid: Any, client_secret: Any) -> None:
        """Attach the address a validated session proved to ``user_id``."""
        if not isinstance(sid, str) or not isinstance(client_secret, str):
            raise MatrixError(400, "M_MISSING_PARAM", "sid and client_secret are required")
        validated = None
        for sender in self.senders.values():
            validated = await sender.validated_address(sid, client_secret)
            if validated is not None:
                break
        if validated is None:
            raise MatrixError(400, "M_THREEPID_AUTH_FAILED",
                              "No validated third-party identifier session found")
        medium, address = validated
        if not await self.store.add_threepid(user_id, medium, address):
            raise MatrixError(400, "M_THREEPID_IN_USE", "This address is already in use")

    async def delete(self, user_id: str, medium: Any, address: Any) -> None:
        if not isinstance(medium, str) or not isinstance(address, str):
            raise MatrixError(400, "M_MISSING_PARAM", "medium and address are required")
        await self.store.remove_threepid(user_id, medium, address)
