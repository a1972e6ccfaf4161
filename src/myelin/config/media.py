"""The media repository's configuration: thumbnails, limits, URL previews.

Keys and defaults are Synapse's (``enable_media_repo``, ``thumbnail_sizes``,
``dynamic_thumbnails``, ``max_image_pixels``, ``url_preview_*``...), so an
admin's homeserver.yaml reads the same; ``media_store_path`` and
``max_upload_size`` stay on :class:`~myelin.config.schema.HomeserverConfig`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from myelin.config.reader import ConfigReader

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

THUMBNAIL_METHODS = ("crop", "scale")


@dataclass(frozen=True)
class ThumbnailSize:
    width: int
    height: int
    method: str  # "crop" | "scale"


# The sizes the spec says servers SHOULD produce (Synapse's defaults too).
DEFAULT_THUMBNAIL_SIZES = (
    ThumbnailSize(32, 32, "crop"),
    ThumbnailSize(96, 96, "crop"),
    ThumbnailSize(320, 240, "scale"),
    ThumbnailSize(640, 480, "scale"),
    ThumbnailSize(800, 600, "scale"),
)

# Addresses a URL preview never fetches unless whitelisted: loopback,
# private networks, link-local, CGNAT, multicast, documentation and reserved
# ranges (the list Synapse's sample config recommends).
DEFAULT_IP_RANGE_BLACKLIST = (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
    "192.0.0.0/24", "169.254.0.0/16", "192.88.99.0/24", "198.18.0.0/15", "192.0.2.0/24",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
    "::1/128", "fe80::/10", "fc00::/7", "2001:db8::/32", "ff00::/8", "fec0::/10",
    "::ffff:0:0/96", "64:ff9b::/96",
)
# Never fetched, whatever the config says: "this host".
ALWAYS_BLOCKED = ("0.0.0.0/32", "::/128")


@dataclass(frozen=True)
class MediaConfig:
    # False on the main process of a fleet whose media runs on media workers.
    enable_media_repo: bool = True
    # Media uploaded while this is on is served only by the authenticated
    # /_matrix/client/v1/media endpoints (the spec's "freeze").
    enable_authenticated_media: bool = True
    max_image_pixels: int = 32 * 1024 * 1024
    dynamic_thumbnails: bool = False
    thumbnail_sizes: tuple[ThumbnailSize, ...] = DEFAULT_THUMBNAIL_SIZES
    # POST /create: how long an unused media id lives, and how many a user may hold.
    unused_expiration_time_ms: int = 24 * 3600 * 1000
    max_pending_media_uploads: int = 5
    # rc_media_create: how fast one user may create media ids (Synapse's defaults).
    rc_media_create_per_second: float = 10.0
    rc_media_create_burst_count: float = 50.0
    url_preview_enabled: bool = False
    url_preview_ip_range_blacklist: tuple[IpNetwork, ...] = field(default_factory=tuple)
    url_preview_ip_range_whitelist: tuple[IpNetwork, ...] = field(default_factory=tuple)
    max_spider_size: int = 10 * 1024 * 1024
    url_preview_accept_language: tuple[str, ...] = ("en",)
    # Synapse's `use_insecure_ssl_client_just_for_testing_do_not_use`: previews
    # accept any TLS certificate (test suites serve pages with self-signed ones).
    insecure_tls_for_testing: bool = False


def _networks(r: ConfigReader, key: str, default: tuple[str, ...],
              newer: str) -> tuple[IpNetwork, ...]:
    """A list of CIDR ranges under ``key``, or under Synapse's newer spelling
    ``newer`` (``…_blocklist`` / ``…_allowlist``) when only that is given."""
    if not r.has(key) and r.has(newer):
        key = newer
    r.used.update((key, newer))
    out = []
    for index, text in enumerate(r.str_list(key, list(default))):
        try:
            out.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise r.error(key, f'item {index}: "{text}" is not an IP address or CIDR '
                               "range such as 10.0.0.0/8") from None
    return tuple(out)


def _thumbnail_sizes(r: ConfigReader) -> tuple[ThumbnailSize, ...]:
    if not r.has("thumbnail_sizes"):
        r.used.add("thumbnail_sizes")
        return DEFAULT_THUMBNAIL_SIZES
    sizes = []
    for item in r.sections("thumbnail_sizes"):
        width = item.int_("width", minimum=1)
        height = item.int_("height", minimum=1)
        method = item.choice("method", THUMBNAIL_METHODS, "scale")
        sizes.append(ThumbnailSize(width, height, method))
    return tuple(dict.fromkeys(sizes))


def media_config(r: ConfigReader) -> MediaConfig:
    """The media keys of the top-level mapping ``r``."""
    from myelin.config.schema import _duration_ms as duration_ms

    unused = r.raw("unused_expiration_time")
    rc_create = r.section("rc_media_create")
    return MediaConfig(
        rc_media_create_per_second=rc_create.float_("per_second", 10.0),
        rc_media_create_burst_count=rc_create.float_("burst_count", 50.0),
        enable_media_repo=r.bool_("enable_media_repo", True),
        enable_authenticated_media=r.bool_("enable_authenticated_media", True),
        max_image_pixels=r.size("max_image_pixels", 32 * 1024 * 1024),
        dynamic_thumbnails=r.bool_("dynamic_thumbnails", False),
        thumbnail_sizes=_thumbnail_sizes(r),
        unused_expiration_time_ms=duration_ms(r, "unused_expiration_time", unused)
        or 24 * 3600 * 1000,
        max_pending_media_uploads=r.int_("max_pending_media_uploads", 5, minimum=1),
        url_preview_enabled=r.bool_("url_preview_enabled", False),
        url_preview_ip_range_blacklist=_networks(
            r, "url_preview_ip_range_blacklist", DEFAULT_IP_RANGE_BLACKLIST,
            "url_preview_ip_range_blocklist")
        + tuple(ipaddress.ip_network(n) for n in ALWAYS_BLOCKED),
        url_preview_ip_range_whitelist=_networks(r, "url_preview_ip_range_whitelist", (),
                                                 "url_preview_ip_range_allowlist"),
        max_spider_size=r.size("max_spider_size", 10 * 1024 * 1024),
        url_preview_accept_language=tuple(r.str_list("url_preview_accept_language", ["en"])),
        insecure_tls_for_testing=r.bool_("use_insecure_ssl_client_just_for_testing_do_not_use",
                                         False),
    )
