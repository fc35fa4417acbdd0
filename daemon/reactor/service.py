"""The reactor process: reads the master bus with its own durable cursor and runs the rules' actions.

Run by the master as a child (``eventbus.daemon.reactor.child``) as
``python -m eventbus.daemon.reactor MASTER_CONFIG [--after SEQ]``. One thread reads and matches, and hands
each action to the pool of its kind; past ``MAX_IN_FLIGHT`` pending actions it stops reading. A finished
action is recorded in the ledger, then its result fired; the cursor (``acked``) is the seq before the
oldest event with an unfinished action, saved every ``SAVE_EVERY`` s after the ledger is synced (record
before acknowledging). ``--after SEQ``: events up to SEQ are not reacted to (the cursor starts there
unless it is past it). SIGHUP re-reads the rules between two events; SIGTERM lets running actions finish
for ``SHUTDOWN_GRACE`` s. See docs/reactor.md, Where it runs and Never drop, never repeat. A master with
``cluster`` runs ``eventbus.daemon.reactor.fleet.FleetReactor`` instead: the fleet stream, not its own bus.
"""
from __future__ import annotations

import collections
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from eventbus.daemon.childproc import MASTER_PID_ENV
from eventbus.daemon.reactor import actions
from eventbus.daemon.reactor.ledger import Ledger
from eventbus.daemon.reactor.results import Publisher
from eventbus import config, systemstatus, logsetup
from eventbus.bus import control
from eventbus.reactor import rules
from eventbus.bus.admin import Admin
from eventbus.bus.cursor import Cursor
from eventbus.errors import EventBusError
from eventbus.event import MasterEvent
from eventbus.cloudevents.jsonfile import write_atomic

log = logging.getLogger(__name__)

# Threads per action kind: separate pools so one kind never waits on another.
POOL_SIZES = {"fire": 2, "target": 8, "run": 128, "post": 16}
MAX_IN_FLIGHT = 10_000
SAVE_EVERY = 0.2
STATUS_EVERY = 0.5
STATUS_UNCHANGED_EVERY = 10.0
SHUTDOWN_GRACE = 5.0
READ_WAIT = 0.1


