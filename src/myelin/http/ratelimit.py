"""Token-bucket rate limiting keyed by user, device or address (``rc_*`` config)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from myelin.config import RateLimit
from myelin.domain import limit_exceeded


class Ratelimiter:
    """Allows ``burst_count`` actions at once, refilled at ``per_second``.

    Keys are bounded: the least recently used ones are forgotten, which can
    only make the limiter more lenient, never wrong about a busy key.
    """

    def __init__(self, limit: RateLimit, max_keys: int = 100_000) -> None:
        self.limit = limit
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_keys = max_keys

    def check(self, key: str, cost: float = 1.0, *, update: bool = True,
              limit: RateLimit | None = None) -> None:
        """Raise ``M_LIMIT_EXCEEDED`` if ``key`` has no room for ``cost`` more
        (``limit``: an admin's override for this key instead of the default)."""
        limit = limit or self.limit
        rate, burst = limit.per_second, limit.burst_count
        if rate <= 0 and burst <= 0:
            return
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens < cost:
            wait = (cost - tokens) / rate if rate > 0 else 3600.0
            raise limit_exceeded(max(1, math.ceil(wait * 1000)))
        if update:
            self._buckets[key] = (tokens - cost, now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)

    def reset(self, key: str) -> None:
        self._buckets.pop(key, None)
