"""``eventbus forward``: run the reader, one drain per broker, and the control socket until a signal.

The main thread answers control requests (``ping``, ``stats``) on
``sock_dir/ctl.ipc`` and fires the health events the other threads report,
so no bus handle is shared between threads. A ``source: fleet`` broker has no outbox and no part in the
reader: its drain reads the fleet stream through its shared consumer (``eventbus.daemon.forward.fleet``).
"""
from __future__ import annotations

import logging
import os
import queue
import signal
import threading
from typing import Any, Callable

import zmq

import dataclasses
import time

from eventbus.daemon.forward import channelbrokers, fleet, registry
from eventbus.daemon.forward.reader import BusReader, Lane, tag_matcher
from eventbus.daemon.forward.worker import BrokerWorker, redact
from eventbus.daemon.ownership import SockDirLock
from eventbus import config, controlserver
from eventbus.bus import control, wire
from eventbus.forwarding import config as forwardconf
from eventbus.refusallog import Complaints
from eventbus.errors import ConfigError, EventBusError, SinkError
from eventbus.event import MasterEvent
from eventbus.forwarding.config import BrokerConfig, ForwardConfig
from eventbus.forwarding.outbox import Outbox
from eventbus.cluster.consumer import FleetConsumer
from eventbus.reload import Reloader

log = logging.getLogger(__name__)

STOP_GRACE = 10.0
# How often the channels registry is compared with the brokers made of it.
CHANNEL_CHECK = 1.0


def _bus_head(master: config.MasterConfig, stopping: threading.Event) -> int | None:
    """The master bus's head seq, waiting for the master to answer (``None`` if stopped first)."""
    said = False
    while not stopping.is_set():
        try:
            return int(control.ping(master.sock_dir, timeout=2.0)["seq"])
        except EventBusError as exc:
            if not said:
                log.warning("waiting for the master bus at %s to learn where new brokers start: %s",
                            master.sock_dir, exc)
                said = True
            stopping.wait(0.5)
    return None


