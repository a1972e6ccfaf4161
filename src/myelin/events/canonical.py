"""Canonical JSON and unpadded Base64, as defined in the spec appendices.

Canonical JSON is the byte form that gets hashed and signed, so every server
must produce exactly the same bytes for the same value.  The spec forbids
floats and restricts integers to the range a double can represent exactly;
:func:`encode_canonical_json` enforces that unless ``strict=False`` is passed,
which is needed only to hash historical events in room versions 1-5 (those
predate the restriction, see the v6 canonical JSON fragment).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

__all__ = [
    "CANONICALJSON_MAX_INT",
    "CANONICALJSON_MIN_INT",
    "CanonicalJSONError",
    "decode_json",
    "encode_canonical_json",
    "unpadded_b64decode",
    "unpadded_b64encode",
    "unpadded_urlsafe_b64decode",
    "unpadded_urlsafe_b64encode",
]

CANONICALJSON_MAX_INT = 2**53 - 1
CANONICALJSON_MIN_INT = -(2**53) + 1


class CanonicalJSONError(ValueError):
    """The value cannot be represented as canonical JSON."""


def _check(value: Any, strict: bool, path: str) -> None:
    # Iterative would be faster for pathological nesting, but event JSON is
    # bounded (65 KiB) and recursion keeps the error path readable.
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if strict and not (CANONICALJSON_MIN_INT <= value <= CANONICALJSON_MAX_INT):
            raise CanonicalJSONError(f"integer out of range at {path or '<root>'}: {value}")
        return
    if isinstance(value, float):
        if strict:
            raise CanonicalJSONError(f"float not permitted at {path or '<root>'}: {value!r}")
        if not math.isfinite(value):
            # Even the lenient mode cannot produce JSON for these.
            raise CanonicalJSONError(f"non-finite number at {path or '<root>'}")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise CanonicalJSONError(f"non-string key at {path or '<root>'}: {k!r}")
            _check(v, strict, f"{path}.{k}")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check(v, strict, f"{path}[{i}]")
        return
    raise CanonicalJSONError(f"unsupported type at {path or '<root>'}: {type(value).__name__}")


def encode_canonical_json(obj: Any, *, strict: bool = True) -> bytes:
    """Encode ``obj`` as canonical JSON bytes (UTF-8, sorted keys, no spaces).

    Raises :class:`CanonicalJSONError` for floats, integers outside
    ``[-(2**53)+1, 2**53-1]``, non-string keys or unsupported types.  With
    ``strict=False`` large integers and finite floats are let through (room
    versions 1-5 only).
    """
    _check(obj, strict, "")
    try:
        text = json.dumps(
            obj,
            ensure_ascii=False,
            separators=(",", ":"),
            sort_keys=True,
            allow_nan=False,
        )
        # Lone surrogates survive json.dumps but are not valid UTF-8; the
        # encode below turns them into a CanonicalJSONError.
        return text.encode("utf-8")
    except (UnicodeEncodeError, ValueError, TypeError) as e:
        raise CanonicalJSONError(str(e)) from e


def _parse_float(text: str) -> int | float:
    # The spec's own canonical JSON example feeds ``1e10`` in and expects
    # ``10000000000`` out: a number literal with an exponent or fraction that
    # denotes an integer is that integer.  Anything else stays a float and
    # will be refused by encode_canonical_json.
    value = float(text)
    if math.isfinite(value) and value.is_integer():
        as_int = int(value)
        if CANONICALJSON_MIN_INT <= as_int <= CANONICALJSON_MAX_INT:
            return as_int
    return value


def _reject_constant(name: str) -> Any:
    raise CanonicalJSONError(f"{name} is not valid JSON")


def decode_json(data: str | bytes) -> Any:
    """Parse JSON, turning integral number literals (``1e10``, ``-0``) into ints.

    ``NaN``/``Infinity`` are refused.  Non-integral numbers are returned as
    floats so that callers can decide (encoding them canonically fails).
    """
    try:
        return json.loads(data, parse_float=_parse_float, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise CanonicalJSONError(str(e)) from e


def unpadded_b64encode(data: bytes) -> str:
    """Standard Base64 without ``=`` padding (spec appendix "Unpadded Base64")."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def unpadded_b64decode(data: str) -> bytes:
    """Decode standard Base64, with or without padding.

    Raises ``ValueError`` on malformed input (``binascii.Error`` is one).
    """
    # validate=True so that junk characters are an error rather than being
    # silently skipped, which matters for signatures and hashes.
    return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)


def unpadded_urlsafe_b64encode(data: bytes) -> str:
    """URL-safe Base64 (``-``/``_``) without padding, used for v4+ event ids."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def unpadded_urlsafe_b64decode(data: str) -> bytes:
    """Decode URL-safe unpadded Base64; raises ``ValueError`` when malformed."""
    if any(c in data for c in "+/"):
        raise binascii.Error("not URL-safe base64")
    return base64.b64decode(
        data.replace("-", "+").replace("_", "/") + "=" * (-len(data) % 4), validate=True
    )
