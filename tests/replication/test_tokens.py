"""Stream positions and sync tokens: parse/format round trips, multi-writer forms, garbage."""

from __future__ import annotations

import pytest

from myelin.domain import MatrixError
from myelin.replication.tokens import SYNC_STREAMS, StreamPosition, SyncToken


# -- StreamPosition -------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["0", "1", "42", "9007199254740993"])
def test_single_writer_position_round_trips(text: str) -> None:
    pos = StreamPosition.parse(text)
    assert pos.minimum == int(text) and pos.writers == ()
    assert pos.maximum == int(text)
    assert str(pos) == text


def test_multi_writer_position_round_trips() -> None:
    pos = StreamPosition.parse("m5~1.7~2.9")
    assert pos.minimum == 5
    assert pos.writers == ((1, 7), (2, 9))
    assert pos.maximum == 9
    assert pos.position_of(1) == 7 and pos.position_of(2) == 9
    assert pos.position_of(3) == 5  # a writer not listed is at the minimum
    assert str(pos) == "m5~1.7~2.9"
    assert StreamPosition.parse(str(pos)) == pos


def test_multi_writer_position_is_canonical_whatever_the_writer_order() -> None:
    a = StreamPosition.parse("m5~2.9~1.7")
    assert a == StreamPosition.parse("m5~1.7~2.9")
    assert str(a) == "m5~1.7~2.9"


def test_multi_writer_with_writer_at_minimum_and_no_writers() -> None:
    assert StreamPosition.parse("m3~0.3").maximum == 3
    assert StreamPosition.parse("m3") == StreamPosition(3)  # no writers: same as "3"
    assert str(StreamPosition(3, ((4, 10),))) == "m3~4.10"


@pytest.mark.parametrize("text", [
    "", "-1", "m", "mx", "m-1~1.2", "m5~1", "m5~1.", "m5~.7", "m5~1.3", "m5~a.7", "5.5",
    "m5~1.7~", "abc", "m5~1.7.8",
    # Python's int() is lenient; tokens are not.
    "+5", " 5", "5 ", "1_000", "\u0663", "m+5~1.7", "m5~1.+7",
    # Beyond what a database position can be.
    str(2**63), "m1~1." + str(2**63),
])
def test_invalid_positions(text: str) -> None:
    with pytest.raises(ValueError):
        StreamPosition.parse(text)


# -- SyncToken ------------------------------------------------------------------------------
def full_token(*parts: str) -> str:
    return "s" + "_".join(parts)


def test_sync_token_round_trip_all_streams() -> None:
    parts = [str(i * 10 + 1) for i in range(len(SYNC_STREAMS))]
    parts[0] = "m12~1.15~2.13"
    text = full_token(*parts)
    token = SyncToken.parse(text)
    assert str(token) == text
    assert token["events"] == 12
    for name, part in zip(SYNC_STREAMS[1:], parts[1:], strict=True):
        assert token[name] == int(part)
    assert SyncToken.parse(str(token)) == token


def test_sync_token_from_fewer_streams_reads_missing_as_zero() -> None:
    token = SyncToken.parse("s7_3")
    assert token["events"] == 7 and token["typing"] == 3
    assert all(token[s] == 0 for s in SYNC_STREAMS[2:])
    assert str(token) == full_token("7", "3", *["0"] * (len(SYNC_STREAMS) - 2))


def test_sync_token_defaults_and_copy_with() -> None:
    empty = SyncToken()
    assert all(empty[s] == 0 for s in SYNC_STREAMS)
    assert str(empty) == full_token(*["0"] * len(SYNC_STREAMS))
    moved = empty.copy_with("to_device", 9)
    assert moved["to_device"] == 9 and empty["to_device"] == 0  # immutable
    assert moved.is_after(empty) and not empty.is_after(moved)
    assert not moved.is_after(moved)


def test_is_after_uses_the_safe_minimum() -> None:
    base = SyncToken.parse("s5")
    ahead_writer_only = SyncToken.parse("sm5~1.9")
    assert not ahead_writer_only.is_after(base)
    assert SyncToken.parse("s6").is_after(base)


@pytest.mark.parametrize("text", [
    "", "s", "x1", "S1", "1_2", "s1__2", "s_1", "s1_", "s1_x", "s-4", "sm1~a.b",
    "s" + "_".join(["1"] * (len(SYNC_STREAMS) + 1)), "t1-2", "s1 ", "s+1", "s\u0663",
    "s" + "1" * 4001, "s" + str(2**63),
])
def test_garbage_sync_tokens_are_invalid_param(text: str) -> None:
    with pytest.raises(MatrixError) as err:
        SyncToken.parse(text)
    assert err.value.status == 400
    assert err.value.errcode == "M_INVALID_PARAM"
