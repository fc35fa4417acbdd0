"""``GET /metrics``: a prometheus_client collector that asks the daemons for their figures at scrape time.

The master, the forwarder, the reactor and the master's cluster process are asked through
``eventbus.systemstatus`` when Prometheus scrapes, never per event; the API adds
its own stream count and CloudEvents counters. A daemon that does not
answer leaves its metrics out and sets ``eventbus_up{daemon=...}`` to 0.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator

import zmq
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry
from prometheus_client.exposition import generate_latest

from eventbus import systemstatus
from eventbus.config import MasterConfig
from eventbus.errors import EventBusError

__all__ = ["CONTENT_TYPE", "Metrics"]

# The text format generate_latest writes, by the name every Prometheus version knows (newer
# prometheus_client calls it 1.0.0, which Prometheus 2 does not).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

log = logging.getLogger(__name__)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


# ``{"accepted": {type: n}, "refused": {(status, code): n}}``: CloudEvents ingest's (``ceingest.Ingest.counts``).
IngestCounts = Callable[[], dict]


def families(snapshot: systemstatus.Figures, sse_streams: int, ingest: dict) -> Iterator[Metric]:
    """Every metric of docs/metrics.md's ``GET /metrics`` table from one snapshot; sans-IO."""
    up = GaugeMetricFamily("eventbus_up", "1 when the daemon answered this scrape, else 0", labels=["daemon"])
    up.add_metric(["master"], 0 if "master" in snapshot.down else 1)
    if snapshot.brokers is not None or "forward" in snapshot.down:
        up.add_metric(["forward"], 0 if "forward" in snapshot.down else 1)
    if snapshot.reactor is not None or "reactor" in snapshot.down:
        up.add_metric(["reactor"], 0 if "reactor" in snapshot.down else 1)
    yield up
    master, link = snapshot.master, snapshot.link
    if master is not None and link is not None:
        yield _counter("eventbus_events_total", "Events published on the master bus since the master started",
                       master.get("events", 0))
        yield _gauge("eventbus_listeners", "Listeners connected to the master bus", master.get("listeners", 0))
        yield _counter("eventbus_listener_lost_total",
                       "Events listeners asked the master for that were gone (window and journal)",
                       master.get("listener_lost", 0))
        yield _gauge("eventbus_minions_connected", "Minions with an accepted key linked to the master",
                     link.get("accepted", 0))
        present = list(link.get("present", []))
        yield _gauge("eventbus_minions_present", "Minions present (answering heartbeats)", len(present))
        each = GaugeMetricFamily("eventbus_minion_present", "1 for each present minion", labels=["minion"])
        for minion_id in sorted(present):
            each.add_metric([str(minion_id)], 1)
        yield each
        yield _counter("eventbus_relay_spooled_total",
                       "Events minions relayed from their spools onto the master bus since the master started",
                       link.get("relayed", 0))
        yield _counter("eventbus_relay_throttled_total",
                       "Relay batches the master answered resend because their minion was past relay_rate_limit",
                       link.get("throttled", 0))
        yield _gauge("eventbus_journal_bytes", "Bytes of the master's event journal on disk", snapshot.journal_bytes)
    if snapshot.brokers is not None:
        delivered = CounterMetricFamily("eventbus_forward_delivered", "Events a broker acknowledged",
                                        labels=["broker"])
        pending = GaugeMetricFamily("eventbus_forward_pending", "Events in a broker's outbox, not yet delivered",
                                    labels=["broker"])
        dropped = CounterMetricFamily("eventbus_forward_dropped", "Events dropped past a broker's outbox bound",
                                      labels=["broker"])
        broker_up = GaugeMetricFamily("eventbus_forward_up", "1 when a broker is up, 0 when down", labels=["broker"])
        for broker in snapshot.brokers:
            delivered.add_metric([broker.name], broker.delivered)
            pending.add_metric([broker.name], broker.pending)
            dropped.add_metric([broker.name], broker.dropped)
            broker_up.add_metric([broker.name], 1 if broker.state == "up" else 0)
        yield from (delivered, pending, dropped, broker_up)
    if snapshot.reactor is not None:
        yield _counter("eventbus_reactor_done_total", "Reactor actions done", snapshot.reactor.get("done", 0))
        yield _counter("eventbus_reactor_failed_total", "Reactor actions that failed", snapshot.reactor.get("failed", 0))
        yield _gauge("eventbus_reactor_in_flight", "Reactor actions running", snapshot.reactor.get("in_flight", 0))
    if snapshot.cluster is not None or "cluster" in snapshot.down:
        yield from cluster_families(snapshot.cluster)
    yield from api_families(sse_streams, ingest)


