"""How content is served: its Content-Type, Content-Disposition and the
security headers the spec recommends for the content repository."""

from __future__ import annotations

from urllib.parse import quote

# The spec's "Serving inline content": only these may be served inline.
INLINE_TYPES = frozenset({
    "text/css", "text/plain", "text/csv", "application/json", "application/ld+json",
    "image/jpeg", "image/gif", "image/png", "image/apng", "image/webp", "image/avif",
    "video/mp4", "video/webm", "video/ogg", "video/quicktime",
    "audio/mp4", "audio/webm", "audio/aac", "audio/mpeg", "audio/ogg", "audio/wave",
    "audio/wav", "audio/x-wav", "audio/x-pn-wav", "audio/flac", "audio/x-flac",
})

SECURITY_HEADERS = {
    "Content-Security-Policy": "sandbox; default-src 'none'; script-src 'none'; "
                               "plugin-types application/pdf; style-src 'unsafe-inline'; "
                               "media-src 'self'; object-src 'self';",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "cross-origin",
    # Media never changes under its id.
    "Cache-Control": "private, max-age=31536000, immutable",
}

DEFAULT_TYPE = "application/octet-stream"

# Characters of a filename that may appear as they are in a quoted-string.
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                   " !#$&'()*+,-.:;<=>?@[]^_`{|}~")


def base_type(content_type: str | None) -> str:
    """``text/plain; charset=utf-8`` -> ``text/plain``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def served_type(content_type: str | None) -> str:
    """The Content-Type to answer with: the uploaded one, or octet-stream."""
    text = (content_type or "").strip()
    if not text or "\n" in text or "\r" in text:
        return DEFAULT_TYPE
    return text


def content_disposition(content_type: str | None, filename: str | None, *,
                        force_inline: bool = False) -> str:
    """``inline`` for the spec's safe types (and thumbnails), ``attachment``
    otherwise; the filename as a quoted string when it is plain ASCII, else
    RFC 6266's ``filename*=utf-8''…``."""
    kind = "inline" if force_inline or base_type(content_type) in INLINE_TYPES else "attachment"
    if not filename:
        return kind
    if all(ch in _PLAIN for ch in filename):
        return f'{kind}; filename="{filename}"'
    return f"{kind}; filename*=utf-8''{quote(filename, safe='')}"
