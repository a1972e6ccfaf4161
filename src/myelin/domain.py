"""Domain types every layer shares: who is asking (:class:`Requester`) and
what went wrong (:class:`MatrixError`, answered to the client as
``{"errcode", "error"}``).

They sit below ``http/`` so handlers, stores and replication use them
without depending on the web layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


class MatrixError(Exception):
    """An error answered to the client as ``{"errcode": ..., "error": ...}``."""

    def __init__(self, status: int, errcode: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
        self.message = message
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"errcode": self.errcode, "error": self.message, **self.extra}


def forbidden(message: str = "Forbidden") -> MatrixError:
    return MatrixError(403, "M_FORBIDDEN", message)


def not_found(message: str = "Not found") -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", message)


def bad_json(message: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", message)


def missing_param(message: str) -> MatrixError:
    return MatrixError(400, "M_MISSING_PARAM", message)


def invalid_param(message: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", message)


def unrecognized(status: int = 404) -> MatrixError:
    return MatrixError(status, "M_UNRECOGNIZED", "Unrecognized request")


def too_large(message: str = "Request too large") -> MatrixError:
    return MatrixError(413, "M_TOO_LARGE", message)


def limit_exceeded(retry_after_ms: int) -> MatrixError:
    return MatrixError(429, "M_LIMIT_EXCEEDED", "Too many requests",
                       retry_after_ms=retry_after_ms)


@dataclass(frozen=True)
class Requester:
    """Who is making an authenticated request."""

    user_id: str
    device_id: str | None
    access_token: str
    is_admin: bool = False
    is_guest: bool = False
    # An admin's lock answers every request but logout with M_USER_LOCKED
    # (http/request.py); a suspension forbids what `check_not_suspended` guards.
    is_locked: bool = False
    is_suspended: bool = False
    # The application service whose as_token made the request (handlers/appservices.py).
    appservice_id: str | None = None

    @property
    def localpart(self) -> str:
        return self.user_id[1:].split(":", 1)[0]


def check_not_suspended(requester: Requester) -> None:
    """Refuse an action a suspended account may not take (joining, sending,
    inviting, changing its profile): 403 ``M_USER_SUSPENDED``."""
    if requester.is_suspended:
        raise MatrixError(403, "M_USER_SUSPENDED",
                          "You cannot perform this action while suspended.")


def parse_json_object(data: str | bytes, what: str) -> dict[str, Any]:
    """JSON text that must be an object: ``M_NOT_JSON`` / ``M_BAD_JSON`` otherwise."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise MatrixError(400, "M_NOT_JSON", f"{what} is not JSON.") from None
    if not isinstance(value, dict):
        raise bad_json(f"{what} must be a JSON object.")
    return value


def server_of(identifier: str) -> str:
    """The server name of a user id, room alias or room id: all after the
    first ':' ("" when there is none)."""
    return identifier.partition(":")[2]
