"""Canonical JSON and unpadded Base64: spec vectors and the number rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from myelin.events.canonical import (
    CanonicalJSONError,
    decode_json,
    encode_canonical_json,
    unpadded_b64decode,
    unpadded_b64encode,
    unpadded_urlsafe_b64decode,
    unpadded_urlsafe_b64encode,
)

VECTORS: dict[str, Any] = json.loads(
    Path("/work/shared/spec/test-vectors.json").read_text(encoding="utf-8")
)


@pytest.mark.parametrize(
    "vector", VECTORS["canonical_json"], ids=lambda v: f"line{v['input_line']}"
)
def test_canonical_json_vectors(vector: dict[str, Any]) -> None:
    # decode_json maps integral literals such as 1e10 and -0 to ints, which
    # is what the spec's last example expects.
    value = decode_json(vector["input_text"])
    assert encode_canonical_json(value) == vector["expected"].encode("utf-8")


@pytest.mark.parametrize("vector", VECTORS["unpadded_base64"], ids=lambda v: repr(v["input"]))
def test_unpadded_base64_vectors(vector: dict[str, Any]) -> None:
    raw = vector["input"].encode("utf-8")
    assert unpadded_b64encode(raw) == vector["expected"]
    assert unpadded_b64decode(vector["expected"]) == raw


def test_b64_decode_accepts_padding_and_rejects_junk() -> None:
    assert unpadded_b64decode("Zg==") == b"f"
    with pytest.raises(ValueError):
        unpadded_b64decode("Zm9v!")


def test_urlsafe_b64_roundtrip() -> None:
    data = bytes(range(250, 256)) * 3
    enc = unpadded_urlsafe_b64encode(data)
    assert "+" not in enc and "/" not in enc and "=" not in enc
    assert unpadded_urlsafe_b64decode(enc) == data


@pytest.mark.parametrize("value", [1.5, 0.0, {"a": [1.0]}])
def test_floats_refused(value: Any) -> None:
    with pytest.raises(CanonicalJSONError):
        encode_canonical_json(value)


@pytest.mark.parametrize("value", [2**53 - 1, -(2**53) + 1])
def test_int_range_boundaries_allowed(value: int) -> None:
    assert encode_canonical_json(value) == str(value).encode()


@pytest.mark.parametrize("value", [2**53, -(2**53), {"x": [2**60]}])
def test_int_out_of_range_refused(value: Any) -> None:
    with pytest.raises(CanonicalJSONError):
        encode_canonical_json(value)
    # Lenient mode (room versions 1-5) lets them through.
    encode_canonical_json(value, strict=False)


def test_canonical_error_is_value_error() -> None:
    assert issubclass(CanonicalJSONError, ValueError)


def test_non_string_keys_refused() -> None:
    with pytest.raises(CanonicalJSONError):
        encode_canonical_json({1: "a"})


def test_control_characters_escaped_per_grammar() -> None:
    out = encode_canonical_json({"a": '\x00\x1f\b\t\n\f\r"\\\x7f/'})
    assert out == b'{"a":"\\u0000\\u001f\\b\\t\\n\\f\\r\\"\\\\\x7f/"}'


def test_lone_surrogate_refused() -> None:
    with pytest.raises(CanonicalJSONError):
        encode_canonical_json({"a": "\ud800"})


def test_decode_json_refuses_nan_and_keeps_fractions() -> None:
    with pytest.raises(CanonicalJSONError):
        decode_json('{"a": NaN}')
    assert decode_json("[1.5]") == [1.5]
    assert decode_json("[-0]") == [0]
