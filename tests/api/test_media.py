"""The media repository over HTTP (raw and matrix-nio), on both engines:
uploads round-trip byte for byte, thumbnails have the right size and type,
oversized uploads are refused before anything is stored, create + PUT,
waiting for pending media, the unauthenticated-media freeze, URL previews
against a local page, and the media admin API."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from nio import AsyncClient, DownloadResponse, LoginResponse, ResizingMethod, ThumbnailResponse
from nio import UploadResponse as NioUploadResponse
from PIL import Image

from tests.support.postgres import PostgresServer
from tests.support.server import SERVER_NAME, ServerProcess, launch_server

MAX_UPLOAD = 1024 * 1024
CLIENT_MEDIA = "/_matrix/client/v1/media"
LEGACY_MEDIA = "/_matrix/media/v3"


# -- fixtures and helpers ----------------------------------------------------------
def _stop(proc: ServerProcess) -> None:
    import shutil

    died = proc.proc is not None and proc.proc.poll() is not None
    code = proc.stop()
    if died or code not in (0, None):
        print(f"server exited (code {code}):\n{proc.log()}")
    shutil.rmtree(proc.workdir, ignore_errors=True)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def hs(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """The server under test: 1 MiB uploads, images up to 2 Mpx, previews of loopback."""
    pg: PostgresServer | None = (request.getfixturevalue("postgres_server")
                                 if request.param == "postgres" else None)
    proc = launch_server(request.param, pg, {
        "max_upload_size": "1M", "max_image_pixels": "2M", "url_preview_enabled": True,
        "url_preview_ip_range_whitelist": ["127.0.0.1/32"]})
    try:
        yield proc
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def open_hs() -> Iterator[ServerProcess]:
    """A second server (SQLite): unauthenticated media not frozen, dynamic
    thumbnails, short-lived media ids, a strict rc_media_create, URL previews
    with the default blacklist."""
    proc = launch_server("sqlite", None, {
        "enable_authenticated_media": False, "dynamic_thumbnails": True,
        "unused_expiration_time": "1s", "url_preview_enabled": True,
        "rc_media_create": {"per_second": 0.01, "burst_count": 3}})
    try:
        yield proc
    finally:
        _stop(proc)


_users = 0


def user(server: ServerProcess, name: str = "u", admin: bool = False) -> dict[str, Any]:
    global _users
    _users += 1
    return server.register(f"{name}{_users}_{int(time.time() * 1000) % 100000}", admin=admin)


def call(server: ServerProcess, method: str, path: str, *, token: str | None = None,
         data: bytes | None = None, headers: dict[str, str] | None = None,
         ) -> tuple[int, dict[str, str], bytes]:
    """One request; (status, headers, body bytes)."""
    all_headers = dict(headers or {})
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(server.url(path), data=data, method=method,
                                 headers=all_headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def call_json(server: ServerProcess, method: str, path: str, **kwargs: Any,
              ) -> tuple[int, Any]:
    status, _, body = call(server, method, path, **kwargs)
    return status, json.loads(body) if body else None


def upload(server: ServerProcess, token: str, data: bytes, content_type: str | None,
           filename: str | None = None) -> str:
    path = "/_matrix/media/v3/upload" + (f"?filename={quote(filename)}" if filename else "")
    status, body = call_json(server, "POST", path, token=token, data=data,
                             headers={} if content_type is None else
                             {"Content-Type": content_type})
    assert status == 200, body
    uri = body["content_uri"]
    assert uri.startswith(f"mxc://{SERVER_NAME}/")
    return str(uri).rsplit("/", 1)[1]


def image_bytes(size: tuple[int, int], fmt: str = "PNG", color: Any = (200, 30, 30),
                mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, fmt)
    return buf.getvalue()


def animated_gif(size: tuple[int, int], frames: int = 3) -> bytes:
    images = [Image.new("RGB", size, (i * 80, 0, 0)) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return buf.getvalue()


def query_db(server: ServerProcess, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the server's database (read-only)."""
    import yaml

    with open(server.config_path, encoding="utf-8") as f:
        database = yaml.safe_load(f)["database"]
    if database["name"] == "sqlite3":
        conn = sqlite3.connect(f"file:{database['args']['database']}?mode=ro", uri=True)
        try:
            return [tuple(r) for r in conn.execute(sql, args).fetchall()]
        finally:
            conn.close()

    async def run(db_args: dict[str, Any]) -> list[tuple[Any, ...]]:
        import asyncpg

        conn = await asyncpg.connect(user=db_args["user"], host=db_args["host"],
                                     port=db_args["port"], database=db_args["database"])
        try:
            pg_sql = sql
            for n in range(1, len(args) + 1):
                pg_sql = pg_sql.replace("?", f"${n}", 1)
            return [tuple(r) for r in await conn.fetch(pg_sql, *args)]
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run(database["args"])).result()


def media_rows(server: ServerProcess) -> int:
    return int(query_db(server, "SELECT COUNT(*) FROM local_media")[0][0])


def stored_files(server: ServerProcess, sub: str) -> list[str]:
    base = os.path.join(server.workdir, "media", sub)
    return [os.path.join(d, f) for d, _, files in os.walk(base) for f in files]


