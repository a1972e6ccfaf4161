"""Content repository servlets: upload, create + PUT, download, thumbnail,
config and preview_url, under ``/_matrix/media/*`` (the legacy,
unauthenticated downloads) and ``/_matrix/client/v1/media/*`` (the
authenticated ones). All are the ``media`` resource: the main process serves
them on its client listeners unless ``enable_media_repo: false``; a worker
serves them on listeners naming ``media``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from myelin.domain import MatrixError, missing_param
from myelin.handlers.media import ServedFile
from myelin.http.request import Request
from myelin.http.routing import PathPattern, RouteTable, client_v1_path
from myelin.media.serving import SECURITY_HEADERS, content_disposition

routes = RouteTable("media")

MEDIA_VERSIONS = ("r0", "v1", "v3")
_THUMBNAIL_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp",
                         "image/gif": "gif", "image/apng": "apng"}


def media_path(path: str, versions: tuple[str, ...] = MEDIA_VERSIONS) -> PathPattern:
    return PathPattern("/_matrix/media", versions, path)


def file_response(served: ServedFile) -> web.StreamResponse:
    """The file streamed from disk with the content repository's headers."""
    filename = served.filename
    if served.thumbnail:
        filename = "thumbnail." + _THUMBNAIL_EXTENSIONS.get(served.content_type, "png")
    headers = {
        **SECURITY_HEADERS,
        "Content-Type": served.content_type,
        "Content-Disposition": content_disposition(served.content_type, filename,
                                                   force_inline=served.thumbnail),
    }
    return web.FileResponse(served.path, headers=headers)


def _content_type(request: Request) -> str | None:
    return request.raw.headers.get("Content-Type")


# -- uploads --------------------------------------------------------------------
@routes.post(media_path("/upload"))
async def upload(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    hs = request.hs
    body = request.body_stream(hs.config.max_upload_size, what="Upload")
    uri = await hs.media.upload(requester, body, _content_type(request),
                                request.query_str("filename"))
    return {"content_uri": uri}


@routes.post(media_path("/create", ("v1",)))
async def create(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    request.hs.ratelimiters.media_create.check(requester.user_id)
    return await request.hs.media.create(requester)


@routes.put(media_path("/upload/{serverName}/{mediaId}", ("r0", "v3")))
async def upload_to(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    hs = request.hs
    body = request.body_stream(hs.config.max_upload_size, what="Upload")
    await hs.media.upload_to(requester, request.param("serverName"), request.param("mediaId"),
                             body, _content_type(request), request.query_str("filename"))
    return {}


# -- downloads ------------------------------------------------------------------
async def _download(request: Request, *, authenticated: bool) -> web.StreamResponse:
    served = await request.hs.media.download(
        request.param("serverName"), request.param("mediaId"), authenticated=authenticated,
        timeout_ms=request.query_int("timeout_ms"),
        allow_remote=request.query_bool("allow_remote", True),
        filename=request.params.get("fileName") or None)
    return file_response(served)


async def _thumbnail(request: Request, *, authenticated: bool) -> web.StreamResponse:
    width = request.query_int("width")
    height = request.query_int("height")
    if width is None or height is None:
        raise missing_param("width and height are required")
    method = request.query_str("method", "scale") or "scale"
    served = await request.hs.media.thumbnail(
        request.param("serverName"), request.param("mediaId"), width, height, method,
        request.query_bool("animated", False), authenticated=authenticated,
        timeout_ms=request.query_int("timeout_ms"),
        allow_remote=request.query_bool("allow_remote", True))
    return file_response(served)


@routes.get(media_path("/download/{serverName}/{mediaId}/{fileName?}"))
async def download_unauthenticated(request: Request) -> web.StreamResponse:
    return await _download(request, authenticated=False)


@routes.get(client_v1_path("/media/download/{serverName}/{mediaId}/{fileName?}"))
async def download(request: Request) -> web.StreamResponse:
    await request.requester(allow_guest=True)
    return await _download(request, authenticated=True)


@routes.get(media_path("/thumbnail/{serverName}/{mediaId}"))
async def thumbnail_unauthenticated(request: Request) -> web.StreamResponse:
    return await _thumbnail(request, authenticated=False)


@routes.get(client_v1_path("/media/thumbnail/{serverName}/{mediaId}"))
async def thumbnail(request: Request) -> web.StreamResponse:
    await request.requester(allow_guest=True)
    return await _thumbnail(request, authenticated=True)


# -- config and previews --------------------------------------------------------
@routes.get(media_path("/config"), client_v1_path("/media/config"))
async def config(request: Request) -> dict[str, Any]:
    await request.requester()  # guests may only download (the spec's list)
    return request.hs.media.media_config()


@routes.get(media_path("/preview_url"), client_v1_path("/media/preview_url"))
async def preview_url(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    hs = request.hs
    if not hs.config.media.url_preview_enabled:
        raise MatrixError(404, "M_UNRECOGNIZED", "URL previews are disabled")
    url = request.query_str("url")
    if not url:
        raise missing_param("Missing url")
    return await hs.media.preview(requester, url, request.query_int("ts"))
