"""Pure parts of the federation queries, against the spec's text: the
multipart/mixed media answers, Content-Disposition names, and when an
``m.device_list_update`` can be applied."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from myelin.federation.device_lists import (
    as_devices_response,
    parse_cross_signing,
    parse_devices,
    update_applies,
)
from myelin.federation.queries import (
    MediaRedirect,
    filename_from_disposition,
    media_from_multipart,
    multipart_boundary,
    split_multipart,
)
from myelin.storage.stores.remote_devices import RemoteDevice, RemoteDeviceList

USER = "@alice:remote.example"


class _Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, chunk: bytes) -> None:
        self.data.extend(chunk)


def _written_by_aiohttp(content: bytes, content_type: str) -> tuple[bytes, str]:
    """A body as aiohttp (our serving side) writes it."""
    async def build() -> tuple[bytes, str]:
        writer = aiohttp.MultipartWriter("mixed", boundary="b0und4ry")
        writer.append_json({})
        writer.append(content, {"Content-Type": content_type,
                                "Content-Disposition": 'inline; filename="cat.png"'})
        sink = _Sink()
        await writer.write(sink)  # type: ignore[arg-type]
        return bytes(sink.data), writer.content_type

    return asyncio.run(build())


# -- multipart/mixed (RFC 2046 §5.1) ---------------------------------------------------
def test_boundary_comes_from_the_content_type() -> None:
    assert multipart_boundary("multipart/mixed; boundary=abc") == b"abc"
    assert multipart_boundary('Multipart/Mixed; charset=x; boundary="a b"') == b"a b"
    for bad in ("multipart/form-data; boundary=abc", "multipart/mixed", "image/png"):
        with pytest.raises(ValueError):
            multipart_boundary(bad)


def test_the_media_is_the_second_part_byte_for_byte() -> None:
    # Binary content holding CRLFs and dashes survives intact.
    content = b"\x89PNG\r\n\x1a\n--not-the-boundary\r\n\r\n\x00\xff" * 50
    body, content_type = _written_by_aiohttp(content, "image/png")
    got = media_from_multipart(body, content_type)
    assert got.body == content
    assert got.content_type == "image/png"
    assert got.filename == "cat.png"


def test_preamble_epilogue_and_a_part_without_headers() -> None:
    body = (b"ignored preamble\r\n--XyZ\r\nContent-Type: application/json\r\n\r\n{}"
            b"\r\n--XyZ   \r\n\r\nraw bytes\r\n--XyZ--\r\nepilogue")
    parts = split_multipart(body, b"XyZ")
    assert parts == [({"content-type": "application/json"}, b"{}"), ({}, b"raw bytes")]


def test_a_redirect_part_names_where_the_file_is() -> None:
    redirect = (b"--B\r\nContent-Type: application/json\r\n\r\n{}\r\n--B\r\n"
                b"Location: https://cdn.example/x\r\n\r\n\r\n--B--\r\n")
    with pytest.raises(MediaRedirect) as raised:
        media_from_multipart(redirect, "multipart/mixed; boundary=B")
    assert raised.value.location == "https://cdn.example/x"
    # Only to the web: no file:// or relative redirects.
    with pytest.raises(ValueError):
        media_from_multipart(redirect.replace(b"https://cdn.example/x", b"file:///etc/passwd"),
                             "multipart/mixed; boundary=B")


def test_a_wrong_part_count_is_refused() -> None:
    one = b"--B\r\nContent-Type: application/json\r\n\r\n{}\r\n--B--\r\n"
    with pytest.raises(ValueError):
        media_from_multipart(one, "multipart/mixed; boundary=B")
    with pytest.raises(ValueError):
        split_multipart(b"--B\r\n\r\nunterminated", b"B")


def test_content_disposition_file_names() -> None:
    assert filename_from_disposition('inline; filename="a b.png"') == "a b.png"
    assert filename_from_disposition("attachment; filename=plain.txt") == "plain.txt"
    # RFC 6266: filename* wins over filename.
    assert filename_from_disposition(
        "attachment; filename=\"x\"; filename*=utf-8''%E2%82%AC.txt") == "\u20ac.txt"
    assert filename_from_disposition("inline") is None
    assert filename_from_disposition(None) is None


# -- m.device_list_update ordering --------------------------------------------------------
def test_an_update_whose_prev_ids_we_hold_is_applied() -> None:
    assert update_applies(5, 6, [5]) is True
    # Several prev_ids (a server that emitted two updates at once).
    assert update_applies(7, 9, [6, 7]) is True


def test_an_update_we_already_have_is_ignored() -> None:
    assert update_applies(9, 9, [7]) is None
    assert update_applies(9, 4, [3]) is None


def test_an_unknown_prev_id_means_one_was_lost() -> None:
    # "If the receiving server does not recognise any of the prev_ids ... resync".
    assert update_applies(5, 8, [7]) is False
    assert update_applies(5, 8, [5, 7]) is False
    # No prev_id at all: nothing says what came before it.
    assert update_applies(5, 8, []) is False


# -- /user/devices answers ---------------------------------------------------------------
def test_devices_of_an_answer_keep_their_keys_as_sent() -> None:
    keys = {"user_id": USER, "device_id": "D1", "algorithms": [], "keys": {}}
    devices = parse_devices([
        {"device_id": "D1", "keys": keys, "device_display_name": "Phone"},
        {"device_id": "D2", "keys": "not an object", "device_display_name": 7},
        {"no": "device id"}, "junk"])
    assert devices == [RemoteDevice("D1", "Phone", keys), RemoteDevice("D2", None, None)]
    master = {"user_id": USER, "usage": ["master"], "keys": {"ed25519:m": "m"}}
    forged = {"user_id": "@bob:remote.example", "usage": ["self_signing"], "keys": {}}
    assert parse_cross_signing(USER, {"master_key": master, "self_signing_key": forged}) == \
        {"master": master}


def test_a_cached_list_answers_in_the_shape_of_user_devices() -> None:
    keys: dict[str, Any] = {"user_id": USER, "device_id": "D1"}
    master = {"user_id": USER, "usage": ["master"], "keys": {"ed25519:m": "m"}}
    cached = RemoteDeviceList(USER, 12, False, [RemoteDevice("D1", "Phone", keys),
                                                RemoteDevice("D2", None, None)],
                              {"master": master})
    assert as_devices_response(cached) == {
        "user_id": USER, "stream_id": 12, "master_key": master,
        "devices": [{"device_id": "D1", "keys": keys, "device_display_name": "Phone"},
                    {"device_id": "D2"}]}
