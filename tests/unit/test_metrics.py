"""The metric families from one snapshot of the daemons' figures, and the ingest counters (no sockets)."""
from __future__ import annotations


from prometheus_client.core import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from eventbus.systemstatus import Broker, Figures
from eventbus.netapi.metrics import families


def render(snapshot: Figures, streams: int = 0, ingest: dict | None = None) -> dict:
    registry = CollectorRegistry(auto_describe=False)

    class Once:
        def collect(self):
            return families(snapshot, streams, ingest or {"accepted": {}, "refused": {}})

    registry.register(Once())
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_every_figure_becomes_its_metric():
    snapshot = Figures(master={"events": 12, "listeners": 3, "listener_lost": 2, "journal": {"bytes": 4096}},
                       link={"accepted": 2, "present": ["b", "a"], "relayed": 7, "throttled": 3},
                       brokers=[Broker("out", "file", "up", 10, 2, 1), Broker("db", "sql", "down", 0, 12, 0)])
    ingest = {"accepted": {"com.example.order": 2}, "refused": {(400, "SchemaViolation"): 1}}
    samples = render(snapshot, streams=5, ingest=ingest)
    assert samples[("eventbus_events_total", ())] == 12
    assert samples[("eventbus_listeners", ())] == 3
    assert samples[("eventbus_listener_lost_total", ())] == 2
    assert samples[("eventbus_minions_connected", ())] == 2
    assert samples[("eventbus_minions_present", ())] == 2
    assert samples[("eventbus_minion_present", (("minion", "a"),))] == 1
    assert samples[("eventbus_relay_spooled_total", ())] == 7
    assert samples[("eventbus_relay_throttled_total", ())] == 3
    assert samples[("eventbus_journal_bytes", ())] == 4096
    assert samples[("eventbus_sse_streams", ())] == 5
    assert samples[("eventbus_forward_delivered_total", (("broker", "out"),))] == 10
    assert samples[("eventbus_forward_pending", (("broker", "db"),))] == 12
    assert samples[("eventbus_forward_dropped_total", (("broker", "out"),))] == 1
    assert samples[("eventbus_forward_up", (("broker", "db"),))] == 0
    assert samples[("eventbus_cloudevents_accepted_total", (("type", "com.example.order"),))] == 2
    assert samples[("eventbus_cloudevents_refused_total", (("code", "SchemaViolation"), ("status", "400")))] == 1
    assert samples[("eventbus_up", (("daemon", "master"),))] == 1


def test_a_daemon_down_is_up_zero_and_its_metrics_are_left_out():
    samples = render(Figures(down={"master": "no daemon", "forward": "no daemon"}))
    assert samples[("eventbus_up", (("daemon", "master"),))] == 0
    assert samples[("eventbus_up", (("daemon", "forward"),))] == 0
    assert not any(name.startswith(("eventbus_events", "eventbus_forward")) for name, _ in samples)
    assert samples[("eventbus_sse_streams", ())] == 0


def test_the_cluster_figures_become_their_metrics():
    status = {"running": True, "state": "up", "error": None, "exported": 40, "imported": 25, "duplicates": 3,
              "export_lag": 7, "stream": "EVENTBUS"}
    samples = render(Figures(cluster=status))
    assert samples[("eventbus_cluster_up", ())] == 1
    assert samples[("eventbus_cluster_exported_total", ())] == 40
    assert samples[("eventbus_cluster_imported_total", ())] == 25
    assert samples[("eventbus_cluster_duplicates_total", ())] == 3
    assert samples[("eventbus_cluster_export_lag", ())] == 7
    assert samples[("eventbus_cluster_info", (("error", ""), ("stream", "EVENTBUS")))] == 1


def test_a_cluster_down_or_not_running_is_cluster_up_zero():
    down = render(Figures(cluster={"running": True, "state": "down", "error": "no server answered", "exported": 4,
                                   "imported": 0, "duplicates": 0, "export_lag": 9, "stream": "EVENTBUS"}))
    assert down[("eventbus_cluster_up", ())] == 0
    assert down[("eventbus_cluster_info", (("error", "no server answered"), ("stream", "EVENTBUS")))] == 1
    assert down[("eventbus_cluster_export_lag", ())] == 9
    gone = render(Figures(down={"cluster": "the master's cluster process is not running"}))
    assert gone[("eventbus_cluster_up", ())] == 0
    assert not any(name.startswith("eventbus_cluster_") and name != "eventbus_cluster_up" for name, _ in gone)


def test_no_cluster_metrics_without_cluster():
    assert not any(name.startswith("eventbus_cluster") for name, _ in render(Figures()))
