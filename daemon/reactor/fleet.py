"""The reactor of a master with ``cluster``: the fleet stream through the shared consumer ``reactor``.

The reactors of all masters share the durable consumer ``reactor`` (``eventbus.cluster.consumer``), so
JetStream hands each fleet event to one of them: each event triggers its rules on one master, with ``seq``
its stream seq. A finished action is recorded fleet-wide in the JetStream key-value bucket
``<stream>_reactor`` (``FleetLedger``: the cluster version of the master's own ledger file), then its
result fired on this master's bus; an event is acked once every action it started is recorded. A reactor
that dies leaves its unacked events to another master's reactor after the consumer's ``ack_wait``, which
runs only the actions not recorded. While the cluster is away, reactions of fleet events wait (nothing
is read, nothing is lost). See docs/reactor.md, Several masters.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Callable

import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType

from eventbus.cluster import consumer as fleet_consumer
from eventbus.cluster.settings import ClusterSettings
from eventbus.config import MasterConfig
from eventbus.daemon.reactor.ledger import Entry
from eventbus.daemon.reactor.service import MAX_IN_FLIGHT, READ_WAIT, Reactor
from eventbus.errors import ClusterError
from eventbus.reactor import rules

log = logging.getLogger(__name__)

DURABLE = "reactor"
# A record outlives any wait of its event for a reactor (events are acked within ack_wait of a death).
LEDGER_TTL = 7 * 24 * 3600.0
RETRY_WAIT = 0.5


def bucket_name(settings: ClusterSettings) -> str:
    """The key-value bucket of the fleet's finished actions, beside the stream it is about."""
    return f"{settings.stream}_reactor"


def entry_key(entry: Entry) -> str:
    """A bucket key for (rule key, stream seq, action index); the rule key (``index:glob``) as a hash, since a
    glob holds characters no key may."""
    rule, seq, index = entry
    return f"{seq}.{hashlib.sha1(rule.encode()).hexdigest()[:16]}.{index}"


class FleetLedger:
    """The finished (rule, stream seq, action) entries of every master, in a JetStream key-value bucket."""

    def __init__(self, consumer: fleet_consumer.FleetConsumer, settings: ClusterSettings,
                 stopping: Callable[[], bool]) -> None:
        self.consumer = consumer
        self.settings = settings
        self.bucket = bucket_name(settings)
        self.stopping = stopping
        self._kv: tuple[Any, Any] | None = None  # (js it was opened on, the bucket)
        self._said: str | None = None

    async def _open(self, js: Any) -> Any:
        if self._kv is not None and self._kv[0] is js:
            return self._kv[1]
        try:
            kv = await js.key_value(self.bucket)
        except nats.js.errors.BucketNotFoundError:
            config = KeyValueConfig(bucket=self.bucket, history=1, ttl=LEDGER_TTL, replicas=self.settings.replicas,
                                    storage=StorageType.FILE)
            try:
                kv = await js.create_key_value(config)
            except nats.js.errors.BadRequestError:
                kv = await js.key_value(self.bucket)  # made by another master meanwhile
        self._kv = (js, kv)
        return kv

    def _retry(self, factory: Callable[[Any], Any]) -> Any:
        """``factory(js)`` on the consumer's connection, retried while the cluster is away (until stopping)."""
        while True:
            try:
                result = self.consumer.call(factory)
            except ClusterError as exc:
                if self.stopping():
                    raise
                if self._said != str(exc):
                    self._said = str(exc)
                    log.error("reactor: the fleet ledger %s cannot be reached (%s); retrying", self.bucket, exc)
                time.sleep(RETRY_WAIT)
                continue
            if self._said is not None:
                self._said = None
                log.warning("reactor: the fleet ledger %s answers again", self.bucket)
            return result

    def finished(self, entries: list[Entry]) -> set[Entry]:
        """Which of ``entries`` some master already finished (one round of lookups)."""
        async def look(js: Any) -> set[Entry]:
            kv = await self._open(js)

            async def one(entry: Entry) -> bool:
                try:
                    await kv.get(entry_key(entry))
                    return True
                except nats.js.errors.KeyNotFoundError:
                    return False
            found = await asyncio.gather(*(one(entry) for entry in entries))
            return {entry for entry, done in zip(entries, found) if done}
        return self._retry(look) if entries else set()

    def __contains__(self, entry: Entry) -> bool:
        return entry in self.finished([entry])

    def record(self, entry: Entry) -> None:
        """Note fleet-wide that ``entry`` ran (blocks while the cluster is away; ``ClusterError`` if stopped
        meanwhile: the event is then not acked and its other master repeats this action)."""
        async def put(js: Any) -> None:
            kv = await self._open(js)
            await kv.put(entry_key(entry), b"")
        self._retry(put)

    def sync(self) -> None:
        """Recorded entries are durable once ``record`` returns."""

    def compact(self, acked: int) -> None:
        """The bucket's records expire on their own (``LEDGER_TTL``)."""

    def close(self) -> None:
        """Nothing to close: the connection is the consumer's."""


