"""Counts and latency of a database's transactions, by name, for ``/metrics``.

A transaction is named where it is opened (``db.transaction("persist_events")``),
or, by default, after the function that opens it: reading the caller's code
object costs well under a microsecond, so every transaction is named without
touching its call site.
"""

from __future__ import annotations

import sys

from prometheus_client import Counter, Histogram

# From a fast single-row write to a slow state resolution.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            10.0)


def caller_name(depth: int = 2) -> str:
    """The name of the function ``depth`` frames up (2: the caller's caller)."""
    return sys._getframe(depth).f_code.co_name


class TransactionStats:
    """Metric objects of one database, outside any global registry (several
    HomeServers may share a Python process in tests)."""

    def __init__(self) -> None:
        self.duration = Histogram(
            "myelin_db_transaction_duration_seconds",
            "Time from asking for a transaction (waiting for a connection included) "
            "to its commit or rollback, by name", ["name"], buckets=_BUCKETS, registry=None)
        self.failures = Counter("myelin_db_transaction_failures",
                                "Transactions rolled back by an error, by name", ["name"],
                                registry=None)

    def observe(self, name: str, seconds: float, ok: bool) -> None:
        self.duration.labels(name).observe(seconds)
        if not ok:
            self.failures.labels(name).inc()
