"""The forwarder's one reader of the master bus: each event into the outbox of every broker it matches.

It resumes after the lowest intake cursor of all brokers and skips, per
broker, what that broker's outbox already took. The events a batch read and
the brokers' new cursors are written in one outbox transaction per broker,
so a crash repeats or loses nothing. Events this daemon fires about itself
(``eventbus/forward/...``) and gap notices are never forwarded.
"""
from __future__ import annotations

import fnmatch
import logging
import re
import threading
import time
from typing import Callable

from eventbus.config import MasterConfig
from eventbus.errors import EventBusError
from eventbus.event import MasterEvent
from eventbus.forwarding.config import BrokerConfig
from eventbus.forwarding.outbox import Outbox

log = logging.getLogger(__name__)

OWN_TAGS = "eventbus/forward/"
GAP_TAG = "eventbus/stream/gap"
READ_BATCH = 2000
DROP_REPORT_EVERY = 1.0


def tag_matcher(globs: tuple[str, ...]) -> Callable[[str], bool] | None:
    """A test for a broker's ``tags`` globs; ``None`` when they match every tag."""
    if "*" in globs:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs)).match  # type: ignore[return-value]


class Lane:
    """One broker as the reader sees it: its outbox, tag test and drop tally."""

    def __init__(self, broker: BrokerConfig, outbox: Outbox, wake: threading.Event) -> None:
        self.broker = broker
        self.outbox = outbox
        self.wake = wake
        self.matches = tag_matcher(broker.tags)
        self.unreported_drops = 0


class BusReader:
    """Follows the master bus in a thread of its own, filling ``lanes``' outboxes."""

    def __init__(self, master: MasterConfig, lanes: list[Lane], report: Callable[[str, dict], None]) -> None:
        self.master = master
        self.lanes = lanes
        self.report = report
        self.lost = 0
        self.failed = False
        self.last_seq = 0
        self.stopping = threading.Event()
        self._next_drop_report = 0.0
        self.thread = threading.Thread(target=self._run, name="forward-reader", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            self._follow()
        except Exception:  # the daemon must stop with the reason, not forward nothing silently
            log.exception("the master bus reader failed")
            self.failed = True

    def _follow(self) -> None:
        since = min(lane.outbox.intake or 0 for lane in self.lanes)
        with MasterEvent(self.master.sock_dir, opts=self.master) as handle:
            handle.start_following(since)
            log.info("reading the master bus after seq %d for %d brokers", since, len(self.lanes))
            while not self.stopping.is_set():
                events = []
                event = handle.get_event_record(wait=0.2, auto_reconnect=True, following=True)
                while event is not None:
                    events.append(event)
                    if len(events) >= READ_BATCH:
                        break
                    event = handle.get_event_record(no_block=True, auto_reconnect=True, following=True)
                if events:
                    self._take(events)
                self._report_drops()

    def _take(self, events: list) -> None:
        last = self.last_seq
        newest = max((e.seq for e in events if e.seq is not None), default=0)
        for lane in self.lanes:
            intake = lane.outbox.intake or 0
            if newest <= intake:
                continue
            matches = lane.matches
            rows = [(seq, tag, data) for tag, data, seq in events
                    if seq is not None and seq > intake and not tag.startswith(OWN_TAGS)
                    and (matches is None or matches(tag))]
            self._append(lane, rows, newest)
        for tag, data, seq in events:
            if seq is None and tag == GAP_TAG:
                lost = int(data.get("lost", 0))
                self.lost += lost
                log.warning("%d events after seq %d are gone from the master's window and journal; "
                            "no broker can get them", lost, last)
            elif seq is not None:
                last = seq
        self.last_seq = last

    def _append(self, lane: Lane, rows: list, intake: int) -> None:
        while True:
            try:
                dropped = lane.outbox.append(rows, intake)
                break
            except EventBusError as exc:
                log.error("broker %s: %s; retrying in 1 s (the master keeps the events meanwhile)",
                          lane.broker.name, exc)
                if self.stopping.wait(1.0):
                    return
        if rows:
            lane.wake.set()
        if dropped:
            lane.unreported_drops += dropped

    def _report_drops(self) -> None:
        now = time.monotonic()
        if now < self._next_drop_report:
            return
        self._next_drop_report = now + DROP_REPORT_EVERY
        for lane in self.lanes:
            if lane.unreported_drops:
                lost, lane.unreported_drops = lane.unreported_drops, 0
                log.warning("broker %s: outbox full (outbox_max_events %d): dropped the %d oldest events",
                            lane.broker.name, lane.broker.outbox_max_events, lost)
                self.report(f"eventbus/forward/{lane.broker.name}/dropped", {"lost": lost})

    def stop(self) -> None:
        self.stopping.set()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
