"""The ``metrics`` resource: Prometheus text for this process.

Requests by servlet and status with latency histograms (and in flight),
database transactions by name with latency, connection pool use, per-stream
positions of every writer as this process has received them and the
replication lag they imply, rows written per stream and events persisted,
cache sizes and hit rates, long-polls waiting, replication calls, and
prometheus-client's own process metrics (CPU, RSS, open fds). Every sample
has an ``instance`` label: the Myelin instance name. The status page
(``api/status_page.py``) is served on the same resource.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from myelin.http.request import Request
from myelin.http.routing import RouteTable, plain_path

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

routes = RouteTable("metrics")

_registries: dict[int, CollectorRegistry] = {}


class HomeServerCollector(Collector):
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    def collect(self) -> Iterator[Metric]:
        hs = self.hs
        instance = hs.config.instance_name
        position = GaugeMetricFamily("myelin_stream_position",
                                     "Position of each writer of each stream, as received here",
                                     labels=["instance", "stream", "writer"])
        readable = GaugeMetricFamily("myelin_stream_readable_position",
                                     "Readable position of each stream here (min over writers)",
                                     labels=["instance", "stream"])
        lag = GaugeMetricFamily("myelin_stream_lag",
                                "How far the readable position trails the furthest writer",
                                labels=["instance", "stream"])
        for stream, info in hs.streams.view.snapshot().items():
            for writer, pos in info["writers"].items():
                position.add_metric([instance, stream, writer], pos)
            readable.add_metric([instance, stream], info["position"])
            lag.add_metric([instance, stream], info["lag"])
        yield position
        yield readable
        yield lag
        size = GaugeMetricFamily("myelin_cache_size", "Entries per cache",
                                 labels=["instance", "cache"])
        hits = CounterMetricFamily("myelin_cache_hits", "Cache hits", labels=["instance", "cache"])
        misses = CounterMetricFamily("myelin_cache_misses", "Cache misses",
                                     labels=["instance", "cache"])
        for name, stats in hs.caches.stats().items():
            size.add_metric([instance, name], stats["size"])
            hits.add_metric([instance, name], stats["hits"])
            misses.add_metric([instance, name], stats["misses"])
        yield size
        yield hits
        yield misses
        waiting = GaugeMetricFamily("myelin_sync_waiting", "Long-polls waiting in this process",
                                    labels=["instance"])
        waiting.add_metric([instance], hs.notifier.waiting)
        yield waiting
        rows = CounterMetricFamily("myelin_replication_rows_applied",
                                   "Stream rows applied from the bus", labels=["instance"])
        rows.add_metric([instance], hs.follower.rows_applied)
        yield rows
        gaps = CounterMetricFamily("myelin_replication_gaps_filled",
                                   "Times missed rows were read back from the database",
                                   labels=["instance"])
        gaps.add_metric([instance], hs.follower.gaps_filled)
        yield gaps
        yield from _labelled(instance, hs.http_metrics.requests, hs.http_metrics.duration,
                             hs.http_metrics.in_flight, hs.db.stats.duration,
                             hs.db.stats.failures)
        pool = GaugeMetricFamily("myelin_db_pool_connections",
                                 "Database connections: open, in use, allowed",
                                 labels=["instance", "state"])
        for state, value in hs.db.pool_stats().items():
            pool.add_metric([instance, state], value)
        yield pool
        written = CounterMetricFamily("myelin_stream_rows_written",
                                      "Stream rows this process committed as a writer",
                                      labels=["instance", "stream"])
        for name, generator in hs.streams.generators.items():
            if generator.is_writer:
                written.add_metric([instance, name], generator.rows_written)
        yield written
        persisted = CounterMetricFamily("myelin_events_persisted",
                                        "Events this process persisted",
                                        labels=["instance"])
        persisted.add_metric([instance], hs.streams.events_id_gen.rows_written)
        yield persisted
        if "replication" in hs.__dict__:
            calls = CounterMetricFamily("myelin_replication_calls",
                                        "Writes sent to a stream writer",
                                        labels=["instance", "where"])
            calls.add_metric([instance, "remote"], hs.replication.remote_calls)
            calls.add_metric([instance, "local"],
                             hs.replication.calls - hs.replication.remote_calls)
            yield calls


def _labelled(instance: str, *collectors: Collector) -> Iterator[Metric]:
    """The metrics of prometheus-client objects kept off the global registry,
    with this process's ``instance`` label added to every sample."""
    for collector in collectors:
        for metric in collector.collect():
            metric.samples = [Sample(s.name, {"instance": instance, **s.labels}, s.value,
                                     s.timestamp, s.exemplar) for s in metric.samples]
            yield metric


def registry_for(hs: HomeServer) -> CollectorRegistry:
    registry = _registries.get(id(hs))
    if registry is None:
        registry = CollectorRegistry()
        registry.register(HomeServerCollector(hs))
        ProcessCollector(registry=registry)
        _registries[id(hs)] = registry
    return registry


@routes.get(plain_path("/_synapse/metrics"), plain_path("/metrics"))
async def metrics(request: Request) -> web.Response:
    body = generate_latest(registry_for(request.hs))
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})
