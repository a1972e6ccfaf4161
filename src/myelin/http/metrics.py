"""Request metrics of one process: counts by servlet and status, latency
histograms, requests in flight (``/sync`` long-polls among them), and a
one-minute request rate for the status page."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

# Client requests range from a cached GET to a 30 s long-poll.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class RateMeter:
    """Events per second over the last ``window`` seconds, in one-second buckets."""

    def __init__(self, window: int = 60, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._buckets = [0] * window
        self._stamps = [-1] * window

    def add(self, n: int = 1) -> None:
        second = int(self._clock())
        i = second % self.window
        if self._stamps[i] != second:
            self._stamps[i], self._buckets[i] = second, 0
        self._buckets[i] += n

    def per_second(self) -> float:
        now = int(self._clock())
        total = sum(b for b, s in zip(self._buckets, self._stamps, strict=True)
                    if now - self.window < s <= now)
        return total / self.window


class HttpMetrics:
    """Metric objects kept outside any global registry (several HomeServers
    may share one Python process in tests); ``api/metrics.py`` exports them."""

    def __init__(self) -> None:
        self.requests = Counter("myelin_http_requests", "Requests answered, by servlet, "
                                "method and status code", ["servlet", "method", "code"],
                                registry=None)
        self.duration = Histogram("myelin_http_request_duration_seconds",
                                  "Time to answer a request, by servlet and method",
                                  ["servlet", "method"], buckets=_BUCKETS, registry=None)
        self.in_flight = Gauge("myelin_http_requests_in_flight",
                               "Requests being served now, by servlet (sync: long-polls)",
                               ["servlet"], registry=None)
        self.rate = RateMeter()
        self.error_rate = RateMeter()
        self._next_id = 0

    def next_request_id(self, method: str) -> str:
        self._next_id += 1
        return f"{method}-{self._next_id}"

    def started(self, servlet: str) -> None:
        self.in_flight.labels(servlet).inc()

    def finished(self, servlet: str, method: str, status: int, seconds: float) -> None:
        self.in_flight.labels(servlet).dec()
        self.requests.labels(servlet, method, str(status)).inc()
        self.duration.labels(servlet, method).observe(seconds)
        self.rate.add()
        if status >= 500:
            self.error_rate.add()
