"""A broker with ``source: fleet``: its drain reads the fleet stream through the shared consumer ``forward_<name>``.

``FleetOutbox`` offers the ``Outbox`` calls a ``BrokerWorker`` makes (``read``, ``rewind``, ``ack`` and the
counts) over a ``eventbus.cluster.consumer.FleetConsumer``: the waiting events stay in the stream, not on
disk, and a stream message is acked only once the sink accepted it (``ack`` after ``publish``). So a
forwarder killed with SIGKILL loses nothing: what it held goes, after the consumer's ``ack_wait``, to the
forwarder of another master running the same broker; at most the batch it was delivering when it died
reaches the broker again, as one master's outbox re-sends it after a restart. The records carry the stream
seq as ``seq``; events the broker's ``tags`` do not match, and ``eventbus/forward/...`` events, are acked
at once. See docs/forward.md, Several masters.
"""
from __future__ import annotations

import time
from typing import Callable

from eventbus.cluster import consumer as fleet_consumer
from eventbus.cluster.settings import ClusterSettings
from eventbus.config import MasterConfig
from eventbus.errors import ConfigError
from eventbus.forwarding.config import BrokerConfig
from eventbus.forwarding.outbox import Row

PURPOSE = "forward"
OWN_TAGS = "eventbus/forward/"
FIRST_WAIT = 0.5  # s a read waits for its first event (the drain then waits on its own)


def durable_name(broker: BrokerConfig) -> str:
    """The shared consumer of ``broker`` on every master: ``forward_<name>`` (made a valid consumer name)."""
    return fleet_consumer.durable_name(PURPOSE, broker.name)


def cluster_of(master: MasterConfig, broker: BrokerConfig, label: str) -> ClusterSettings:
    """The master's ``cluster`` a ``source: fleet`` broker reads; ``ConfigError`` naming the key without one."""
    if master.cluster is None:
        raise ConfigError(f"{label}: broker {broker.name!r}: key 'source' has value 'fleet'; expected 'bus', "
                          f"or a 'cluster' key in the master config {master.source} (the fleet stream to read)",
                          file=label, key="source", value="fleet")
    return master.cluster


class FleetOutbox:
    """The stream's events for one broker, handed to its drain and acked once delivered."""

    def __init__(self, consumer: fleet_consumer.FleetConsumer, matches: Callable[[str], object] | None) -> None:
        self.consumer = consumer
        self.matches = matches
        self.intake: int | None = None  # no bus cursor: the consumer is the position
        self.delivered = 0
        self.dropped = 0                # the stream bounds what waits, not this process
        self._waiting: list[Row] = []   # taken from the consumer, not handed to the drain
        self._handed: list[Row] = []    # handed to the drain, not yet acked

    @property
    def pending(self) -> int:
        return self.consumer.held

    def read(self, limit: int) -> list[Row]:
        """The next (at most ``limit``) events for the broker, in stream order; theirs until ``ack``/``rewind``."""
        wait = FIRST_WAIT if not self._waiting else 0.0
        deadline = time.monotonic() + wait
        while len(self._waiting) < limit:
            event = self.consumer.get(max(0.0, deadline - time.monotonic()) if not self._waiting else 0.0)
            if event is None:
                break
            if event.tag.startswith(OWN_TAGS) or (self.matches is not None and not self.matches(event.tag)):
                self.consumer.done(event.stream_seq)
                continue
            self._waiting.append((event.stream_seq, event.tag, event.data))
        self._waiting.sort(key=lambda row: row[0])
        taken, self._waiting = self._waiting[:limit], self._waiting[limit:]
        self._handed.extend(taken)
        return taken

    def rewind(self) -> None:
        """Take back what was handed out (its delivery failed): the next read hands it again first."""
        self._waiting = sorted(self._handed + self._waiting, key=lambda row: row[0])
        self._handed = []

    def ack(self, seq: int, count: int) -> None:
        """The broker accepted the events handed out up to ``seq``: ack them on the stream."""
        kept: list[Row] = []
        for row in self._handed:
            if row[0] <= seq:
                self.consumer.done(row[0])
            else:
                kept.append(row)
        self._handed = kept
        self.delivered += count

    def close(self) -> None:
        """Give back what was not delivered (another master's forwarder takes it now) and disconnect."""
        self.consumer.stop()
