"""What every process of the fleet is doing, as any one of them knows it.

Each process publishes a :class:`ProcessStatusCommand` on the bus every few
seconds (its app and roles, request and error rates, recent errors, how far
it trails each stream, CPU and RSS) and keeps the last one heard from every
other process. So main's status page shows generic workers too, although
no config lists their addresses; a process not heard from for a while is
shown as silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

from myelin.logs import recent_errors
from myelin.replication.commands import Command, ProcessStatusCommand, ReplicateCommand

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

STATUS_INTERVAL_S = 5.0
# Not heard from in this long: shown as silent (stopped, hung or cut off).
SILENT_AFTER_S = 3 * STATUS_INTERVAL_S

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


class FleetStatus:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.started_at = time.time()
        # instance -> (summary, time.monotonic() when heard)
        self.heard: dict[str, tuple[dict[str, Any], float]] = {}
        self._task: asyncio.Task[None] | None = None
        hs.bus.subscribe(self._on_command)

    def summary(self) -> dict[str, Any]:
        """This process, as it tells the others."""
        hs = self.hs
        times = os.times()
        metrics = hs.http_metrics
        return {
            "app": hs.config.worker_app,
            "roles": hs.roles.describe(),
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "requests_per_s": round(metrics.rate.per_second(), 3),
            "errors_per_s": round(metrics.error_rate.per_second(), 3),
            "errors_logged": recent_errors.total,
            "recent_errors": list(recent_errors.records)[-5:],
            "lag": {name: info["lag"] for name, info in hs.streams.view.snapshot().items()},
            "sync_waiting": hs.notifier.waiting,
            "cpu_s": round(times.user + times.system, 2),
            "rss_bytes": rss_bytes(),
        }

    def fleet(self) -> list[dict[str, Any]]:
        """Every process known here, this one first: its summary, how long
        since it was heard (``age_s``) and whether it is ``silent``."""
        now = time.monotonic()
        out = [{"instance": self.hs.config.instance_name, "age_s": 0.0, "silent": False,
                **self.summary()}]
        for name in sorted(self.heard):
            summary, heard_at = self.heard[name]
            age = now - heard_at
            out.append({"instance": name, "age_s": round(age, 1),
                        "silent": age > SILENT_AFTER_S, **summary})
        return out

    def _on_command(self, command: Command) -> None:
        if getattr(command, "instance", None) == self.hs.config.instance_name:
            return
        if isinstance(command, ProcessStatusCommand):
            self.heard[command.instance] = (command.summary, time.monotonic())
        elif isinstance(command, ReplicateCommand) and self._task is not None:
            # A process (re)joined: let it see us now rather than in 5 s.
            self.publish()

    def publish(self) -> None:
        self.hs.bus.publish(ProcessStatusCommand(self.hs.config.instance_name,
                                                 int(time.time() * 1000), self.summary()))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._publish_forever())

    async def _publish_forever(self) -> None:
        while True:
            self.publish()
            await asyncio.sleep(STATUS_INTERVAL_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
