"""Logging as Synapse admins have it: their ``log_config`` files, unchanged.

Every log record carries ``request`` (the request being served: method,
path and request id, or ``-`` outside one), set from a contextvar that
``http/server.py`` fills for each request, so Synapse's default format
(``... %(request)s - %(message)s``) works with or without its filter.
Synapse's handler, filter and formatter class names in a log config are
mapped to Myelin's own here; :class:`JsonFormatter` gives structured logs.
The last errors of the process are kept for the status page.
"""

from __future__ import annotations

import collections
import contextvars
import json
import logging
import logging.handlers
import socket
import time
import traceback
from typing import Any

# "GET /_matrix/client/v3/sync (r42)" while a request is served.
current_request: contextvars.ContextVar[str] = contextvars.ContextVar("myelin_request",
                                                                      default="-")

_old_factory = logging.getLogRecordFactory()


def _record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _old_factory(*args, **kwargs)
    record.request = current_request.get()
    return record


def install_record_factory() -> None:
    """Give every record a ``request`` attribute (idempotent)."""
    if logging.getLogRecordFactory() is not _record_factory:
        logging.setLogRecordFactory(_record_factory)


install_record_factory()


class RequestFilter(logging.Filter):
    """What ``synapse.logging.context.LoggingContextFilter`` is in a Synapse
    config: sets ``request`` (already set by the record factory; kept so a
    record made before it was installed still formats)."""

    def __init__(self, request: str = "", **_: Any) -> None:
        super().__init__()
        self.default = request

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request"):
            record.request = current_request.get() or self.default
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request, message (+ the
    exception, and any ``extra`` fields given to the logging call)."""

    _STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
        "request", "message", "asctime"}

    def __init__(self, *args: Any, include_extra: bool = True, **kwargs: Any) -> None:
        kwargs.pop("include_context", None)  # a Synapse option with no meaning here
        super().__init__(*args, **kwargs)
        self.include_extra = include_extra

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname,
            "namespace": record.name,
            "request": getattr(record, "request", "-"),
            "log": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if self.include_extra:
            for key, value in vars(record).items():
                if key not in self._STANDARD and not key.startswith("_"):
                    out[key] = value if isinstance(value, (str, int, float, bool)) else repr(value)
        return json.dumps(out, ensure_ascii=False)


class PeriodicallyFlushingMemoryHandler(logging.handlers.MemoryHandler):
    """A buffer in front of another handler, flushed when full, on a record
    at ``flushLevel`` or above, and at least every ``period`` seconds."""

    def __init__(self, capacity: int, flushLevel: int = logging.ERROR,
                 target: logging.Handler | None = None, flushOnClose: bool = True,
                 period: float = 5.0) -> None:
        super().__init__(capacity, flushLevel, target, flushOnClose)
        self.period = period
        self._last_flush = time.monotonic()

    def shouldFlush(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if super().shouldFlush(record) or now - self._last_flush >= self.period:
            self._last_flush = now
            return True
        return False


class RemoteHandler(logging.Handler):
    """Formatted records, one per line, to a TCP ``host:port`` (a log
    collector); records are dropped, not queued forever, while it is away."""

    def __init__(self, host: str, port: int, maximum_buffer: int = 1000,
                 _reactor: Any = None) -> None:
        super().__init__()
        self.address = (host, int(port))
        self.buffer: collections.deque[str] = collections.deque(maxlen=maximum_buffer)
        self._sock: socket.socket | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.buffer.append(self.format(record) + "\n")
            if self._sock is None:
                self._sock = socket.create_connection(self.address, timeout=1.0)
            while self.buffer:
                self._sock.sendall(self.buffer[0].encode())
                self.buffer.popleft()
        except OSError:
            if self._sock is not None:
                self._sock.close()
            self._sock = None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        super().close()


# Class names Synapse's log configs use -> Myelin's.
SYNAPSE_CLASSES: dict[str, str] = {
    "synapse.logging.context.LoggingContextFilter": "myelin.logs.RequestFilter",
    "synapse.util.logcontext.LoggingContextFilter": "myelin.logs.RequestFilter",
    "synapse.logging.handlers.PeriodicallyFlushingMemoryHandler":
        "myelin.logs.PeriodicallyFlushingMemoryHandler",
    "synapse.logging.RemoteHandler": "myelin.logs.RemoteHandler",
    "synapse.logging.JsonFormatter": "myelin.logs.JsonFormatter",
    "synapse.logging.TerseJsonFormatter": "myelin.logs.JsonFormatter",
}


class UnknownSynapseClassError(ValueError):
    """A Synapse class name in a log config that Myelin has no counterpart for."""


def translate_log_config(config: Any) -> Any:
    """A copy of a ``dictConfig`` mapping with Synapse's class names replaced."""
    if isinstance(config, list):
        return [translate_log_config(v) for v in config]
    if not isinstance(config, dict):
        return config
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in ("class", "()") and isinstance(value, str) and value.startswith("synapse."):
            if value not in SYNAPSE_CLASSES:
                raise UnknownSynapseClassError(
                    f"{key}: {value} is a Synapse class Myelin does not know; Myelin maps "
                    f"{', '.join(sorted(SYNAPSE_CLASSES))}")
            value = SYNAPSE_CLASSES[value]
        out[key] = translate_log_config(value)
    return out


class RecentErrors(logging.Handler):
    """The last records at ERROR or above, for the status page."""

    def __init__(self, size: int = 20) -> None:
        super().__init__(logging.ERROR)
        self.records: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)
        self.total = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.total += 1
        self.records.append({"time": record.created, "level": record.levelname,
                             "logger": record.name, "request": getattr(record, "request", "-"),
                             "message": record.getMessage()[:500]})


recent_errors = RecentErrors()


def keep_recent_errors(root: logging.Logger | None = None) -> None:
    """Attach :data:`recent_errors` to the root logger (idempotent)."""
    root = root or logging.getLogger()
    if recent_errors not in root.handlers:
        root.addHandler(recent_errors)


def stderr_formatter(kind: str) -> logging.Formatter:
    """The formatter of the default (no ``log_config``) stderr logging."""
    if kind == "json":
        return JsonFormatter()
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s %(request)s: %(message)s")

