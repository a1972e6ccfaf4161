"""Content-Disposition and headers, per the spec's "Serving inline content"."""

from __future__ import annotations

import pytest

from myelin.media.serving import INLINE_TYPES, SECURITY_HEADERS, content_disposition, served_type


@pytest.mark.parametrize("kind", sorted(INLINE_TYPES))
def test_safe_types_are_inline(kind: str) -> None:
    assert content_disposition(kind, "f") == 'inline; filename="f"'


@pytest.mark.parametrize("kind", ["text/html", "image/svg+xml", "application/javascript",
                                  "application/octet-stream", "application/pdf", None, ""])
def test_other_types_are_attachments(kind: str | None) -> None:
    assert content_disposition(kind, None) == "attachment"


def test_parameters_do_not_change_the_type() -> None:
    assert content_disposition("text/plain; charset=utf-8", None) == "inline"
    assert content_disposition("TEXT/HTML; charset=utf-8", None) == "attachment"


def test_filenames() -> None:
    assert content_disposition("image/png", "a b.png") == 'inline; filename="a b.png"'
    # Quotes, backslashes and non-ASCII are percent-encoded, RFC 6266 style.
    assert content_disposition("image/png", 'x"y.png') == "inline; filename*=utf-8''x%22y.png"
    assert content_disposition("image/png", "ü.png") == "inline; filename*=utf-8''%C3%BC.png"


def test_thumbnails_are_always_inline() -> None:
    assert content_disposition("image/png", "thumbnail.png", force_inline=True).startswith(
        "inline")


def test_content_type_is_kept_or_octet_stream() -> None:
    assert served_type("image/png") == "image/png"
    assert served_type("text/plain; charset=utf-8") == "text/plain; charset=utf-8"
    assert served_type(None) == "application/octet-stream"
    assert served_type("") == "application/octet-stream"


def test_security_headers() -> None:
    assert SECURITY_HEADERS["X-Content-Type-Options"] == "nosniff"
    assert SECURITY_HEADERS["Cross-Origin-Resource-Policy"] == "cross-origin"
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    for directive in ("sandbox", "default-src 'none'", "script-src 'none'",
                      "plugin-types application/pdf", "style-src 'unsafe-inline'",
                      "object-src 'self'"):
        assert directive in csp
