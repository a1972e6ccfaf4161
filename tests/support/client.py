"""A logged-in user talking to a test server over the client API (v3)."""

from __future__ import annotations

import itertools
from typing import Any, TypeVar

from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"


class TokenClient:
    """Requests with one access token; ``ok``/``err`` assert the outcome."""

    hs: ServerProcess
    token: str

    def req(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.hs.request(method, V3 + path, body, token=self.token)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, out = self.req(method, path, body)
        assert status == 200, (method, path, status, out)
        return out

    def err(self, method: str, path: str, body: Any = None, *, status: int,
            errcode: str | None = None) -> Any:
        got, out = self.req(method, path, body)
        assert got == status, (method, path, got, out)
        if errcode is not None:
            assert out["errcode"] == errcode, out
        return out


_fresh = itertools.count()
C = TypeVar("C", bound="LoggedIn")


class LoggedIn(TokenClient):
    """A user registered on ``hs`` (shared-secret registration), with its token."""

    PREFIX = "user"

    def __init__(self, hs: ServerProcess, login: dict[str, Any]) -> None:
        self.hs = hs
        self.user_id: str = login["user_id"]
        self.token: str = login["access_token"]
        self.device_id: str = login.get("device_id", "")

    @classmethod
    def new(cls: type[C], hs: ServerProcess, *, name: str | None = None,
            password: str = "correct horse", admin: bool = False) -> C:
        localpart = f"{name or cls.PREFIX}{next(_fresh)}"
        return cls(hs, hs.register(localpart, password, admin=admin))

    def room(self, **body: Any) -> str:
        """createRoom with ``body``; the new room's id."""
        return str(self.ok("POST", "/createRoom", body)["room_id"])
