"""An SMTP sink on loopback (aiosmtpd): what the homeserver mailed, per recipient."""

from __future__ import annotations

import email
import email.policy
import re
import threading
import time
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.postgres import free_port


class _Collect:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.sink.lock:
            for rcpt in envelope.rcpt_tos:
                self.sink.messages.append((rcpt, message))
        return "250 OK"


class SmtpSink:
    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[tuple[str, EmailMessage]] = []
        self.lock = threading.Lock()
        self.controller = Controller(_Collect(self), hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for rcpt, m in self.messages if rcpt == address]

    def wait(self, address: str, count: int = 1, timeout: float = 30.0) -> list[EmailMessage]:
        """The first ``count`` mails to ``address`` (waiting for them)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.to(address)
            if len(got) >= count:
                return got[:count]
            time.sleep(0.05)
        raise AssertionError(f"{len(self.to(address))} mails to {address}, wanted {count}")


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def html_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def links_in(message: EmailMessage) -> list[str]:
    return re.findall(r"https?://\S+", text_of(message))