class FleetReactor(Reactor):
    """The master's rules applied to the fleet's events, each event on one master of the fleet."""

    def __init__(self, settings: MasterConfig, after: int | None = None) -> None:
        assert settings.cluster is not None
        self.consumer = fleet_consumer.FleetConsumer(settings.cluster, DURABLE, client_name=f"{settings.id}-reactor",
                                                     bound=MAX_IN_FLIGHT)
        super().__init__(settings, after)
        # The fleet has one position for all masters: ``--after`` (a reload's) does not apply.
        self.after = None

    def open_ledger(self, directory: Path) -> Any:
        return FleetLedger(self.consumer, self.settings.cluster, lambda: not self.running)

    def finished(self, seq: int) -> None:
        self.consumer.done(seq)

    def save(self) -> None:
        """No cursor of its own: acking each event is the fleet's position."""

    def status(self) -> dict:
        return {**super().status(), "cursor": None, "fleet": self.consumer.status()}

    def run(self) -> None:
        # The first reactor of the fleet makes the consumer from its master's start, as a single master's first
        # reactor starts at the start of its master's run.
        self.consumer.start_time = self.start_seq() / 1e6
        if not self.consumer.start():
            log.warning("reactor: the fleet consumer %s is not there yet (the cluster does not answer); reacting "
                        "once it is", DURABLE)
        log.warning("reactor: %d rules, reacting to the fleet's events of stream %s (shared consumer %s)",
                    len(self.rules), self.settings.cluster.stream, DURABLE)
        self.serve()

    def read_one(self) -> bool:
        """The next fleet event from the shared consumer, reacted to; ``False`` when stopping while the cluster
        is away (the event goes back to the fleet)."""
        event = self.consumer.get(READ_WAIT)
        if event is None:
            return True
        try:
            self.react(event.stream_seq, event.tag, event.data)
        except ClusterError:
            return False
        return True

    def close_source(self) -> None:
        """The consumer is closed by ``shutdown`` (what it holds goes back to the fleet)."""

    def react(self, seq: int, tag: str, data: Any) -> None:
        """Hand every action of every rule matching ``tag`` not finished by any master to its pool; ack an
        event with none."""
        matched = self.rules.match(tag)
        jobs = [(rule, action) for rule in matched for action in rule.actions]
        if jobs:
            done = self.ledger.finished([(rule.key, seq, action.index) for rule, action in jobs])
            jobs = [(rule, action) for rule, action in jobs if (rule.key, seq, action.index) not in done]
        self.last_read = max(self.last_read, seq)
        if not jobs:
            self.consumer.done(seq)
            return
        context = rules.context(seq, tag, data)
        with self.lock:
            self.outstanding[seq] = len(jobs)
            self.in_flight += len(jobs)
        for rule, action in jobs:
            self.pools[action.kind].submit(self.perform_recorded, rule, action, seq, context)

    def perform_recorded(self, rule: rules.Rule, action: rules.Action, seq: int, context: dict) -> None:
        try:
            self.perform(rule, action, seq, context)
        except ClusterError as exc:
            # Stopped while the fleet ledger was away: not recorded, not acked; another master runs it again.
            log.error("reactor: rule %r action %d on stream seq %d finished but not recorded (%s); another "
                      "master may run it again", rule.glob, action.index + 1, seq, exc)

    def shutdown(self) -> None:
        super().shutdown()
        self.consumer.stop()
