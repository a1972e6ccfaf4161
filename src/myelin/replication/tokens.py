"""Stream tokens: vector clocks over the writers of each stream.

A position on one stream is written ``N`` when every writer is at N (or
there is one writer), and ``mN~i.p~j.q`` otherwise: N is the minimum over
writers (safe to read up to) and ``i.p`` says writer ``i`` is at ``p``.
A sync token is ``s`` followed by the positions of every stream in a fixed
order, joined by ``_``; a token with fewer parts (from an older Myelin)
reads the missing streams as 0. Anything else is ``M_INVALID_PARAM``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from myelin.domain import MatrixError

MAX_POSITION = 2**63 - 1  # a database stream position is a signed 64-bit integer
_NUMBER = re.compile(r"0|[1-9][0-9]{0,18}")


def _number(text: str) -> int:
    """A position as written by us: plain ASCII digits within the database's range."""
    if not _NUMBER.fullmatch(text):
        raise ValueError(text)
    value = int(text)
    if value > MAX_POSITION:
        raise ValueError(text)
    return value


SYNC_STREAMS = ("events", "typing", "receipts", "presence", "to_device", "account_data",
                "device_lists", "push_rules")


@dataclass(frozen=True)
class StreamPosition:
    """The position of one stream, possibly with per-writer positions above the minimum."""

    minimum: int
    writers: tuple[tuple[int, int], ...] = ()

    def __str__(self) -> str:
        if not self.writers:
            return str(self.minimum)
        parts = "~".join(f"{i}.{p}" for i, p in self.writers)
        return f"m{self.minimum}~{parts}"

    @classmethod
    def parse(cls, text: str) -> StreamPosition:
        if text.startswith("m"):
            head, *rest = text[1:].split("~")
            writers = []
            for part in rest:
                instance, _, position = part.partition(".")
                writers.append((_number(instance), _number(position)))
            minimum = _number(head)
            if any(p < minimum for _, p in writers):
                raise ValueError(text)
            return cls(minimum, tuple(sorted(writers)))
        return cls(_number(text))

    @property
    def maximum(self) -> int:
        return max([self.minimum, *(p for _, p in self.writers)])

    def position_of(self, instance_id: int) -> int:
        for i, p in self.writers:
            if i == instance_id:
                return p
        return self.minimum


@dataclass(frozen=True)
class SyncToken:
    positions: dict[str, StreamPosition] = field(default_factory=dict)

    def __getitem__(self, stream: str) -> int:
        """The safe (minimum) position of a stream."""
        pos = self.positions.get(stream)
        return pos.minimum if pos else 0

    def writer_position(self, stream: str, writer_index: int) -> int:
        """Where writer ``writer_index`` of ``stream`` is (the minimum if not ahead)."""
        pos = self.positions.get(stream)
        return pos.position_of(writer_index) if pos else 0

    def maximum(self, stream: str) -> int:
        """The furthest any writer of ``stream`` has got."""
        pos = self.positions.get(stream)
        return pos.maximum if pos else 0

    def __str__(self) -> str:
        return "s" + "_".join(str(self.positions.get(s, StreamPosition(0)))
                              for s in SYNC_STREAMS)

    @classmethod
    def parse(cls, text: str) -> SyncToken:
        invalid = MatrixError(400, "M_INVALID_PARAM", "Invalid sync token")
        if not text.startswith("s") or len(text) > 4000:
            raise invalid
        parts = text[1:].split("_")
        if len(parts) > len(SYNC_STREAMS):
            raise invalid
        try:
            positions = {name: StreamPosition.parse(part)
                         for name, part in zip(SYNC_STREAMS, parts, strict=False)}
        except ValueError:
            raise invalid from None
        return cls(positions)

    def copy_with(self, stream: str, position: int) -> SyncToken:
        positions = dict(self.positions)
        positions[stream] = StreamPosition(position)
        return replace(self, positions=positions)

    def is_after(self, other: SyncToken) -> bool:
        """True if any stream moved forward from ``other``."""
        return any(self[s] > other[s] for s in SYNC_STREAMS)
