"""The media repository's config keys: Synapse's names and defaults, errors
that name the key."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from myelin.config import ConfigError, load_config_from_dict
from myelin.config.media import DEFAULT_THUMBNAIL_SIZES, ThumbnailSize

BASE = {"server_name": "example.org"}


def test_defaults() -> None:
    config = load_config_from_dict(BASE)
    media = config.media
    assert config.max_upload_size == 50 * 1024 * 1024
    assert config.media_store_path == "media_store"
    assert media.enable_media_repo and media.enable_authenticated_media
    assert media.thumbnail_sizes == DEFAULT_THUMBNAIL_SIZES
    assert not media.dynamic_thumbnails
    assert media.max_image_pixels == 32 * 1024 * 1024
    assert media.unused_expiration_time_ms == 24 * 3600 * 1000
    assert not media.url_preview_enabled
    assert ipaddress.ip_network("127.0.0.0/8") in media.url_preview_ip_range_blacklist
    assert ipaddress.ip_network("0.0.0.0/32") in media.url_preview_ip_range_blacklist
    assert media.url_preview_ip_range_whitelist == ()
    assert media.max_spider_size == 10 * 1024 * 1024
    assert (media.rc_media_create_per_second, media.rc_media_create_burst_count) == (10, 50)


def test_values() -> None:
    media = load_config_from_dict({
        **BASE, "enable_media_repo": False, "dynamic_thumbnails": True,
        "thumbnail_sizes": [{"width": 10, "height": 20, "method": "crop"},
                            {"width": 30, "height": 40}],
        "max_image_pixels": "1M", "unused_expiration_time": "1h",
        "url_preview_enabled": True, "url_preview_ip_range_blacklist": ["10.0.0.0/8"],
        "url_preview_ip_range_whitelist": ["127.0.0.1"], "max_spider_size": "1M",
        "rc_media_create": {"per_second": 0.5, "burst_count": 2},
    }).media
    assert (media.rc_media_create_per_second, media.rc_media_create_burst_count) == (0.5, 2)
    assert not media.enable_media_repo and media.dynamic_thumbnails
    assert media.thumbnail_sizes == (ThumbnailSize(10, 20, "crop"), ThumbnailSize(30, 40, "scale"))
    assert media.max_image_pixels == 1024 * 1024
    assert media.unused_expiration_time_ms == 3600 * 1000
    # An explicit blacklist replaces the default; "this host" stays blocked.
    assert set(media.url_preview_ip_range_blacklist) == {
        ipaddress.ip_network(n) for n in ("10.0.0.0/8", "0.0.0.0/32", "::/128")}
    assert media.url_preview_ip_range_whitelist == (ipaddress.ip_network("127.0.0.1/32"),)
    assert media.max_spider_size == 1024 * 1024


def test_synapse_newer_spellings() -> None:
    media = load_config_from_dict({
        **BASE, "url_preview_ip_range_blocklist": [],
        "url_preview_ip_range_allowlist": ["10.0.0.0/8"]}).media
    # An empty list allows everything but "this host".
    assert set(media.url_preview_ip_range_blacklist) == {
        ipaddress.ip_network(n) for n in ("0.0.0.0/32", "::/128")}
    assert media.url_preview_ip_range_whitelist == (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(("extra", "key", "message"), [
    ({"thumbnail_sizes": [{"width": 10, "height": 10, "method": "stretch"}]},
     "thumbnail_sizes[0].method", "expected one of crop, scale"),
    ({"thumbnail_sizes": [{"height": 10}]}, "thumbnail_sizes[0].width", "is required"),
    ({"thumbnail_sizes": [{"width": 0, "height": 10}]}, "thumbnail_sizes[0].width",
     "at least 1"),
    ({"thumbnail_sizes": "big"}, "thumbnail_sizes", "expected a list"),
    ({"max_image_pixels": "many"}, "max_image_pixels", "expected a size"),
    ({"url_preview_ip_range_blacklist": ["10.0.0.0/8", "nope"]},
     "url_preview_ip_range_blacklist", "item 1"),
    ({"url_preview_enabled": "yes"}, "url_preview_enabled", "expected true or false"),
    ({"enable_authenticated_media": 1}, "enable_authenticated_media", "expected true or false"),
    ({"unused_expiration_time": "soon"}, "unused_expiration_time", "expected a duration"),
])
def test_errors_name_the_key(extra: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config_from_dict({**BASE, **extra}, {k: "homeserver.yaml" for k in extra})
    text = str(e.value)
    assert key in text and message in text and "homeserver.yaml" in text
