"""Email: the SMTP sender, validation mails for third-party identifiers, and
notification mails (the ``email`` pusher kind).

:class:`Mailer` sends one multipart (text + HTML) message with aiosmtplib
per the ``email`` config (implicit TLS with ``force_tls``, STARTTLS when
offered unless ``enable_tls`` is false, required with
``require_transport_security``).

:class:`EmailValidation` is the ``ThreepidSender`` of the ``email`` medium:
``requestToken`` starts (or, with a higher ``send_attempt``, re-sends) a
session and mails a link to the submit_token endpoint at Synapse's paths
(:data:`SUBMIT_PATHS`), so clients written against Synapse work; following
the link validates the session, which ``/account/3pid/add``, registration
and password reset then accept.

:class:`EmailPusher` mails the user about messages that stayed unread for
``notif_delay_before_mail``: when the oldest undelivered push action is that
old, the actions so far that are still unread (no read receipt at or after
them) go into one mail, and the pusher's position moves past all of them.
Each mail has an unsubscribe link, signed with a key derived from the
server's signing key (every process of a fleet has it), that removes the
pusher.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import logging
import secrets
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiosmtplib

from myelin.domain import MatrixError
from myelin.push.http import notifies
from myelin.push.pool import PusherWorker
from myelin.storage.stores.receipts import MAIN_THREAD
from myelin.storage.stores.threepid_validation import ValidationSession

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer
    from myelin.config.push import EmailConfig
    from myelin.storage.stores.push import PushAction

logger = logging.getLogger(__name__)

EMAIL_APP_ID = "m.email"
# Where the validation link of each requestToken purpose points (Synapse's paths).
SUBMIT_PATHS = {
    "register": "_matrix/client/unstable/registration/email/submit_token",
    "add": "_matrix/client/unstable/add_threepid/email/submit_token",
    "password": "_synapse/client/password_reset/email/submit_token",
}
UNSUBSCRIBE_PATH = "_synapse/client/unsubscribe"
# Actions read per mail at most.
MAIL_BATCH = 100


class Mailer:
    def __init__(self, config: EmailConfig, server_name: str) -> None:
        self.config = config
        self.server_name = server_name

    async def send(self, to: str, subject: str, text: str, html_body: str,
                   headers: dict[str, str] | None = None) -> None:
        message = EmailMessage()
        message["From"] = self.config.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=self.server_name.split(":")[0])
        for name, value in (headers or {}).items():
            message[name] = value
        message.set_content(text)
        message.add_alternative(html_body, subtype="html")
        c = self.config
        start_tls: bool | None = None  # opportunistic
        if c.force_tls or not c.enable_tls:
            start_tls = False
        elif c.require_transport_security:
            start_tls = True
        await aiosmtplib.send(message, hostname=c.smtp_host, port=c.smtp_port,
                              username=c.smtp_user, password=c.smtp_pass,
                              use_tls=c.force_tls, start_tls=start_tls, timeout=30)


def _page(title: str, text: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title></head><body><p>{html.escape(text)}</p></body></html>")


class EmailValidation:
    """The ``email`` ThreepidSender: validation by an emailed link."""

    def __init__(self, hs: HomeServer, mailer: Mailer) -> None:
        self.hs = hs
        self.mailer = mailer
        self.store = hs.stores.threepid_sessions

    async def send_validation(self, medium: str, address: str, client_secret: str,
                              send_attempt: int, purpose: str) -> str:
        existing = await self.store.get_by_secret(client_secret, medium, address)
        if existing is not None and send_attempt <= existing.send_attempt:
            return existing.session_id
        now = int(time.time() * 1000)
        token = secrets.token_urlsafe(24)
        sid = await self.store.start(ValidationSession(
            session_id=secrets.token_urlsafe(16), medium=medium, address=address,
            client_secret=client_secret, purpose=purpose, token=token,
            send_attempt=send_attempt,
            token_expires_ts=now + self.mailer.config.validation_token_lifetime_ms,
            validated_ts=None), now)
        link = self.hs.config.public_baseurl + SUBMIT_PATHS[purpose] + "?" + urlencode(
            {"token": token, "client_secret": client_secret, "sid": sid})
        app = self.mailer.config.app_name
        what = {"register": "register an account", "add": "add this address to your account",
                "password": "reset your password"}[purpose]
        text = (f"A request was made on {self.hs.server_name} to {what} with this email "
                f"address.\n\nTo confirm, follow this link:\n\n{link}\n\n"
                "If you did not ask for this, ignore this message.\n")
        body = (f"<p>A request was made on {html.escape(self.hs.server_name)} to "
                f"{html.escape(what)} with this email address.</p>"
                f"<p><a href=\"{html.escape(link)}\">Confirm</a></p>"
                "<p>If you did not ask for this, ignore this message.</p>")
        try:
            await self.mailer.send(address, f"[{app}] Validate your email", text,
                                   f"<html><body>{body}</body></html>")
        except (aiosmtplib.SMTPException, OSError) as e:
            logger.warning("could not send a validation mail: %s", e)
            raise MatrixError(500, "M_UNKNOWN", "Could not send the validation email") from e
        return sid

    async def submit_token(self, sid: str, client_secret: str, token: str) -> None:
        """Validate a session from its emailed link (M_UNKNOWN 400 when wrong)."""
        session = await self.store.get(sid)
        now = int(time.time() * 1000)
        if (session is None or not hmac.compare_digest(session.client_secret, client_secret)
                or not hmac.compare_digest(session.token, token)):
            raise MatrixError(400, "M_UNKNOWN", "Validation token not found or has expired")
        if session.validated_ts is not None:
            return
        if session.token_expires_ts < now:
            raise MatrixError(400, "M_UNKNOWN", "Validation token not found or has expired")
        await self.store.mark_validated(sid, now)

    async def validated_address(self, sid: str, client_secret: str) -> tuple[str, str] | None:
        session = await self.store.get(sid)
        if (session is None or session.validated_ts is None
                or not hmac.compare_digest(session.client_secret, client_secret)):
            return None
        return session.medium, session.address


# -- unsubscribe links ------------------------------------------------------------
def _unsubscribe_key(hs: HomeServer) -> bytes:
    return hashlib.sha256(b"myelin email unsubscribe\x00" + hs.signing_key.encode()).digest()


def unsubscribe_token(hs: HomeServer, user_id: str, app_id: str, pushkey: str) -> str:
    message = "\x00".join((user_id, app_id, pushkey)).encode()
    return hmac.new(_unsubscribe_key(hs), message, hashlib.sha256).hexdigest()


def unsubscribe_link(hs: HomeServer, user_id: str, app_id: str, pushkey: str) -> str:
    return hs.config.public_baseurl + UNSUBSCRIBE_PATH + "?" + urlencode({
        "user_id": user_id, "app_id": app_id, "pushkey": pushkey,
        "token": unsubscribe_token(hs, user_id, app_id, pushkey)})


def check_unsubscribe(hs: HomeServer, user_id: str, app_id: str, pushkey: str,
                      token: str) -> bool:
    return hmac.compare_digest(unsubscribe_token(hs, user_id, app_id, pushkey), token)


def unsubscribe_page(title: str, text: str) -> str:
    return _page(title, text)


# -- notification mails -------------------------------------------------------------
class EmailPusher(PusherWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await super().stop()

    async def process(self) -> None:
        self.badge_wanted = False  # mails have no badge
        mailer = self.hs.mailer
        if mailer is None:
            return
        upto = self.hs.streams.view.position("events")
        actions = [a for a in await self.hs.stores.push_actions.get_for_user(
            self.pusher.user_id, after=self.pusher.last_stream_ordering, limit=MAIL_BATCH)
            if a.stream_ordering <= upto]
        if not actions:
            return
        due_ms = actions[0].inserted_ts + mailer.config.notif_delay_before_mail_ms
        now_ms = int(time.time() * 1000)
        if now_ms < due_ms:
            self._wake_at(due_ms - now_ms)
            return
        unread = await self._still_unread([a for a in actions if notifies(a.actions)])
        if unread:
            await self._mail(unread)
        await self.advance(actions[-1].stream_ordering)
        if len(actions) == MAIL_BATCH:
            self.wake()

    def _wake_at(self, delay_ms: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay_ms / 1000 + 0.05, self.wake)

    async def _still_unread(self, actions: list[PushAction]) -> list[PushAction]:
        receipts = await self.hs.stores.receipts.get_read_positions_by_thread(
            self.pusher.user_id, sorted({a.room_id for a in actions}))
        out = []
        for action in actions:
            read = receipts.get(action.room_id, {})
            if action.stream_ordering > max(read.get(MAIN_THREAD, 0),
                                            read.get(action.thread_id, 0)):
                out.append(action)
        return out

    async def _mail(self, actions: list[PushAction]) -> None:
        mailer = self.hs.mailer
        assert mailer is not None
        loaded = await self.hs.stores.events.get_events([a.event_id for a in actions])
        rooms: dict[str, list[tuple[str, str]]] = {}
        labels: dict[str, str] = {}
        for action in actions:
            stored = loaded.get(action.event_id)
            if stored is None:
                continue
            event = stored.event
            name, alias, sender_name = await self.pool.room_labels(event)
            labels[event.room_id] = name or alias or event.room_id
            body = event.content.get("body")
            text = body if isinstance(body, str) else f"sent an event ({event.type})"
            rooms.setdefault(event.room_id, []).append((sender_name or event.sender, text))
        if not rooms:
            return
        count = sum(len(v) for v in rooms.values())
        app = mailer.config.app_name
        subject = (f"[{app}] {count} unread message{'s' if count != 1 else ''} in "
                   f"{labels[next(iter(rooms))]}" if len(rooms) == 1 else
                   f"[{app}] {count} unread messages in {len(rooms)} rooms")
        unsubscribe = unsubscribe_link(self.hs, *self.key)
        client = mailer.config.client_base_url
        text_lines, html_parts = [], []
        for room_id, messages in rooms.items():
            text_lines.append(labels[room_id])
            html_parts.append(f"<h3>{html.escape(labels[room_id])}</h3><ul>")
            for sender, message in messages:
                text_lines.append(f"  {sender}: {message}")
                html_parts.append(f"<li><b>{html.escape(sender)}</b>: "
                                  f"{html.escape(message)}</li>")
            html_parts.append("</ul>")
            text_lines.append("")
        if client:
            text_lines.append(f"Open {app}: {client}")
            html_parts.append(f"<p><a href=\"{html.escape(client)}\">Open "
                              f"{html.escape(app)}</a></p>")
        text_lines.append(f"To stop these emails, follow this link: {unsubscribe}")
        html_parts.append(f"<p><a href=\"{html.escape(unsubscribe)}\">Unsubscribe</a> from "
                          "these notification emails.</p>")
        await mailer.send(self.pusher.pushkey, subject, "\n".join(text_lines) + "\n",
                          "<html><body>" + "".join(html_parts) + "</body></html>",
                          headers={"List-Unsubscribe": f"<{unsubscribe}>",
                                   "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})
