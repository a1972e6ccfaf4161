"""``/account/3pid`` and the ``requestToken`` endpoints: third-party
identifiers without an identity server (handlers/threepids.py)."""

from __future__ import annotations

from typing import Any

from myelin.domain import MatrixError
from myelin.handlers.threepids import MEDIA
from myelin.http.request import Request
from myelin.http.routing import RouteTable, client_path

routes = RouteTable("client")


@routes.get(client_path("/account/3pid"))
async def threepids(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    return {"threepids": [t.to_json() for t in
                          await request.hs.threepids.list(requester.user_id)]}


@routes.post(client_path("/account/3pid/add"))
async def add_threepid(request: Request) -> dict[str, Any]:
    hs = request.hs
    requester = await request.requester()
    body = await request.json()
    flows = [["m.login.password"]]
    session = await hs.uia.authenticate(flows=flows, body=body, uri=request.raw.path,
                                        method="POST", description="add a third-party identifier",
                                        requester=requester)
    try:
        await hs.threepids.add_from_session(requester.user_id, body.get("sid"),
                                            body.get("client_secret"))
    except MatrixError as e:
        if e.errcode != "M_THREEPID_AUTH_FAILED":
            raise
        # The address is not validated (yet): the spec's only failure here is
        # the 401 of user-interactive auth; the session stays for a retry.
        raise hs.uia.challenge(flows, session, e.errcode, e.message) from None
    await hs.uia.finish(session)
    return {}


@routes.post(client_path("/account/3pid"))
async def add_threepid_legacy(request: Request) -> dict[str, Any]:
    """The deprecated form: ``three_pid_creds`` of a validated session."""
    hs = request.hs
    requester = await request.requester()
    body = await request.json()
    creds = body.get("three_pid_creds") or body.get("threePidCreds")
    if not isinstance(creds, dict):
        raise MatrixError(400, "M_MISSING_PARAM", "three_pid_creds is required")
    try:
        await hs.threepids.add_from_session(requester.user_id, creds.get("sid"),
                                            creds.get("client_secret"))
    except MatrixError as e:
        if e.errcode != "M_THREEPID_AUTH_FAILED":
            raise
        # The spec's answer when the credentials cannot be verified.
        raise MatrixError(403, e.errcode, e.message) from None
    return {}


# sytest (and older clients) use the unstable prefix for these two.
_WITH_UNSTABLE = ("r0", "v3", "unstable")


@routes.post(client_path("/account/3pid/bind", _WITH_UNSTABLE))
async def bind_threepid(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    body = await request.json()
    await request.hs.identity.bind(requester.user_id, body)
    return {}


@routes.post(client_path("/account/3pid/unbind", _WITH_UNSTABLE))
async def unbind_threepid(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    body = await request.json()
    medium, address, id_server = body.get("medium"), body.get("address"), body.get("id_server")
    if not isinstance(medium, str) or not isinstance(address, str):
        raise MatrixError(400, "M_MISSING_PARAM", "medium and address are required")
    if id_server is not None and not isinstance(id_server, str):
        raise MatrixError(400, "M_INVALID_PARAM", "id_server must be a string")
    result = await request.hs.identity.unbind(requester.user_id, medium, address, id_server)
    return {"id_server_unbind_result": result}


@routes.post(client_path("/account/3pid/delete"))
async def delete_threepid(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    body = await request.json()
    medium, address, id_server = body.get("medium"), body.get("address"), body.get("id_server")
    await request.hs.threepids.delete(requester.user_id, medium, address)
    if id_server is not None and not isinstance(id_server, str):
        raise MatrixError(400, "M_INVALID_PARAM", "id_server must be a string")
    result = await request.hs.identity.unbind(requester.user_id, str(medium), str(address),
                                              id_server)
    return {"id_server_unbind_result": result}


def _request_token_servlet(prefix: str, purpose: str, medium: str) -> None:
    async def handler(request: Request) -> dict[str, Any]:
        body = await request.json()
        return await request.hs.threepids.request_token(purpose, medium, body)

    handler.__name__ = f"request_token_{purpose}_{medium}"
    routes.post(client_path(f"{prefix}/{medium}/requestToken"))(handler)


for _prefix, _purpose in (("/register", "register"), ("/account/3pid", "add"),
                          ("/account/password", "password")):
    for _medium in MEDIA:
        _request_token_servlet(_prefix, _purpose, _medium)
