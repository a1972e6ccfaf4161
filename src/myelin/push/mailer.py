"""Email: notification mails (the ``email`` pusher kind) and validation mails."""

from __future__ import annotations

from myelin.push.pool import PusherWorker


class EmailPusher(PusherWorker):
    async def process(self) -> None:
        return None