class Reactor:
    """The rules of one master applied to its bus, each (rule, seq, action) once."""

    def __init__(self, settings: config.MasterConfig, after: int | None = None) -> None:
        self.settings = settings
        self.after = after
        self.rules = rules.RuleSet(settings.reactor)
        self.status_path = systemstatus.reactor_status_path(settings)
        directory = self.status_path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.cursor = Cursor(directory / "cursor")
        self.ledger = self.open_ledger(directory)
        self.pools = {kind: ThreadPoolExecutor(size, thread_name_prefix=f"reactor-{kind}")
                      for kind, size in POOL_SIZES.items()}
        self.publisher = Publisher(settings)
        # ``fire`` actions publish from their own pool threads, one handle each: no hop through the
        # results' publisher thread on the path from event to action.
        self._fire_handles = threading.local()
        self.admin = Admin.for_master(settings)
        self.processes = actions.Processes()
        self.lock = threading.Condition()
        self.outstanding: dict[int, int] = {}  # seq -> actions not finished
        self.order: collections.deque[int] = collections.deque()
        self.last_read = 0
        self.in_flight = 0
        self.running_now = 0
        self.done = 0
        self.failed = 0
        self.lost = 0
        self.running = True
        self.reload_wanted = False
        self._written_status: dict | None = None
        self._status_due = 0.0
        self.started = time.time()
        self.handle: MasterEvent | None = None

    def open_ledger(self, directory: Path) -> Any:
        """The record of finished actions: the master's own file (``FleetReactor`` keeps it fleet-wide)."""
        return Ledger(directory / "done")

    def finished(self, seq: int) -> None:
        """Every action ``seq`` started is finished and recorded (the cursor moves on its own here)."""

    # -- signals --------------------------------------------------------------------

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._want_reload)
        # The master starts us with SIGHUP blocked (see ``eventbus.daemon.reactor.child``): one sent meanwhile arrives now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})

    def _stop(self, _signum: int, _frame: Any) -> None:
        self.running = False

    def _want_reload(self, _signum: int, _frame: Any) -> None:
        self.reload_wanted = True

    def reload(self) -> None:
        """Re-read the rules; a bad config keeps the current ones."""
        self.reload_wanted = False
        try:
            fresh = config.load(config.MasterConfig, self.settings.source)
        except EventBusError as exc:
            log.error("reactor: rules not reloaded, keeping the %d current ones: %s", len(self.rules), exc)
            return
        self.rules = rules.RuleSet(fresh.reactor)
        # The master's SIGHUP line already says so.
        log.debug("reactor: reloaded %d rules from %s", len(self.rules), self.settings.source)

    # -- position -------------------------------------------------------------------

    def start_seq(self) -> int:
        """The saved cursor (or ``after`` when that is later); for a first run, the start of the master's current run."""
        saved = self.cursor.load()
        if self.after is not None and (saved is None or saved < self.after):
            self.cursor.save(self.after)  # saved before reading: a restart must not go back past it
            return self.after
        if saved is not None:
            return saved
        deadline = time.monotonic() + 30
        while True:
            try:
                return int(control.ping(self.settings.sock_dir, timeout=2.0)["epoch"])
            except EventBusError:
                if time.monotonic() > deadline or not self.running:
                    raise
                time.sleep(0.1)

    def acked(self) -> int:
        """Every event up to this seq has all its actions finished (and recorded)."""
        with self.lock:
            order, outstanding = self.order, self.outstanding
            while order and order[0] not in outstanding:
                order.popleft()
            return order[0] - 1 if order else self.last_read

    def save(self) -> None:
        acked = self.acked()
        if self.cursor.seq is None or acked > self.cursor.seq:
            self.ledger.sync()
            self.cursor.save(acked)
            self.ledger.compact(acked)

    def status(self) -> dict:
        """The figures of ``status.json`` but its ``updated`` time."""
        return {"pid": os.getpid(), "rules": len(self.rules), "in_flight": self.in_flight, "done": self.done,
                "failed": self.failed, "lost": self.lost, "cursor": self.acked(), "read": self.last_read,
                "started": self.started, "running": self.running}

    def write_status(self) -> None:
        """Write ``status.json`` when a figure changed, and every ``STATUS_UNCHANGED_EVERY`` s when none did (an
        idle reactor does not rewrite the same file twice a second)."""
        status = self.status()
        now = time.monotonic()
        if status == self._written_status and now < self._status_due:
            return
        write_atomic(self.status_path, {**status, "updated": time.time()})
        self._written_status, self._status_due = status, now + STATUS_UNCHANGED_EVERY

    # -- the read loop --------------------------------------------------------------

    def run(self) -> None:
        since = self.start_seq()
        self.last_read = since
        self.handle = MasterEvent(self.settings.sock_dir, opts=self.settings)
        self.handle.start_following(since)
        log.warning("reactor: %d rules, following the master bus after seq %d", len(self.rules), since)
        self.serve()

    def serve(self) -> None:
        """Read and dispatch until stopped (``read_one`` says when the source is done), then shut down."""
        saver = threading.Thread(target=self._keep_saving, name="reactor-saver", daemon=True)
        saver.start()
        try:
            while self.running:
                if self.reload_wanted:
                    self.reload()
                if self.in_flight >= MAX_IN_FLIGHT:
                    with self.lock:
                        self.lock.wait(READ_WAIT)
                    continue
                if not self.read_one():
                    break
        finally:
            self.close_source()
            self.running = False
            saver.join(10)
            self.shutdown()

    def read_one(self) -> bool:
        """Read the next event from the master bus and dispatch it; ``False`` to stop reading."""
        handle = self.handle
        event = handle.get_event_record(wait=READ_WAIT, auto_reconnect=True, following=True, match=self._wanted)
        if event is None:
            # Events no rule matches were read (never unpacked): the cursor may pass them.
            seen = handle.inbox.last_seq
            if seen > self.last_read and not handle.inbox.filling:
                self.last_read = seen
            return True
        if event.seq is None:
            lost = int((event.data or {}).get("lost", 0))
            self.lost += lost
            log.error("reactor: %d events are gone from the master's journal; their reactions cannot run", lost)
            return True
        self.dispatch(event.seq, event.tag, event.data)
        return True

    def close_source(self) -> None:
        if self.handle is not None:
            self.handle.destroy()
            self.handle = None

    def _keep_saving(self) -> None:
        """Sync the ledger, save the cursor and write the status, off the reading thread (fsyncs can stall)."""
        next_status = 0.0
        # The master that started it (``daemon/childproc.py`` says which), also if it died before this ran.
        parent = int(os.environ.get(MASTER_PID_ENV, "") or os.getppid())
        while self.running:
            if os.getppid() != parent:
                # The master died without stopping us (kill -9): stop, so its next run's reactor is the only one.
                log.error("reactor: the master (pid %d) is gone; stopping", parent)
                self.running = False
            try:
                self.save()
                if time.monotonic() >= next_status:
                    self.write_status()
                    next_status = time.monotonic() + STATUS_EVERY
            except EventBusError as exc:
                log.error("reactor: cannot save its position (retrying): %s", exc)
            except OSError as exc:
                log.error("reactor: cannot write its ledger or status (retrying): %s", exc)
            time.sleep(SAVE_EVERY)

    def _wanted(self, tag: str) -> bool:
        """Whether any rule matches ``tag`` (the reader's filter: other events are not even unpacked)."""
        return bool(self.rules.match(tag))

    def dispatch(self, seq: int, tag: str, data: Any) -> None:
        """Hand every action of every rule matching ``tag`` (and not yet run) to its pool."""
        matched = self.rules.match(tag)
        if matched:
            context = rules.context(seq, tag, data)
            ledger = self.ledger
            jobs = [(rule, action) for rule in matched for action in rule.actions
                    if (rule.key, seq, action.index) not in ledger]
            if jobs:
                with self.lock:
                    self.outstanding[seq] = len(jobs)
                    self.order.append(seq)
                    self.in_flight += len(jobs)
                    self.last_read = seq
                for rule, action in jobs:
                    self.pools[action.kind].submit(self.perform, rule, action, seq, context)
                return
        # No action for this event: nothing outstanding to order against, so no lock (an int store).
        self.last_read = seq

    def perform(self, rule: rules.Rule, action: rules.Action, seq: int, context: dict) -> None:
        """Run one action, record it, report it, and count it off its event."""
        started = time.monotonic()
        with self.lock:
            self.running_now += 1
        try:
            fields = rules.render(action.fields, context)
            if action.kind == "fire":
                result = actions.fire(fields, self._fire_now)
            elif action.kind == "target":
                result = actions.target(fields, self.admin)
            elif action.kind == "run":
                result = actions.run(fields, self.processes)
            else:
                result = actions.post(fields)
        except rules.RenderError as exc:
            result = {"ok": False, "error": str(exc)}
        except Exception as exc:  # an action's bug must not lose its record or stall the cursor
            log.exception("reactor: rule %r action %d (%s) on seq %d failed", rule.glob, action.index + 1,
                          action.kind, seq)
            result = {"ok": False, "error": f"internal error: {exc}"}
        duration = time.monotonic() - started
        with self.lock:
            self.running_now -= 1
            self.lock.notify_all()
        if not self.running and action.kind == "run" and result.get("rc") is not None and result["rc"] < 0:
            # Killed by our own shutdown: not done; it runs again after the restart.
            return
        self.ledger.record((rule.key, seq, action.index))
        report = {"rule": rule.glob, "action": action.kind, "seq": seq, "ok": bool(result.pop("ok")),
                  "duration": round(duration, 6), **result}
        self.publisher.publish(rules.RESULT_TAG, report)
        with self.lock:
            if report["ok"]:
                self.done += 1
            else:
                self.failed += 1
            self.in_flight -= 1
            left = self.outstanding[seq] - 1
            if left:
                self.outstanding[seq] = left
            else:
                del self.outstanding[seq]
            self.lock.notify_all()
        if not left:
            self.finished(seq)

    def _fire_now(self, tag: str, data: dict) -> bool:
        handle = getattr(self._fire_handles, "handle", None)
        if handle is None:
            handle = self._fire_handles.handle = MasterEvent(self.settings.sock_dir, opts=self.settings,
                                                             listen=False)
        for _ in range(5):
            if handle.fire_event(data, tag, timeout=1000):
                return True
        return False

    def shutdown(self) -> None:
        """Let running actions finish (within the grace), drop queued ones, record and save."""
        for pool in self.pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + SHUTDOWN_GRACE
        with self.lock:
            # Cancelled (queued) actions never start; wait only for the ones running.
            while self.running_now and time.monotonic() < deadline:
                self.lock.wait(0.05)
        self.processes.kill_all()
        self.save()
        self.publisher.close()
        self.write_status()
        self.ledger.close()


