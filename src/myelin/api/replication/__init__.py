"""The ``replication`` listener resource: HTTP replication calls and the status page.

``POST /_synapse/replication/<endpoint>/<txn id>`` runs a declared
:class:`~myelin.replication.http.ReplicationEndpoint` on this process (it must
be the writer for the call); ``GET /_myelin/status`` says what this process
is and how far it has followed every stream, for ``myelin fleet status``.
"""

from __future__ import annotations

from typing import Any

# The modules that declare ReplicationEndpoints: a process that only serves this
# listener (an event persister) never imports them otherwise, and
# REGISTRY would lack their endpoints ("Unknown replication endpoint").
import myelin.federation.client
import myelin.federation.event_handler
import myelin.federation.membership
import myelin.handlers.account_data
import myelin.handlers.devices
import myelin.handlers.events
import myelin.handlers.presence
import myelin.handlers.push_rules
import myelin.handlers.receipts
import myelin.handlers.to_device
import myelin.handlers.typing  # noqa: F401
from myelin.domain import MatrixError, parse_json_object
from myelin.http.request import Request
from myelin.http.routing import RouteTable, plain_path

routes = RouteTable("replication")


def _check_secret(request: Request) -> None:
    if not request.hs.replication_server.authorised(request.raw.headers.get("Authorization")):
        raise MatrixError(403, "M_FORBIDDEN", "Replication requests need the shared secret")


@routes.post(plain_path("/_synapse/replication", "/{endpoint}/{txnId}"))
async def replicate(request: Request) -> dict[str, Any]:
    _check_secret(request)
    payload = parse_json_object(await request.body_bytes(), "Replication payload")
    return await request.hs.replication_server.serve(request.param("endpoint"),
                                                     request.param("txnId"), payload)


@routes.get(plain_path("/_myelin/status"))
async def status(request: Request) -> dict[str, Any]:
    _check_secret(request)
    return await request.hs.status()
