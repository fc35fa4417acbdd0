"""A broker's drain and its outbox's bound together: every event is delivered or counted dropped, never both."""
from __future__ import annotations

import threading

from eventbus.daemon.forward.worker import BrokerWorker
from eventbus.forwarding.config import BrokerConfig
from eventbus.forwarding.outbox import Outbox
from tests.helpers import wait_for


def rows(first: int, last: int) -> list[tuple[int, str, dict]]:
    return [(seq, "t", {"n": seq}) for seq in range(first, last + 1)]


class Broker:
    """What a broker received, and how its next publish ends: held at a gate, failing, or accepted."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.failing = False


def sink_class_for(broker: Broker) -> type:
    """A plain sink class (no ``eventbus.sink.Sink`` base, no ``BODY``) publishing into ``broker``."""

    class Recording:
        @classmethod
        def from_endpoint_config(cls, cfg: dict) -> "Recording":
            return cls()

        def publish(self, batch: list) -> None:
            broker.entered.set()
            broker.gate.wait(30)
            if broker.failing:
                raise ConnectionError("broker away")
            broker.received.extend(o.seq for o in batch)

        def is_ready(self) -> bool:
            return True

        def close(self) -> None:
            pass

    return Recording


def drain(tmp_path, broker: Broker) -> tuple[BrokerWorker, Outbox]:
    outbox = Outbox(tmp_path / "b.outbox", 5)
    config = BrokerConfig("b", "tests.Recording", outbox_max_events=5)
    worker = BrokerWorker(config, sink_class_for(broker), outbox, lambda tag, data: None)
    return worker, outbox


def settle(worker: BrokerWorker, outbox: Outbox, broker: Broker) -> None:
    wait_for(lambda: outbox.pending == 0, 30, what="the outbox to empty")
    worker.stop()
    assert worker.join(10)
    assert len(broker.received) == len(set(broker.received)) == outbox.delivered
    assert outbox.delivered + outbox.dropped == 20, (broker.received, outbox.dropped)


def test_a_batch_in_the_brokers_hands_when_the_bound_is_passed_is_delivered_not_dropped(tmp_path):
    broker = Broker()
    worker, outbox = drain(tmp_path, broker)
    outbox.append(rows(1, 1), intake=1)
    worker.start()
    assert broker.entered.wait(10)                 # event 1 is being published
    assert outbox.append(rows(2, 20), intake=20) == 14
    broker.gate.set()
    settle(worker, outbox, broker)
    assert broker.received == [1, 16, 17, 18, 19, 20] and outbox.dropped == 14


def test_a_batch_whose_publish_failed_goes_back_to_the_outbox_where_the_bound_may_drop_it(tmp_path):
    broker = Broker()
    broker.failing = True
    broker.gate.set()
    worker, outbox = drain(tmp_path, broker)
    outbox.append(rows(1, 1), intake=1)
    worker.start()
    wait_for(lambda: worker.down, 10, what="the first publish to fail")
    # Handed back and waiting (dropped with the oldest), or handed out again for the retry (kept).
    assert outbox.append(rows(2, 20), intake=20) in (15, 14)
    broker.failing = False
    settle(worker, outbox, broker)
    assert broker.received in ([16, 17, 18, 19, 20], [1, 16, 17, 18, 19, 20])
