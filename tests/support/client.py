"""A logged-in user talking to a test server over the client API (v3)."""

from __future__ import annotations

from typing import Any

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
