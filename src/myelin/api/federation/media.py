"""``/_matrix/federation/v1/media/download|thumbnail/{mediaId}``: our media
for other servers (authenticated media, Matrix 1.11).

The answer is ``multipart/mixed``: a JSON part (the media's metadata, today
always ``{}``) and the file itself. These are the ``media`` resource, like
the client media endpoints: they are served where the media store is.
"""

from __future__ import annotations

import secrets

import aiohttp
from aiohttp import web

from myelin.domain import missing_param
from myelin.federation.auth import authenticate_request
from myelin.handlers.media import ServedFile
from myelin.http.request import Request
from myelin.http.routing import PathPattern, RouteTable
from myelin.media.serving import content_disposition

routes = RouteTable("media")


def v1(path: str) -> PathPattern:
    return PathPattern("/_matrix/federation", ("v1",), path)


def multipart_response(served: ServedFile) -> web.StreamResponse:
    boundary = secrets.token_hex(16)
    writer = aiohttp.MultipartWriter("mixed", boundary=boundary)
    writer.append_json({})
    filename = None if served.thumbnail else served.filename
    # The payload streams the file from disk and closes it once written.
    part = writer.append(open(served.path, "rb"), {
        "Content-Type": served.content_type,
        "Content-Disposition": content_disposition(served.content_type, filename,
                                                   force_inline=served.thumbnail)})
    part.headers.pop("Content-Length", None)
    return web.Response(body=writer, headers={"Content-Type": writer.content_type})


@routes.get(v1("/media/download/{mediaId}"))
async def download(request: Request) -> web.StreamResponse:
    await authenticate_request(request)
    hs = request.hs
    served = await hs.media.download(hs.server_name, request.param("mediaId"),
                                     authenticated=True,
                                     timeout_ms=request.query_int("timeout_ms"),
                                     allow_remote=False, filename=None)
    return multipart_response(served)


@routes.get(v1("/media/thumbnail/{mediaId}"))
async def thumbnail(request: Request) -> web.StreamResponse:
    await authenticate_request(request)
    width = request.query_int("width")
    height = request.query_int("height")
    if width is None or height is None:
        raise missing_param("width and height are required")
    hs = request.hs
    served = await hs.media.thumbnail(
        hs.server_name, request.param("mediaId"), width, height,
        request.query_str("method", "scale") or "scale", request.query_bool("animated", False),
        authenticated=True, timeout_ms=request.query_int("timeout_ms"), allow_remote=False)
    return multipart_response(served)
