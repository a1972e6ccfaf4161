"""Third-party identifiers of local users.

The table (``stores/threepids.py``) is what ``/account/3pid`` lists and what
logins by email or phone resolve through. Adding an address needs a
validated session: a validation token sent by email or SMS through a
``ThreepidSender``. With an ``email`` config section the email sender is
``push/mailer.py``'s (a mailed link); SMS has none, so its ``requestToken``
answers ``M_THREEPID_MEDIUM_NOT_SUPPORTED``. A user who adds an email gets an
email pusher when ``email.enable_notifs`` and ``notif_for_new_users`` are on;
removing the address removes it.
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
        self.senders: dict[str, ThreepidSender] = {}
        if hs.email_validation is not None:
            self.senders["email"] = hs.email_validation

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
        validated = await self.validated(sid, client_secret)
        if validated is None:
            raise MatrixError(400, "M_THREEPID_AUTH_FAILED",
                              "No validated third-party identifier session found")
        medium, address = validated
        await self.add_validated(user_id, medium, address)

    async def validated(self, sid: Any, client_secret: Any) -> tuple[str, str] | None:
        """(medium, address) of a validated session, else None."""
        if not isinstance(sid, str) or not isinstance(client_secret, str):
            return None
        for sender in self.senders.values():
            validated = await sender.validated_address(sid, client_secret)
            if validated is not None:
                return validated
        return None

    async def add_validated(self, user_id: str, medium: str, address: str) -> None:
        """Attach a proven address; an email may bring an email pusher."""
        if not await self.store.add_threepid(user_id, medium, address):
            raise MatrixError(400, "M_THREEPID_IN_USE", "This address is already in use")
        email = self.hs.config.email
        if medium == "email" and email is not None and email.enable_notifs \
                and email.notif_for_new_users:
            await self.hs.pushers.add_email_pusher(user_id, address)

    async def reset_password(self, body: dict[str, Any], uri: str) -> None:
        """``POST /account/password`` without an access token: the
        ``m.login.email.identity`` stage proves the account's email."""
        from myelin.domain import Requester
        from myelin.handlers.uia import EMAIL_IDENTITY

        new_password = body.get("new_password")
        if not isinstance(new_password, str) or not new_password:
            raise MatrixError(400, "M_BAD_JSON", "new_password is required")
        self.hs.auth.check_password_policy(new_password)
        uia = self.hs.uia
        session = await uia.authenticate(flows=[[EMAIL_IDENTITY]], body=body, uri=uri,
                                         method="POST", description="reset your password",
                                         requester=None)
        threepid = session.params.get("threepid") or {}
        user_id = await self.store.user_by_threepid("email", str(threepid.get("address")))
        if user_id is None:
            raise MatrixError(400, "M_THREEPID_NOT_FOUND", "No account has this address")
        await uia.finish(session)
        await self.hs.account_lifecycle.change_password(
            Requester(user_id, None, ""), new_password, bool(body.get("logout_devices", True)))

    async def submit_token(self, medium: str, sid: Any, client_secret: Any,
                           token: Any) -> None:
        """The emailed link came back: validate its session."""
        from myelin.push.mailer import EmailValidation

        sender = self.senders.get(medium)
        if not isinstance(sender, EmailValidation):
            raise MatrixError(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED",
                              f"This server does not validate {medium} addresses")
        if not all(isinstance(v, str) and v for v in (sid, client_secret, token)):
            raise MatrixError(400, "M_MISSING_PARAM", "sid, client_secret and token are required")
        await sender.submit_token(sid, client_secret, token)

    async def delete(self, user_id: str, medium: Any, address: Any) -> None:
        if not isinstance(medium, str) or not isinstance(address, str):
            raise MatrixError(400, "M_MISSING_PARAM", "medium and address are required")
        await self.store.remove_threepid(user_id, medium, address)
        if medium == "email":
            await self.hs.pushers.remove_email_pusher(user_id, address)
