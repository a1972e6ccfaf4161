"""The pages emailed links open: ``submit_token`` (validating an address, at
Synapse's three paths so mails and clients written for Synapse work) and
``/_synapse/client/unsubscribe`` (stop notification mails).

Both answer HTML: a person follows these links in a browser. The
unsubscribe link's GET shows a confirmation button and its POST (also what
a mail client's one-click ``List-Unsubscribe-Post`` sends) removes the
pusher, so a link scanner that only fetches pages unsubscribes no one.
"""

from __future__ import annotations

import html

from aiohttp import web

from myelin.domain import MatrixError
from myelin.http.request import Request
from myelin.http.routing import PathPattern, RouteTable, plain_path
from myelin.push.mailer import check_unsubscribe, unsubscribe_page

routes = RouteTable("client")

SUBMIT_TOKEN_PATHS = (
    PathPattern("/_matrix/client", ("unstable",), "/registration/email/submit_token"),
    PathPattern("/_matrix/client", ("unstable",), "/add_threepid/email/submit_token"),
    plain_path("/_synapse/client", "/password_reset/email/submit_token"),
)
UNSUBSCRIBE = plain_path("/_synapse/client", "/unsubscribe")


def _html(title: str, text: str, status: int = 200) -> web.Response:
    return web.Response(text=unsubscribe_page(title, text), status=status,
                        content_type="text/html")


@routes.get(*SUBMIT_TOKEN_PATHS)
@routes.post(*SUBMIT_TOKEN_PATHS)
async def submit_token(request: Request) -> web.Response:
    query = request.raw.query
    try:
        await request.hs.threepids.submit_token("email", query.get("sid"),
                                                query.get("client_secret"), query.get("token"))
    except MatrixError as e:
        return _html("Validation failed", e.message, e.status)
    return _html("Email validated",
                 "Your email address has been validated. Return to your client to continue.")


@routes.get(UNSUBSCRIBE)
async def unsubscribe_form(request: Request) -> web.Response:
    query = request.raw.query
    action = html.escape(request.raw.path_qs)
    page = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Unsubscribe</title>"
            "</head><body><p>Stop receiving notification emails at "
            f"{html.escape(query.get('pushkey', ''))}?</p>"
            f"<form method=\"post\" action=\"{action}\"><button type=\"submit\">"
            "Unsubscribe</button></form></body></html>")
    return web.Response(text=page, content_type="text/html")


@routes.post(UNSUBSCRIBE)
async def unsubscribe(request: Request) -> web.Response:
    hs = request.hs
    query = request.raw.query
    user_id, app_id = query.get("user_id", ""), query.get("app_id", "")
    pushkey, token = query.get("pushkey", ""), query.get("token", "")
    if not check_unsubscribe(hs, user_id, app_id, pushkey, token):
        return _html("Unsubscribe failed", "This unsubscribe link is not valid.", 400)
    if await hs.stores.pushers.delete_pusher(user_id, app_id, pushkey):
        await hs.invalidate_cache("pushers", [user_id])
    return _html("Unsubscribed", "You will no longer receive these notification emails.")