def hold_lock(path: Path) -> int:
    """Take the reactor's lock on its state, waiting while a previous reactor (orphaned, stopping) holds it."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if not said:
                log.warning("reactor: another reactor still holds %s; waiting for it to stop", path)
                said = True
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    """``python -m eventbus.daemon.reactor MASTER_CONFIG [--after SEQ]``: run the reactor until SIGTERM."""
    argv = sys.argv[1:] if argv is None else argv
    if not (len(argv) == 1 or (len(argv) == 3 and argv[1] == "--after" and argv[2].isdigit())):
        sys.stderr.write("usage: python -m eventbus.daemon.reactor MASTER_CONFIG [--after SEQ]\n")
        return 2
    after = int(argv[2]) if len(argv) == 3 else None
    try:
        settings = config.load(config.MasterConfig, argv[0])
    except EventBusError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    logsetup.setup(settings.log_level, settings.log_file, name="reactor")
    # Hand the GIL over sooner (default 5 ms): an action thread waiting to start must not wait
    # for the reader's time slice to run out.
    sys.setswitchinterval(0.0005)
    # The fd stays open, and locked, until this process exits.
    hold_lock(systemstatus.reactor_status_path(settings).with_name("lock"))
    if settings.cluster is not None:
        from eventbus.daemon.reactor.fleet import FleetReactor

        reactor: Reactor = FleetReactor(settings, after)
    else:
        reactor = Reactor(settings, after)
    reactor.install_signals()
    try:
        reactor.run()
    except EventBusError as exc:
        log.error("reactor stopped: %s", exc)
        return 1
    # Worker threads stuck in an action past the grace must not hold the exit; all is saved by now.
    logging.shutdown()
    os._exit(0)