def cluster_families(status: dict | None) -> Iterator[Metric]:
    """The master's part of the fleet-wide bus, from its cluster process's status (``None``: not running)."""
    up = status is not None and status.get("state") == "up"
    yield _gauge("eventbus_cluster_up", "1 when the master's cluster process reaches the fleet's NATS cluster, else 0",
                 1 if up else 0)
    if status is None:
        return
    info = GaugeMetricFamily("eventbus_cluster_info", "The fleet stream, and why the cluster is down (empty when up)",
                             labels=["stream", "error"])
    info.add_metric([str(status.get("stream") or ""), "" if up else str(status.get("error") or "")], 1)
    yield info
    yield _counter("eventbus_cluster_exported_total", "Events of this master written to the fleet stream",
                   status.get("exported", 0))
    yield _counter("eventbus_cluster_imported_total", "Events of other masters put on this master's bus",
                   status.get("imported", 0))
    yield _counter("eventbus_cluster_duplicates_total",
                   "Events not stored again because the fleet stream already had them", status.get("duplicates", 0))
    yield _gauge("eventbus_cluster_export_lag", "Events of this master's journal not yet on the fleet stream",
                 status.get("export_lag", 0))


def api_families(sse_streams: int, ingest: dict) -> Iterator[Metric]:
    """The API's own metrics: its open streams and CloudEvents counts (``eventbus status`` shows them too)."""
    yield _gauge("eventbus_sse_streams", "Open /events streams of this API", sse_streams)
    accepted, refused = ingest.get("accepted", {}), ingest.get("refused", {})
    accepted_family = CounterMetricFamily("eventbus_cloudevents_accepted", "CloudEvents accepted, by type",
                                          labels=["type"])
    for event_type, count in sorted(accepted.items()):
        accepted_family.add_metric([event_type], count)
    refused_family = CounterMetricFamily("eventbus_cloudevents_refused",
                                         "CloudEvents requests refused, by HTTP status and error code",
                                         labels=["status", "code"])
    for (status, code), count in sorted(refused.items()):
        refused_family.add_metric([str(status), code], count)
    yield accepted_family
    yield refused_family


def samples(metric_families: Iterable[Metric]) -> list[list]:
    """``[[name, labels, value], ...]`` of ``metric_families``: the same figures as JSON (``eventbus.netapi.apistatus``)."""
    return [[sample.name, sample.labels, sample.value] for family in metric_families for sample in family.samples]


def _no_ingest() -> dict:
    return {"accepted": {}, "refused": {}}


class Metrics:
    """The API's registry with one collector; ``render()`` is the body of ``GET /metrics``."""

    def __init__(self, master: MasterConfig, sse_streams: Callable[[], int],
                 ingest_counts: IngestCounts | None = None) -> None:
        self.master = master
        self.sse_streams = sse_streams
        # The CloudEvents ingest's own counts (set by the API app); none until it says.
        self.ingest_counts: IngestCounts = ingest_counts or _no_ingest
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        # One scrape at a time: concurrent scrapers share nothing, and the daemons are asked once each.
        self._lock = threading.Lock()
        self._forward_dir: tuple[float | None, Path | None] = (None, None)  # (forward file's mtime, sock dir)
        self._context: zmq.Context | None = None

    def forward_dir(self) -> Path | None:
        """The forwarder's control socket dir, from a ``forward`` file beside the master's (re-read when it changes)."""
        try:
            mtime: float | None = (Path(str(self.master.source)).parent / "forward").stat().st_mtime
        except OSError:
            mtime = None
        if mtime != self._forward_dir[0]:
            try:
                self._forward_dir = (mtime, systemstatus.forward_sock_dir(self.master) if mtime is not None else None)
            except EventBusError as exc:
                log.warning("metrics: cannot read the forwarder's config: %s", exc)
                self._forward_dir = (mtime, None)
        return self._forward_dir[1]

    def collect(self) -> Iterator[Metric]:
        if self._context is None:
            self._context = zmq.Context()
        snapshot = systemstatus.gather(self.master, self.forward_dir(), context=self._context)
        yield from families(snapshot, self.sse_streams(), self.ingest_counts())

    def close(self) -> None:
        if self._context is not None:
            self._context.destroy(0)
            self._context = None

    def describe(self) -> list:
        return []

    def render(self) -> bytes:
        with self._lock:
            return generate_latest(self.registry)