class Forwarder:
    """The forwarder's parts for one ``forward`` config."""

    def __init__(self, settings: ForwardConfig) -> None:
        self.channels_root = channelbrokers.api_root(settings)
        self.published = channelbrokers.brokers(settings, self.channels_root) or ()
        settings = dataclasses.replace(settings, brokers=settings.brokers + self.published)
        self.settings = settings
        self.reload = False
        self.master = config.load(config.MasterConfig, settings.master_config)
        # A ``source: fleet`` broker needs the master's cluster: one line naming the key, before anything starts.
        self.fleet = {b.name: fleet.cluster_of(self.master, b, str(settings.source or "forward"))
                      for b in settings.brokers if b.source == "fleet"}
        # Every broker's class is found before anything starts (its keys were checked when the file was
        # read); a bad one stops us here.
        self.classes = {b.name: registry.sink_class(b.type, b.name) for b in settings.brokers}
        self.sinks: dict[str, Any] = {}
        for broker in settings.brokers:
            self.sinks[broker.name] = self._make_sink(broker)
        self.reports: queue.SimpleQueue[tuple[str, dict]] = queue.SimpleQueue()
        self.stopping = threading.Event()
        self.workers: list[BrokerWorker] = []
        self.reader: BusReader | None = None

    def _make_sink(self, broker: BrokerConfig) -> Any:
        """The broker's sink (``None`` for now if it cannot be made yet); a bad key stops the forwarder,
        a broker that cannot be reached does not."""
        cls = self.classes[broker.name]
        try:
            return cls.from_endpoint_config(dict(broker.options))
        except ConfigError:
            raise
        except SinkError as exc:
            if broker.type in registry.BUILTIN:  # built-in sinks raise SinkError only for a bad value
                raise ConfigError(f"forward: broker {broker.name!r} (type {broker.type}): "
                                  f"{redact(str(exc), broker.secrets)}", key="type") from None
            log.warning("broker %s: its sink could not be made yet, retrying: %s", broker.name,
                        redact(str(exc), broker.secrets))
        except Exception as exc:  # a custom class may connect here; its broker may just be away
            log.warning("broker %s: its sink could not be made yet, retrying: %s: %s", broker.name,
                        type(exc).__name__, redact(str(exc), broker.secrets))
        return None

    def report(self, tag: str, data: dict) -> None:
        self.reports.put((tag, data))

    def open(self) -> bool:
        """Open outboxes (new brokers start at the bus head) and start the threads; ``False`` if stopped."""
        lanes = []
        head = None
        for broker in self.settings.brokers:
            if broker.name in self.fleet:
                self.workers.append(self._fleet_worker(broker))
                continue
            outbox = Outbox(self.settings.state_dir / f"{broker.name}.outbox", broker.outbox_max_events)
            if outbox.intake is None:
                if head is None:
                    head = _bus_head(self.master, self.stopping)
                    if head is None:
                        return False
                outbox.start_at(head)
                log.info("broker %s is new: it starts at the bus head, seq %d", broker.name, head)
            worker = BrokerWorker(broker, self.classes[broker.name], outbox, self.report, self.sinks[broker.name])
            self.workers.append(worker)
            lanes.append(Lane(broker, outbox, worker.wake))
        for worker in self.workers:
            worker.start()
        if lanes:
            self.reader = BusReader(self.master, lanes, self.report)
            self.reader.start()
        return True

    def _fleet_worker(self, broker: BrokerConfig) -> BrokerWorker:
        """The drain of a ``source: fleet`` broker: the fleet stream through its shared consumer, no outbox file."""
        consumer = FleetConsumer(self.fleet[broker.name], fleet.durable_name(broker),
                                 client_name=f"{self.master.id}-forward-{broker.name}")
        consumer.start()
        log.info("broker %s reads the fleet stream %s (shared consumer %s)", broker.name,
                 self.fleet[broker.name].stream, consumer.durable)
        outbox = fleet.FleetOutbox(consumer, tag_matcher(broker.tags))
        return BrokerWorker(broker, self.classes[broker.name], outbox, self.report,  # type: ignore[arg-type]
                            self.sinks[broker.name])

    def stats(self, _args: Any = None) -> dict:
        reader = self.reader
        return {"pid": os.getpid(), "brokers": [w.stats() for w in self.workers],
                "reader": {"seq": reader.last_seq if reader else 0, "lost": reader.lost if reader else 0}}

    def serve(self, context: zmq.Context, endpoints: wire.Endpoints,
              each_turn: Callable[[], None] = lambda: None) -> int:
        """Answer control requests and fire reports until stopped (``each_turn`` runs every turn); the exit code."""
        router = context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.bind(endpoints.ctl)
        os.chmod(endpoints.files[2], 0o600)
        verbs = {wire.VERB_PING: lambda _a: {"node": "forward", "pid": os.getpid()}, wire.VERB_STATS: self.stats}
        complaints = Complaints(log)
        firer = MasterEvent(self.master.sock_dir, opts=self.master, listen=False)
        log.warning("eventbus forward ready: %d brokers (%s), control socket %s", len(self.workers),
                    ", ".join(w.broker.name for w in self.workers), endpoints.ctl)
        next_check = time.monotonic() + CHANNEL_CHECK
        try:
            while not self.stopping.is_set():
                each_turn()
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + CHANNEL_CHECK
                    now_published = channelbrokers.brokers(self.settings, self.channels_root)
                    if now_published is not None and now_published != self.published:
                        log.warning("the publishing channels changed: restarting the brokers (cursors kept)")
                        self.reload = True
                        return 0
                if router.poll(200):
                    answer = controlserver.answer(verbs, router.recv_multipart(), complaints, endpoints.ctl)
                    if answer is not None:
                        router.send_multipart(answer)
                while not self.reports.empty():
                    tag, data = self.reports.get()
                    try:
                        fired = firer.fire_event(data, tag, timeout=1000)
                    except EventBusError as exc:
                        fired, data = False, {"error": str(exc)}
                    if not fired:
                        log.warning("could not fire %s on the master bus (master not answering)", tag)
                if self.reader is not None and self.reader.failed:
                    return 1
            return 0
        finally:
            router.close(0)
            firer.destroy()

    def close(self) -> None:
        self.stopping.set()
        if self.reader is not None:
            self.reader.stop()
        for worker in self.workers:
            worker.stop()
        if self.reader is not None:
            self.reader.join(STOP_GRACE)
        for worker in self.workers:
            if worker.join(STOP_GRACE):
                worker.outbox.close()


def run(settings: ForwardConfig) -> int:
    """Run ``eventbus forward`` until SIGTERM/SIGINT; the exit code."""
    forwarder = Forwarder(settings)
    endpoints = wire.endpoints(settings.sock_dir)
    lock = SockDirLock(endpoints, "forward")
    lock.acquire()
    context = zmq.Context()
    stopped = threading.Event()

    def stop(signum: int, _frame: Any) -> None:
        stopped.set()
        forwarder.stopping.set()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    reloader = Reloader(settings, forwardconf.load)  # SIGHUP: re-read the file, name what needs a restart
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, reloader.ask)
    try:
        while True:
            if not forwarder.open():
                return 0
            code = forwarder.serve(context, endpoints, reloader.reload_if_asked)
            if not forwarder.reload or stopped.is_set():
                return code
            forwarder.close()
            forwarder = Forwarder(settings)  # the publishing channels changed: same outboxes, new brokers
    finally:
        forwarder.close()
        lock.release()
        context.destroy(linger=0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        log.info("eventbus forward stopped")
