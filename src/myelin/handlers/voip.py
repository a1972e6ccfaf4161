"""TURN credentials for VoIP (``/voip/turnServer``).

With ``turn_shared_secret`` the credentials are ephemeral, in the scheme TURN
servers such as coturn check (``use-auth-secret``): the username is
``<expiry unix seconds>:<user_id>`` and the password the base64 HMAC-SHA1 of
the username under the shared secret, so nothing is stored. Otherwise the
static ``turn_username``/``turn_password`` are handed out. Without
``turn_uris`` (or credentials) the answer is ``{}``, as the spec says.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from myelin.config.discovery import VoipConfig
from myelin.domain import MatrixError, Requester


def ephemeral_credentials(secret: str, user_id: str, expiry_s: int) -> tuple[str, str]:
    """(username, password) valid until ``expiry_s`` for a TURN server with ``secret``."""
    username = f"{expiry_s}:{user_id}"
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(mac).decode()


class TurnHandler:
    def __init__(self, config: VoipConfig) -> None:
        self.config = config

    def credentials(self, requester: Requester, now_ms: int | None = None) -> dict[str, Any]:
        config = self.config
        if requester.is_guest and not config.turn_allow_guests:
            raise MatrixError(403, "M_FORBIDDEN", "Guest access to TURN is disabled")
        if not config.turn_uris:
            return {}
        lifetime_ms = config.turn_user_lifetime_ms
        if config.turn_shared_secret:
            now = int(time.time() * 1000) if now_ms is None else now_ms
            username, password = ephemeral_credentials(
                config.turn_shared_secret, requester.user_id, (now + lifetime_ms) // 1000)
        elif config.turn_username and config.turn_password:
            username, password = config.turn_username, config.turn_password
        else:
            return {}
        return {"username": username, "password": password, "uris": list(config.turn_uris),
                "ttl": lifetime_ms // 1000}
