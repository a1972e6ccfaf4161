"""The origin of a federation request, for the servlets of this package.

``myelin.federation.auth.authenticate_request`` (fed-keys) checks the
X-Matrix signature; it is looked up by name so these servlets load (and
refuse every request) in a build that lacks it.
"""

from __future__ import annotations

import importlib

from myelin.domain import MatrixError
from myelin.http.request import Request


async def authenticated_origin(request: Request) -> str:
    """The server that signed the request; 401 M_UNAUTHORIZED otherwise."""
    try:
        module = importlib.import_module("myelin.federation.auth")
    except ImportError:
        raise MatrixError(401, "M_UNAUTHORIZED",
                          "Federation request authentication is unavailable") from None
    origin: str = await module.authenticate_request(request)
    return origin
