"""Server ACLs (``m.room.server_acl``): which servers a room accepts.

Pure: given the ACL event's content and a server name, whether that server
may take part. The spec's rules (server-server API, "Server Access Control
Lists"): the port is ignored; an IP literal is refused unless
``allow_ip_literals`` (default true); a ``deny`` glob match refuses; then an
``allow`` glob match admits; anything else is refused. Globs use ``*`` (any
run of characters, dots included) and ``?`` (one character).
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Any

__all__ = ["server_allowed"]


def _strip_port(server_name: str) -> str:
    if server_name.startswith("["):
        end = server_name.find("]")
        return server_name[: end + 1] if end != -1 else server_name
    host, sep, port = server_name.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host
    return server_name


def _is_ip_literal(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=4096)
def _glob(pattern: str) -> re.Pattern[str]:
    parts = []
    for ch in pattern:
        if ch == "*":
            parts.append(".*")
        elif ch == "?":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts), re.DOTALL | re.IGNORECASE)


def _matches_any(host: str, patterns: Any) -> bool:
    if not isinstance(patterns, list):
        return False
    return any(isinstance(p, str) and _glob(p).fullmatch(host) for p in patterns)


def server_allowed(server_name: str, acl_content: dict[str, Any]) -> bool:
    """Whether the ACL with this content admits ``server_name``."""
    host = _strip_port(server_name)
    allow_ip = acl_content.get("allow_ip_literals", True)
    if not isinstance(allow_ip, bool):
        allow_ip = True
    if not allow_ip and _is_ip_literal(host):
        return False
    if _matches_any(host, acl_content.get("deny", [])):
        return False
    return _matches_any(host, acl_content.get("allow", []))