# -- uploads and downloads ---------------------------------------------------------
def test_upload_round_trips_byte_for_byte(hs: ServerProcess) -> None:
    token = user(hs)["access_token"]
    data = image_bytes((640, 400))
    media_id = upload(hs, token, data, "image/png", "holiday.png")
    status, headers, body = call(hs, "GET", f"{CLIENT_MEDIA}/download/{SERVER_NAME}/{media_id}",
                                 token=token)
    assert status == 200 and body == data
    assert headers["Content-Type"] == "image/png"
    assert headers["Content-Disposition"] == 'inline; filename="holiday.png"'
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert headers["Content-Security-Policy"].startswith("sandbox; default-src 'none';")
    assert headers["Access-Control-Allow-Origin"] == "*"
    # A file name in the path is the one the download is given.
    status, headers, body = call(
        hs, "GET", f"{CLIENT_MEDIA}/download/{SERVER_NAME}/{media_id}/other.png", token=token)
    assert status == 200 and body == data
    assert headers["Content-Disposition"] == 'inline; filename="other.png"'


def test_unsafe_types_are_attachments_and_names_survive(hs: ServerProcess) -> None:
    token = user(hs)["access_token"]
    page = b"<html><script>alert(1)</script></html>"
    media_id = upload(hs, token, page, "text/html", "page.html")
    status, headers, body = call(hs, "GET", f"{CLIENT_MEDIA}/download/{SERVER_NAME}/{media_id}",
                                 token=token)
    assert status == 200 and body == page
    assert headers["Content-Type"] == "text/html"
    assert headers["Content-Disposition"] == 'attachment; filename="page.html"'
    # No Content-Type (urllib would add one: send it empty): octet-stream; no
    # filename: none in the header.
    media_id = upload(hs, token, b"\x00\x01", "")
    status, headers, body = call(hs, "GET", f"{CLIENT_MEDIA}/download/{SERVER_NAME}/{media_id}",
                                 token=token)
    assert status == 200 and body == b"\x00\x01"
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"] == "attachment"
    # A non-ASCII name is kept, RFC 6266 style.
    media_id = upload(hs, token, b"hi", "text/plain", "привет.txt")
    _, headers, _ = call(hs, "GET", f"{CLIENT_MEDIA}/download/{SERVER_NAME}/{media_id}",
                         token=token)
    assert headers["Content-Disposition"] == ("inline; filename*=utf-8''"
                                              + quote("привет.txt", safe=""))


def test_authenticated_endpoints_need_a_token(hs: ServerProcess) -> None:
    token = user(hs)["access_token"]
    media_id = upload(hs, token, image_bytes((64, 64)), "image/png")
    before = media_rows(hs)
    for path in (f"{CLIENT_MEDIA}/download/{SERVER_NAME}/{media_id}",
                 f"{CLIENT_MEDIA}/thumbnail/{SERVER_NAME}/{media_id}?width=32&height=32",
                 f"{CLIENT_MEDIA}/config", f"{CLIENT_MEDIA}/preview_url?url=http://x.org/",
                 f"{LEGACY_MEDIA}/config"):
        status, body = call_json(hs, "GET", path)
        assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN"), path
    for method, path in (("POST", f"{LEGACY_MEDIA}/upload"), ("POST", "/_matrix/media/v1/create"),
                         ("PUT", f"{LEGACY_MEDIA}/upload/{SERVER_NAME}/abcdefgh")):
        status, body = call_json(hs, method, path, data=b"x")
        assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN"), path
    assert media_rows(hs) == before
    assert call_json(hs, "GET", f"{CLIENT_MEDIA}/config", token=token) == (
        200, {"m.upload.size": MAX_UPLOAD})


def test_unauthenticated_download_is_frozen_for_new_media(hs: ServerProcess) -> None:
    """enable_authenticated_media (on by default): media uploaded now is served
    only by the authenticated endpoints."""
    token = user(hs)["access_token"]
    media_id = upload(hs, token, image_bytes((64, 64)), "image/png")
    for path in (f"{LEGACY_MEDIA}/download/{SERVER_NAME}/{media_id}",
                 f"{LEGACY_MEDIA}/thumbnail/{SERVER_NAME}/{media_id}?width=32&height=32"):
        status, body = call_json(hs, "GET", path)
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    assert call(hs, "GET", f"{CLIENT_MEDIA}/download/{SERVER_NAME}/{media_id}",
                token=token)[0] == 200


def test_unfrozen_media_downloads_without_a_token(open_hs: ServerProcess) -> None:
    token = user(open_hs)["access_token"]
    data = b"plain words"
    media_id = upload(open_hs, token, data, "text/plain", "words.txt")
    for prefix in (LEGACY_MEDIA, "/_matrix/media/r0"):
        status, headers, body = call(open_hs, "GET",
                                     f"{prefix}/download/{SERVER_NAME}/{media_id}")
        assert status == 200 and body == data
        assert headers["Content-Disposition"] == 'inline; filename="words.txt"'


