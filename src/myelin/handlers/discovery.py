"""The ``.well-known`` documents a client reads to discover this server."""

from __future__ import annotations

from typing import Any

from myelin.config import HomeserverConfig


def client_wellknown(config: HomeserverConfig) -> dict[str, Any] | None:
    """``/.well-known/matrix/client``, or None when it is not served here."""
    discovery = config.discovery
    if not discovery.serve_client_wellknown:
        return None
    document: dict[str, Any] = {"m.homeserver": {"base_url": config.public_baseurl}}
    if discovery.default_identity_server:
        document["m.identity_server"] = {"base_url": discovery.default_identity_server}
    for key, value in discovery.extra_well_known_client_content.items():
        # Extra keys add to the document; they never redirect clients elsewhere.
        document.setdefault(key, value)
    return document


def support_wellknown(config: HomeserverConfig) -> dict[str, Any] | None:
    """``/.well-known/matrix/support``, or None when nothing is configured."""
    discovery = config.discovery
    document: dict[str, Any] = {}
    if discovery.support_contacts:
        document["contacts"] = [dict(c) for c in discovery.support_contacts]
    if discovery.support_page:
        document["support_page"] = discovery.support_page
    return document or None