def test_freezing_keeps_earlier_media_served_without_a_token() -> None:
    """Turning enable_authenticated_media on freezes the unauthenticated
    downloads: media uploaded before still works there, media uploaded after
    only through /_matrix/client/v1/media."""
    import yaml

    server = launch_server("sqlite", None, {"enable_authenticated_media": False})
    try:
        token = user(server)["access_token"]
        before = upload(server, token, b"before the freeze", "text/plain")
        with open(server.config_path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
        config["enable_authenticated_media"] = True
        with open(server.config_path, "w", encoding="utf-8") as f:
            yaml.safe_dump(config, f)
        server.restart()
        after = upload(server, token, b"after the freeze", "text/plain")
        legacy = f"{LEGACY_MEDIA}/download/{SERVER_NAME}/"
        assert call(server, "GET", legacy + before)[2] == b"before the freeze"
        assert call(server, "GET", legacy + after)[0] == 404
        for media_id, data in ((before, b"before the freeze"), (after, b"after the freeze")):
            assert call(server, "GET", f"{CLIENT_MEDIA}/download/{SERVER_NAME}/{media_id}",
                        token=token)[2] == data
        # url_preview_enabled is off by default: there is no preview endpoint.
        status, err = call_json(server, "GET", f"{CLIENT_MEDIA}/preview_url?url=http://x.org/",
                                token=token)
        assert (status, err["errcode"]) == (404, "M_UNRECOGNIZED")
    finally:
        _stop(server)


def test_unknown_and_unreachable_media(hs: ServerProcess) -> None:
    token = user(hs)["access_token"]
    for server_name, media_id in ((SERVER_NAME, "doesNotExist123"),
                                  (SERVER_NAME, "..%2F..%2Fetc%2Fpasswd")):
        status, body = call_json(
            hs, "GET", f"{CLIENT_MEDIA}/download/{server_name}/{media_id}", token=token)
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND"), media_id
    # A server that cannot be reached: 502, as Synapse answers (remote media
    # itself: tests/federation/test_queries.py).
    status, body = call_json(
        hs, "GET", f"{CLIENT_MEDIA}/download/elsewhere.example/abcdef", token=token)
    assert (status, body["errcode"]) == (502, "M_UNKNOWN")
    # A row whose file went missing (a restored backup, say) is not found either.
    media_id = upload(hs, token, image_bytes((64, 64)), "image/png")
    os.unlink(os.path.join(hs.workdir, "media", "local_content", media_id[:2], media_id[2:4],
                           media_id[4:]))
    for path in (f"{CLIENT_MEDIA}/download/{SERVER_NAME}/{media_id}",
                 f"{CLIENT_MEDIA}/thumbnail/{SERVER_NAME}/{media_id}?width=32&height=32"):
        status, body = call_json(hs, "GET", path, token=token)
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND"), path


def _raw_upload(server: ServerProcess, token: str, headers: list[str],
                chunks: list[bytes]) -> tuple[int, dict[str, Any]]:
    """Send an upload over a plain socket (so the early answer is read even
    though the body is not all sent) and parse the JSON answer."""
    port = int(server.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = ["POST /_matrix/media/v3/upload?filename=big.bin HTTP/1.1",
                f"Host: 127.0.0.1:{port}", f"Authorization: Bearer {token}",
                "Content-Type: application/octet-stream", *headers, "", ""]
        sock.sendall("\r\n".join(head).encode())
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and stopped reading: fine
        data = b""
        while b"\r\n\r\n" not in data:
            part = sock.recv(65536)
            if not part:
                break
            data += part
        head_text, _, rest = data.partition(b"\r\n\r\n")
        status = int(head_text.split(b" ", 2)[1])
        length = next(int(line.split(b":", 1)[1]) for line in head_text.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            part = sock.recv(65536)
            if not part:
                break
            rest += part
        return status, json.loads(rest[:length])


def test_oversized_upload_is_refused_before_it_is_stored(hs: ServerProcess) -> None:
    token = user(hs)["access_token"]
    rows = media_rows(hs)
    files = stored_files(hs, "local_content")
    # Content-Length over the limit: refused at once, without sending the body.
    status, body = _raw_upload(hs, token, [f"Content-Length: {MAX_UPLOAD + 1}"], [])
    assert (status, body["errcode"]) == (413, "M_TOO_LARGE")
    # A chunked body: the server stops at the limit and throws the partial file away.
    piece = b"x" * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece)] * (MAX_UPLOAD // len(piece) + 2)
    status, body = _raw_upload(hs, token, ["Transfer-Encoding: chunked"], [*chunks, b"0\r\n\r\n"])
    assert (status, body["errcode"]) == (413, "M_TOO_LARGE")
    assert media_rows(hs) == rows
    assert stored_files(hs, "local_content") == files
    assert stored_files(hs, "tmp") == []
    # Exactly the limit is fine.
    upload(hs, token, b"y" * MAX_UPLOAD, "application/octet-stream")
    assert media_rows(hs) == rows + 1


# -- create + PUT -------------------------------------------------------------------
def _create(server: ServerProcess, token: str) -> tuple[str, dict[str, Any]]:
    status, body = call_json(server, "POST", "/_matrix/media/v1/create", token=token)
    assert status == 200, body
    return str(body["content_uri"]).rsplit("/", 1)[1], body


def test_create_then_put_then_download(hs: ServerProcess) -> None:
    alice, bob = user(hs)["access_token"], user(hs)["access_token"]
    before = int(time.time() * 1000)
    media_id, body = _create(hs, alice)
    assert body["content_uri"] == f"mxc://{SERVER_NAME}/{media_id}"
    # The spec's recommended default: 24 hours to upload.
    assert before + 23 * 3600_000 < body["unused_expires_at"] <= int(time.time() * 1000) \
        + 24 * 3600_000
    download = f"{CLIENT_MEDIA}/download/{SERVER_NAME}/{media_id}"
    status, err = call_json(hs, "GET", download + "?timeout_ms=100", token=alice)
    assert (status, err["errcode"]) == (504, "M_NOT_YET_UPLOADED")
    put = f"{LEGACY_MEDIA}/upload/{SERVER_NAME}/{media_id}?filename=late.txt"
    status, err = call_json(hs, "PUT", put, token=bob, data=b"not yours",
                            headers={"Content-Type": "text/plain"})
    assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
    assert call_json(hs, "PUT", put, token=alice, data=b"content",
                     headers={"Content-Type": "text/plain"}) == (200, {})
    status, headers, data = call(hs, "GET", download, token=bob)
    assert status == 200 and data == b"content"
    assert headers["Content-Disposition"] == 'inline; filename="late.txt"'
    status, err = call_json(hs, "PUT", put, token=alice, data=b"again",
                            headers={"Content-Type": "text/plain"})
    assert (status, err["errcode"]) == (409, "M_CANNOT_OVERWRITE_MEDIA")
    assert call(hs, "GET", download, token=bob)[2] == b"content"
    for bad in (f"{SERVER_NAME}/neverCreated1", f"elsewhere.example/{media_id}"):
        status, err = call_json(hs, "PUT", f"{LEGACY_MEDIA}/upload/{bad}", token=alice,
                                data=b"x")
        assert (status, err["errcode"]) == (404, "M_NOT_FOUND")


def test_download_waits_for_pending_media(hs: ServerProcess) -> None:
    token = user(hs)["access_token"]
    media_id, _ = _create(hs, token)
    result: list[tuple[int, dict[str, str], bytes]] = []
    waiter = threading.Thread(target=lambda: result.append(call(
        hs, "GET", f"{CLIENT_MEDIA}/download/{SERVER_NAME}/{media_id}?timeout_ms=30000",
        token=token)))
    waiter.start()
    time.sleep(0.5)
    assert call_json(hs, "PUT", f"{LEGACY_MEDIA}/upload/{SERVER_NAME}/{media_id}", token=token,
                     data=b"worth the wait") == (200, {})
    waiter.join(60)
    assert result and result[0][0] == 200 and result[0][2] == b"worth the wait"


def test_pending_uploads_are_limited(hs: ServerProcess) -> None:
    token = user(hs)["access_token"]
    for _ in range(5):
        _create(hs, token)
    status, err = call_json(hs, "POST", "/_matrix/media/v1/create", token=token)
    assert (status, err["errcode"]) == (429, "M_LIMIT_EXCEEDED")


def test_creating_media_ids_is_rate_limited(open_hs: ServerProcess) -> None:
    token = user(open_hs)["access_token"]
    for _ in range(3):
        _create(open_hs, token)
    status, err = call_json(open_hs, "POST", "/_matrix/media/v1/create", token=token)
    assert (status, err["errcode"]) == (429, "M_LIMIT_EXCEEDED") and err["retry_after_ms"] > 0
    # Per user: someone else may still create one.
    _create(open_hs, user(open_hs)["access_token"])


def test_expired_media_ids(open_hs: ServerProcess) -> None:
    token = user(open_hs)["access_token"]
    media_id, body = _create(open_hs, token)
    while int(time.time() * 1000) <= body["unused_expires_at"]:
        time.sleep(0.2)
    status, err = call_json(open_hs, "PUT", f"{LEGACY_MEDIA}/upload/{SERVER_NAME}/{media_id}",
                            token=token, data=b"too late")
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")
    status, err = call_json(open_hs, "GET",
                            f"{CLIENT_MEDIA}/download/{SERVER_NAME}/{media_id}?timeout_ms=100",
                            token=token)
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")


# -- thumbnails -------------------------------------------------------------------
def thumbnail(server: ServerProcess, token: str, media_id: str, query: str,
              ) -> tuple[int, dict[str, str], bytes]:
    return call(server, "GET", f"{CLIENT_MEDIA}/thumbnail/{SERVER_NAME}/{media_id}?{query}",
                token=token)


def open_image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_thumbnails_have_the_right_size_and_type(hs: ServerProcess) -> None:
    token = user(hs)["access_token"]
    png = upload(hs, token, image_bytes((1000, 800)), "image/png")
    jpeg = upload(hs, token, image_bytes((1200, 900), "JPEG"), "image/jpeg")
    cases = [
        # (media, query, expected size, expected type)
        (png, "width=96&height=96&method=crop", (96, 96), "image/png"),
        (png, "width=32&height=32&method=crop", (32, 32), "image/png"),
        # Larger than asked, never smaller: 40x40 is answered from 96x96.
        (png, "width=40&height=40&method=crop", (96, 96), "image/png"),
        # scale keeps the aspect ratio and fits the configured box.
        (png, "width=320&height=240&method=scale", (300, 240), "image/png"),
        (png, "width=600&height=400&method=scale", (600, 480), "image/png"),
        (jpeg, "width=640&height=480", (640, 480), "image/jpeg"),
        (jpeg, "width=90&height=90&method=crop", (96, 96), "image/jpeg"),
    ]
    for media_id, query, size, kind in cases:
        status, headers, body = thumbnail(hs, token, media_id, query)
        assert status == 200, (query, body)
        assert headers["Content-Type"] == kind, query
        image = open_image(body)
        assert image.size == size, query
        assert image.format == kind.split("/")[1].upper()
        assert headers["Content-Disposition"].startswith("inline")
        assert headers["X-Content-Type-Options"] == "nosniff"
    # Generated once: the second answer is the cached file, recorded in the table.
    first = thumbnail(hs, token, png, "width=96&height=96&method=crop")[2]
    assert thumbnail(hs, token, png, "width=96&height=96&method=crop")[2] == first
    rows = query_db(hs, "SELECT width, height, method, thumbnail_type FROM"
                        " local_media_thumbnails WHERE media_id = ? AND method = ?", png, "crop")
    assert sorted(rows) == [(32, 32, "crop", "image/png"), (96, 96, "crop", "image/png")]
    assert any(png[4:] in path for path in stored_files(hs, "local_thumbnails"))


def test_small_images_are_returned_as_they_are(hs: ServerProcess) -> None:
    token = user(hs)["access_token"]
    small = image_bytes((20, 10))
    media_id = upload(hs, token, small, "image/png")
    status, headers, body = thumbnail(hs, token, media_id, "width=96&height=96&method=crop")
    assert status == 200 and body == small and headers["Content-Type"] == "image/png"


def test_animated_thumbnails_only_when_asked(hs: ServerProcess) -> None:
    token = user(hs)["access_token"]
    media_id = upload(hs, token, animated_gif((200, 200)), "image/gif")
    status, headers, body = thumbnail(hs, token, media_id,
                                      "width=96&height=96&method=crop&animated=true")
    assert status == 200 and headers["Content-Type"] == "image/webp"
    image = open_image(body)
    assert image.size == (96, 96) and getattr(image, "n_frames", 1) == 3
    for query in ("width=96&height=96&method=crop&animated=false",
                  "width=96&height=96&method=crop"):
        status, headers, body = thumbnail(hs, token, media_id, query)
        assert status == 200 and headers["Content-Type"] == "image/png"
        image = open_image(body)
        assert image.size == (96, 96) and not getattr(image, "is_animated", False)
    # Even when it is small enough to be returned as it is, a GIF is not
    # animated unless asked.
    small = upload(hs, token, animated_gif((20, 20)), "image/gif")
    status, headers, body = thumbnail(hs, token, small, "width=96&height=96")
    assert headers["Content-Type"] == "image/png" and open_image(body).size == (20, 20)
    # animated=true on a JPEG behaves as false.
    jpeg = upload(hs, token, image_bytes((300, 300), "JPEG"), "image/jpeg")
    _, headers, _ = thumbnail(hs, token, jpeg, "width=96&height=96&method=crop&animated=true")
    assert headers["Content-Type"] == "image/jpeg"


def test_thumbnail_errors(hs: ServerProcess) -> None:
    token = user(hs)["access_token"]
    text = upload(hs, token, b"just text", "text/plain")
    liar = upload(hs, token, b"not really a png", "image/png")
    huge = upload(hs, token, image_bytes((2000, 1100), color=0, mode="L"), "image/png")
    image = upload(hs, token, image_bytes((100, 100)), "image/png")
    for media_id, query, status, errcode in (
            (text, "width=32&height=32", 400, "M_UNKNOWN"),
            (liar, "width=32&height=32", 400, "M_UNKNOWN"),
            (huge, "width=32&height=32", 413, "M_TOO_LARGE"),
            (image, "width=-1&height=32", 400, "M_INVALID_PARAM"),
            (image, "width=abc&height=32", 400, "M_INVALID_PARAM"),
            (image, "height=32", 400, "M_MISSING_PARAM"),
            (image, "width=32&height=32&method=stretch", 400, "M_INVALID_PARAM"),
            (image, "width=32&height=32&animated=maybe", 400, "M_INVALID_PARAM")):
        got, _, body = thumbnail(hs, token, media_id, query)
        assert (got, json.loads(body)["errcode"]) == (status, errcode), query
    media_id, _ = _create(hs, token)
    got, _, body = thumbnail(hs, token, media_id, "width=32&height=32&timeout_ms=100")
    assert (got, json.loads(body)["errcode"]) == (504, "M_NOT_YET_UPLOADED")
    assert query_db(hs, "SELECT COUNT(*) FROM local_media_thumbnails WHERE media_id IN"
                        " (?, ?, ?)", text, liar, huge)[0][0] == 0


def test_dynamic_thumbnails_are_made_to_measure(open_hs: ServerProcess) -> None:
    token = user(open_hs)["access_token"]
    original = image_bytes((1000, 800))
    media_id = upload(open_hs, token, original, "image/png")
    for query, size in (("width=50&height=40&method=scale", (50, 40)),
                        ("width=123&height=45&method=crop", (123, 45)),
                        # Never upscaled: the box's aspect ratio, shrunk to fit.
                        ("width=1200&height=400&method=crop", (1000, 333)),
                        # No bigger than asked: the original itself.
                        ("width=2000&height=2000&method=crop", (1000, 800))):
        status, _, body = call(open_hs, "GET",
                               f"{LEGACY_MEDIA}/thumbnail/{SERVER_NAME}/{media_id}?{query}")
        assert status == 200 and open_image(body).size == size, query


# -- matrix-nio ----------------------------------------------------------------------
async def _nio_round_trip(server: ServerProcess) -> None:
    login = user(server)
    client = AsyncClient(server.base_url, login["user_id"])
    try:
        assert isinstance(await client.login("correct horse"), LoginResponse)
        avatar = image_bytes((256, 256), color=(0, 120, 255))
        photo = image_bytes((1600, 1200), "JPEG", color=(10, 200, 10))
        uploaded = {}
        for name, data, kind in (("avatar.png", avatar, "image/png"),
                                 ("photo.jpg", photo, "image/jpeg")):
            response, _ = await client.upload(io.BytesIO(data), content_type=kind,
                                              filename=name, filesize=len(data))
            assert isinstance(response, NioUploadResponse), response
            uploaded[name] = response.content_uri
        await client.set_avatar(uploaded["avatar.png"])
        assert (await client.get_avatar()).avatar_url == uploaded["avatar.png"]
        for name, data, kind in (("avatar.png", avatar, "image/png"),
                                 ("photo.jpg", photo, "image/jpeg")):
            got = await client.download(mxc=uploaded[name])
            assert isinstance(got, DownloadResponse), got
            assert got.body == data and got.content_type == kind and got.filename == name
        server_name, media_id = uploaded["avatar.png"][len("mxc://"):].split("/")
        thumb = await client.thumbnail(server_name, media_id, 96, 96, ResizingMethod.crop)
        assert isinstance(thumb, ThumbnailResponse), thumb
        assert thumb.content_type == "image/png" and open_image(thumb.body).size == (96, 96)
        server_name, media_id = uploaded["photo.jpg"][len("mxc://"):].split("/")
        thumb = await client.thumbnail(server_name, media_id, 320, 240, ResizingMethod.scale)
        assert isinstance(thumb, ThumbnailResponse), thumb
        assert thumb.content_type == "image/jpeg" and open_image(thumb.body).size == (320, 240)
    finally:
        await client.close()


def test_nio_upload_download_thumbnail(hs: ServerProcess) -> None:
    asyncio.run(_nio_round_trip(hs))


# -- URL previews --------------------------------------------------------------------
PAGE = b"""<!doctype html><html><head>
<title>Fallback title</title>
<meta property="og:title" content="A Cool Page">
<meta property="og:description" content="Things &amp; stuff">
<meta property="og:image" content="/logo.png">
<meta property="og:type" content="article">
</head><body><p>hello</p></body></html>"""


@pytest.fixture(scope="module")
def site() -> Iterator[dict[str, Any]]:
    """A local web server: an OpenGraph page, its image, a redirect elsewhere."""
    hits: dict[str, int] = {}
    logo = image_bytes((60, 30), color=(1, 2, 3))
    state: dict[str, Any] = {"hits": hits, "logo": logo}

    async def handle(request: web.Request) -> web.StreamResponse:
        hits[request.path] = hits.get(request.path, 0) + 1
        if request.path == "/page":
            return web.Response(body=PAGE, content_type="text/html", charset="utf-8")
        if request.path == "/logo.png":
            return web.Response(body=logo, content_type="image/png")
        if request.path == "/plain":
            return web.Response(text="no tags here", content_type="text/html")
        if request.path == "/redirect-out":
            raise web.HTTPFound(f"http://127.0.0.2:{state['port']}/page")
        if request.path == "/redirect-in":
            raise web.HTTPFound("/page")
        if request.path == "/big":
            return web.Response(body=b"x" * (11 * 1024 * 1024), content_type="text/html")
        return web.Response(status=404)

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(tcp.start())
    state["port"] = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _preview(server: ServerProcess, token: str, url: str, prefix: str = CLIENT_MEDIA,
             ) -> tuple[int, Any]:
    return call_json(server, "GET", f"{prefix}/preview_url?url={quote(url, safe='')}",
                     token=token)


def test_preview_reads_opengraph(hs: ServerProcess, site: dict[str, Any]) -> None:
    token = user(hs)["access_token"]
    base = f"http://127.0.0.1:{site['port']}"
    status, og = _preview(hs, token, f"{base}/page?v={hs.engine}")
    assert status == 200, og
    assert og["og:title"] == "A Cool Page"
    assert og["og:description"] == "Things & stuff"
    assert og["og:type"] == "article"
    assert og["og:image"].startswith(f"mxc://{SERVER_NAME}/")
    assert og["og:image:type"] == "image/png"
    assert (og["og:image:width"], og["og:image:height"]) == (60, 30)
    assert og["matrix:image:size"] == len(site["logo"])
    # The image is served from our repository.
    media_id = og["og:image"].rsplit("/", 1)[1]
    assert call(hs, "GET", f"{CLIENT_MEDIA}/download/{SERVER_NAME}/{media_id}",
                token=token)[2] == site["logo"]
    # Cached per URL: asking again does not fetch the page again.
    hits = site["hits"]["/page"]
    assert _preview(hs, token, f"{base}/page?v={hs.engine}", LEGACY_MEDIA) == (200, og)
    assert site["hits"]["/page"] == hits
    # A preview as of a time before the cached one was fetched is fetched anew.
    status, older = call_json(hs, "GET", f"{CLIENT_MEDIA}/preview_url?url="
                              f"{quote(f'{base}/page?v={hs.engine}', safe='')}&ts=1000",
                              token=token)
    assert status == 200 and older["og:title"] == "A Cool Page"
    assert site["hits"]["/page"] == hits + 1
    # Fallbacks and an in-site redirect.
    status, og = _preview(hs, token, f"{base}/plain?v={hs.engine}")
    assert status == 200 and og == {}
    status, og = _preview(hs, token, f"{base}/redirect-in?v={hs.engine}")
    assert status == 200 and og["og:title"] == "A Cool Page"


def test_preview_checks_redirects_and_size(hs: ServerProcess, site: dict[str, Any]) -> None:
    token = user(hs)["access_token"]
    base = f"http://127.0.0.1:{site['port']}"
    # 127.0.0.2 is loopback too, and not whitelisted: the redirect is not followed.
    status, err = _preview(hs, token, f"{base}/redirect-out?v={hs.engine}")
    assert (status, err["errcode"]) == (403, "M_UNKNOWN")
    status, err = _preview(hs, token, f"{base}/big?v={hs.engine}")
    assert (status, err["errcode"]) == (502, "M_TOO_LARGE")
    status, err = _preview(hs, token, "ftp://127.0.0.1/file")
    assert status == 502
    status, err = call_json(hs, "GET", f"{CLIENT_MEDIA}/preview_url", token=token)
    assert (status, err["errcode"]) == (400, "M_MISSING_PARAM")


def test_preview_of_loopback_is_refused_by_default(open_hs: ServerProcess,
                                                   site: dict[str, Any]) -> None:
    token = user(open_hs)["access_token"]
    before = dict(site["hits"])
    status, err = _preview(open_hs, token, f"http://127.0.0.1:{site['port']}/page?d=1")
    assert (status, err) == (403, {"errcode": "M_UNKNOWN", "error": "IP address blocked"})
    status, err = _preview(open_hs, token, f"http://localhost:{site['port']}/page?d=2")
    assert (status, err["errcode"]) == (502, "M_UNKNOWN")
    status, err = _preview(open_hs, token, f"http://[::ffff:127.0.0.1]:{site['port']}/page")
    assert status == 403
    assert site["hits"] == before  # nothing reached the page


# -- admin API ---------------------------------------------------------------------
ADMIN = "/_synapse/admin/v1"


def test_media_admin_api_is_for_admins_only(hs: ServerProcess) -> None:
    login = user(hs)
    token, user_id = login["access_token"], login["user_id"]
    media_id = upload(hs, token, image_bytes((32, 32)), "image/png")
    room = "!r:" + SERVER_NAME
    for method, path in (
            ("POST", "/purge_media_cache?before_ts=40000000000"),
            ("GET", f"/room/{quote(room)}/media"),
            ("POST", f"/room/{quote(room)}/media/quarantine"),
            ("POST", f"/quarantine_media/{quote(room)}"),
            ("GET", f"/users/{quote(user_id)}/media"),
            ("DELETE", f"/users/{quote(user_id)}/media"),
            ("POST", f"/user/{quote(user_id)}/media/quarantine"),
            ("GET", f"/media/{SERVER_NAME}/{media_id}"),
            ("DELETE", f"/media/{SERVER_NAME}/{media_id}"),
            ("POST", "/media/delete?before_ts=40000000000"),
            ("POST", f"/media/{SERVER_NAME}/delete?before_ts=40000000000"),
            ("POST", "/media/elsewhere.example/delete?before_ts=40000000000"),
            ("POST", f"/media/quarantine/{SERVER_NAME}/{media_id}"),
            ("POST", f"/media/unquarantine/{SERVER_NAME}/{media_id}"),
            ("POST", f"/media/protect/{media_id}"),
            ("POST", f"/media/unprotect/{media_id}")):
        status, body = call_json(hs, method, ADMIN + path, token=token)
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), path
        status, body = call_json(hs, method, ADMIN + path)
        assert status == 401, path
    # Nothing happened to the media.
    assert call(hs, "GET", f"{CLIENT_MEDIA}/download/{SERVER_NAME}/{media_id}",
                token=token)[0] == 200
    assert query_db(hs, "SELECT quarantined_by, safe_from_quarantine FROM local_media"
                        " WHERE media_id = ?", media_id) == [(None, 0)]


def test_admin_lists_quarantines_protects_and_deletes(hs: ServerProcess) -> None:
    admin = user(hs, "admin", admin=True)["access_token"]
    login = user(hs)
    token, user_id = login["access_token"], login["user_id"]
    ids = []
    for i in range(3):
        ids.append(upload(hs, token, image_bytes((40 + i, 40)), "image/png", f"f{i}.png"))
        time.sleep(0.01)  # distinct created_ts: the listing is ordered by it
    listing = call_json(hs, "GET", f"{ADMIN}/users/{quote(user_id)}/media?limit=2",
                        token=admin)[1]
    assert listing["total"] == 3 and listing["next_token"] == 2
    assert [m["media_id"] for m in listing["media"]] == ids[:2]
    first = listing["media"][0]
    assert first["upload_name"] == "f0.png" and first["media_type"] == "image/png"
    assert first["quarantined_by"] is None and first["safe_from_quarantine"] is False
    rest = call_json(hs, "GET", f"{ADMIN}/users/{quote(user_id)}/media?from=2&dir=f",
                     token=admin)[1]
    assert [m["media_id"] for m in rest["media"]] == ids[2:] and "next_token" not in rest
    info = call_json(hs, "GET", f"{ADMIN}/media/{SERVER_NAME}/{ids[0]}", token=admin)[1]
    assert info["media_info"]["user_id"] == user_id
    assert info["media_info"]["media_length"] == len(image_bytes((40, 40)))
    # Uploader and time are recorded for each media.
    row = query_db(hs, "SELECT user_id, created_ts FROM local_media WHERE media_id = ?", ids[0])
    assert row[0][0] == user_id and abs(row[0][1] - time.time() * 1000) < 3600_000

    download = f"{CLIENT_MEDIA}/download/{SERVER_NAME}/"
    assert call_json(hs, "POST", f"{ADMIN}/media/quarantine/{SERVER_NAME}/{ids[0]}",
                     token=admin) == (200, {})
    assert call(hs, "GET", download + ids[0], token=token)[0] == 404
    assert call_json(hs, "POST", f"{ADMIN}/media/unquarantine/{SERVER_NAME}/{ids[0]}",
                     token=admin) == (200, {})
    assert call(hs, "GET", download + ids[0], token=token)[0] == 200
    # Protected media is not quarantined with the rest of the user's.
    assert call_json(hs, "POST", f"{ADMIN}/media/protect/{ids[1]}", token=admin) == (200, {})
    assert call_json(hs, "POST", f"{ADMIN}/user/{quote(user_id)}/media/quarantine",
                     token=admin) == (200, {"num_quarantined": 2})
    assert [call(hs, "GET", download + m, token=token)[0] for m in ids] == [404, 200, 404]
    assert call_json(hs, "POST", f"{ADMIN}/media/unprotect/{ids[1]}", token=admin) == (200, {})

    # Deleting removes the row and the file.
    path = os.path.join(hs.workdir, "media", "local_content", ids[2][:2], ids[2][2:4],
                        ids[2][4:])
    assert os.path.exists(path)
    assert call_json(hs, "DELETE", f"{ADMIN}/media/{SERVER_NAME}/{ids[2]}", token=admin) == (
        200, {"deleted_media": [ids[2]], "total": 1})
    assert not os.path.exists(path)
    assert call(hs, "GET", download + ids[2], token=token)[0] == 404
    status, err = call_json(hs, "DELETE", f"{ADMIN}/media/{SERVER_NAME}/{ids[2]}", token=admin)
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")
    assert call_json(hs, "DELETE", f"{ADMIN}/users/{quote(user_id)}/media", token=admin)[1][
        "total"] == 2
    assert call_json(hs, "GET", f"{ADMIN}/users/{quote(user_id)}/media",
                     token=admin)[1] == {"media": [], "total": 0}
    status, err = call_json(hs, "GET", f"{ADMIN}/users/{quote('@nobody:' + SERVER_NAME)}/media",
                            token=admin)
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")


def test_admin_room_media_and_bulk_delete(hs: ServerProcess) -> None:
    # Last in the module: the bulk delete removes every older upload of this server.
    admin = user(hs, "admin", admin=True)["access_token"]
    login = user(hs)
    token, user_id = login["access_token"], login["user_id"]
    image = upload(hs, token, image_bytes((50, 50)), "image/png")
    avatar = upload(hs, token, image_bytes((51, 51)), "image/png")
    old = upload(hs, token, image_bytes((52, 52)), "image/png")
    status, room = call_json(hs, "POST", "/_matrix/client/v3/createRoom", token=token,
                             data=b"{}", headers={"Content-Type": "application/json"})
    room_id = room["room_id"]
    content = {"msgtype": "m.image", "body": "pic", "url": f"mxc://{SERVER_NAME}/{image}",
               "info": {"thumbnail_url": "mxc://elsewhere.example/remoteThumb"}}
    status, _ = call_json(hs, "PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/send/"
                                     f"m.room.message/t1", token=token,
                          data=json.dumps(content).encode(),
                          headers={"Content-Type": "application/json"})
    assert status == 200
    assert call_json(hs, "GET", f"{ADMIN}/room/{quote(room_id)}/media", token=admin) == (
        200, {"local": [f"mxc://{SERVER_NAME}/{image}"],
              "remote": ["mxc://elsewhere.example/remoteThumb"]})
    status, _ = call_json(hs, "PUT", f"/_matrix/client/v3/profile/{quote(user_id)}/avatar_url",
                          token=token, headers={"Content-Type": "application/json"},
                          data=json.dumps({"avatar_url": f"mxc://{SERVER_NAME}/{avatar}"})
                          .encode())
    assert status == 200
    # Bulk delete: everything last used before now, but avatars (keep_profiles).
    status, err = call_json(hs, "POST", f"{ADMIN}/media/delete?before_ts=1000", token=admin)
    assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")
    status, err = call_json(hs, "POST", f"{ADMIN}/media/delete", token=admin)
    assert (status, err["errcode"]) == (400, "M_MISSING_PARAM")
    now = int(time.time() * 1000) + 1000
    status, body = call_json(hs, "POST", f"{ADMIN}/media/delete?before_ts={now}&size_gt=0",
                             token=admin)
    assert status == 200
    assert old in body["deleted_media"] and image in body["deleted_media"]
    assert avatar not in body["deleted_media"]
    assert body["total"] == len(body["deleted_media"])
    assert call(hs, "GET", f"{CLIENT_MEDIA}/download/{SERVER_NAME}/{avatar}",
                token=token)[0] == 200
    assert call(hs, "GET", f"{CLIENT_MEDIA}/download/{SERVER_NAME}/{old}", token=token)[0] == 404
    assert call_json(hs, "POST", f"{ADMIN}/purge_media_cache?before_ts={now}",
                     token=admin) == (200, {"deleted": 0})
