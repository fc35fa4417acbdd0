"""The local bus: publishers PUSH events in, the daemon numbers them and PUBlishes them out.

Per event the daemon checks the frames (size, tag, a real msgpack map),
gives the event the next sequence number, sends it to every subscriber and
keeps it in the replay window. On the master each wake-up's batch is also
appended to the journal (one write) before it is sent, so a daemon crash
loses nothing a listener has received. The XPUB socket drops events for a
subscriber whose queue (``subscriber_queue``) is full, so a stalled
subscriber costs bounded memory and slows no one; its handle fetches what it
missed with the replay verb, which serves the window, then the journal.
Control requests (ping, stats, replay, and verbs other components register)
come in on a ROUTER socket.
"""
from __future__ import annotations

import collections
import logging
import os
import time
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message
from zmq.backend import zmq_poll as _zmq_poll

from eventbus.refusallog import Complaints
from eventbus.controlserver import VerbHandler
from eventbus.daemon.journal.writer import Journal
from eventbus.daemon.loop import Loop
from eventbus.daemon.window import Window
from eventbus import controlserver
from eventbus.bus import payload, wire
from eventbus.config import BusConfig, MasterConfig
from eventbus.errors import InvalidEventError

log = logging.getLogger(__name__)

# Barrier tokens of closing publishers the daemon remembers until they are asked for.
BARRIERS_KEPT = 4096

# Events handled per wake-up before other sockets get their turn.
BATCH = 256
# Events queued in the daemon per publisher connection. Most of the daemon's peak RSS under a flat-out
# 1 KB load is here (measured: 96 MB at 10,000, 60 MB at 1,000). A publisher holds up to its own
# queue (eventbus.bus.sockets.PUBLISH_QUEUE) beyond this; closing its handle waits until the daemon has
# read it all (the barrier, eventbus.bus.wire), so a small intake loses nothing.
INTAKE_QUEUE = 1_000
# Frames a little over max_event_size are refused with a log line; far bigger ones zmq cuts off.
FRAME_SLACK = 4096
# Events (and bytes) one replay answer carries at most; readers ask page after page.
REPLAY_PAGE = 5000
REPLAY_BYTES = 1 << 20  # a reply per lagging listener may sit in its queue: keep each small
JOURNAL_ERROR_TAG = "eventbus/journal/error"
# At a stop, the daemon takes in what its intake holds for at most this long before it closes.
CLOSE_DRAIN = 5.0
CLOSE_QUIET = 0.05

# pyzmq's Socket.send is a Python wrapper (routing ids, groups) around this Cython method;
# for plain bytes it only adds a call, which is a tenth of the daemon's per-event cost.
_send_bytes = zmq.backend.Socket.send
# zmq's constants are enum members: ``&`` on one runs Python code, and passing one costs a conversion.
_POLLIN, _NOBLOCK = int(zmq.POLLIN), int(zmq.NOBLOCK)


def _readable(poll_items: list[tuple[zmq.Socket, int]]) -> bool:
    """Whether the socket of ``[(sock, POLLIN)]`` has a message waiting.

    A zero-timeout poll: cheaper than a recv that raises ``zmq.Again``, and
    than ``sock.get(zmq.EVENTS)``, which looks the option up in an enum.
    """
    return bool(_zmq_poll(poll_items, 0))


class Bus:
    """One daemon's local bus on its IPC sockets."""

    def __init__(self, settings: BusConfig, context: zmq.Context, loop: Loop) -> None:
        self.settings = settings
        self.endpoints = wire.endpoints(settings.sock_dir)
        self.max_event_size = settings.max_event_size
        self.loop = loop
        self.journal: Journal | None = None
        last_journaled = 0
        if isinstance(settings, MasterConfig) and settings.event_journal:
            self.journal = Journal(settings.journal_dir, settings.journal_max_bytes, settings.journal_max_age,
                                   settings.journal_fsync, on_error=self._journal_failed,
                                   on_recover=self._journal_recovered)
            last_journaled = self.journal.open()
            loop.call_every(1.0, self.journal.poll)
        # Seqs keep growing across restarts: from the start time in µs, or past the journal's last.
        self.epoch = max(time.time_ns() // 1000, last_journaled)
        self.seq = self.epoch
        self.window = Window(settings.event_window, self.epoch, settings.event_window_bytes)
        self.started = time.time()
        self.complaints = Complaints(log)
        self.handshakes = 0  # listeners that proved themselves live (see eventbus.bus.wire)
        self.listeners = 0  # connections on the publisher socket, from its monitor (no per-event work)
        self.listener_lost = 0  # events listeners asked to replay that were gone everywhere
        self.verbs: dict[bytes, VerbHandler] = {
            wire.VERB_PING: self._ping, wire.VERB_STATS: self._stats, wire.VERB_REPLAY: self._replay,
            wire.VERB_BARRIER: self._barrier}
        # Barrier tokens of closing publishers, newest last (see eventbus.bus.wire): a few thousand at most.
        self._barriers: collections.OrderedDict[bytes, None] = collections.OrderedDict()

        old_umask = os.umask(0o077)
        try:
            self.pull_socket = context.socket(zmq.PULL)
            self.pull_socket.setsockopt(zmq.RCVHWM, INTAKE_QUEUE)
            self.pull_socket.setsockopt(zmq.MAXMSGSIZE, settings.max_event_size + FRAME_SLACK)
            self.pull_socket.setsockopt(zmq.LINGER, 0)
            self.pull_socket.bind(self.endpoints.pull)
            self.publisher_socket = context.socket(zmq.XPUB)
            self.publisher_socket.setsockopt(zmq.SNDHWM, settings.subscriber_queue)
            self.publisher_socket.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)
            self.publisher_socket.setsockopt(zmq.LINGER, 0)
            self.publisher_socket.bind(self.endpoints.pub)
            self.control_socket = context.socket(zmq.ROUTER)
            self.control_socket.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)
            self.control_socket.setsockopt(zmq.LINGER, 0)
            self.control_socket.bind(self.endpoints.ctl)
        finally:
            os.umask(old_umask)
        self._pull_ready = [(self.pull_socket, _POLLIN)]
        self._pub_ready = [(self.publisher_socket, _POLLIN)]
        self._ctl_ready = [(self.control_socket, _POLLIN)]
        loop.add_reader(self.pull_socket, self._on_publish, own=True)
        loop.add_reader(self.publisher_socket, self._on_subscription, own=True)
        loop.add_reader(self.control_socket, self._on_control, own=True)
        self.monitor_socket = self.publisher_socket.get_monitor_socket(
            zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        loop.add_reader(self.monitor_socket, self._on_monitor, own=True)
        # A send may take the publisher socket's signal of a subscription that arrived; subscriptions may wait
        # a moment (a new listener's sync answer), so the loop asks once for many sends (eventbus.daemon.loop).
        self._touch_publisher = loop.toucher(self.publisher_socket)

    # -- events in ------------------------------------------------------------------

    def _on_publish(self) -> bool:
        pull = self.pull_socket
        recv = pull.recv
        header = wire.HEADER.pack
        check = payload.check_published
        limit = self.max_event_size
        epoch = self.epoch
        seq = self.seq
        batch: list[tuple[int, bytes]] = []
        add = batch.append
        full = True
        try:
            for index in range(BATCH):
                # The socket signalled, so the first recv almost always finds a frame; after it, one cheap
                # look at the socket (``_readable``, inline) decides whether to drain on. A quiet wake-up
                # ends without an exception.
                if index == 1 and not _zmq_poll(self._pull_ready, 0):
                    full = False
                    break
                try:
                    frame = recv(_NOBLOCK)
                except zmq.Again:
                    full = False
                    break
                try:
                    check(frame, limit)
                except InvalidEventError as exc:
                    token = wire.barrier_token(frame)
                    if token is not None:
                        self.note_barrier(token)  # a closing publisher's last frame
                    else:
                        self.complaints.refuse(exc.reason, f"refused an event on {self.endpoints.pull}: {exc}")
                    continue
                seq += 1
                add((seq, header(seq, epoch) + frame))
        finally:
            self.seq = seq
            if batch:
                self._out(batch)
        return full  # a full batch: more may wait, the loop calls again on its next turn

    def _out(self, batch: list[tuple[int, bytes]]) -> None:
        """Journal (one write), send and keep numbered events."""
        if self.journal is not None:
            # On disk (the page cache) before any listener has it: a daemon crash loses none of it.
            self.journal.append(batch)
        if len(batch) == 1:  # a quiet bus's wake-up
            _send_bytes(self.publisher_socket, batch[0][1])
        else:
            send = _send_bytes.__get__(self.publisher_socket)
            for entry in batch:
                send(entry[1])
        self.window.extend(batch)
        self._touch_publisher()

    def own_frame(self, tag: str, data: dict) -> bytes:
        """The frame of an event of the daemon's own (stamped, size-checked), to publish with others."""
        raw_tag, raw_data = payload.pack_event(tag, data, self.max_event_size)
        return wire.publish_frame(raw_tag, raw_data)

    def publish(self, tag: str, data: dict) -> int:
        """Fire an event of the daemon's own (stamped, size-checked); return its seq."""
        return self.publish_frames([self.own_frame(tag, data)])

    def publish_frame(self, frame: bytes) -> int:
        """Put an already checked ``tag NUL data`` frame on the bus; return its seq."""
        return self.publish_frames([frame])

    def publish_frames(self, frames: list[bytes]) -> int:
        """Put already checked ``tag NUL data`` frames on the bus, journaled in one write; the last seq."""
        header = wire.HEADER.pack
        epoch = self.epoch
        first = self.seq + 1
        batch = [(seq, header(seq, epoch) + frame) for seq, frame in enumerate(frames, first)]
        self.seq += len(batch)
        self._out(batch)
        return self.seq

    # -- the journal's health ---------------------------------------------------------

    def _journal_failed(self, message: str) -> None:
        log.error("%s; the bus goes on, events are kept in memory only until the journal can be written", message)
        # Not from inside append (a batch is being numbered): on the loop's next turn.
        self.loop.call_later(0, lambda: self._fire_own(JOURNAL_ERROR_TAG, {"error": message}))

    def _journal_recovered(self) -> None:
        assert self.journal is not None
        missed = [entry for entry in self.window.events if entry[0] > self.journal.last_seq]
        self.journal.append(missed)
        log.warning("the journal at %s is written again; %d events kept in memory meanwhile were added",
                    self.settings.journal_dir, len(missed))  # type: ignore[attr-defined]

    def _fire_own(self, tag: str, data: dict) -> None:
        try:
            self.publish(tag, data)
        except InvalidEventError as exc:
            log.error("cannot fire %s: %s", tag, exc)

    # -- subscriptions --------------------------------------------------------------

    def _on_subscription(self) -> bool | None:
        recv = self.publisher_socket.recv
        for index in range(BATCH):
            if index and not _readable(self._pub_ready):
                return
            try:
                message = recv(_NOBLOCK)
            except zmq.Again:
                return
            # \x01 + topic is a subscription; a sync token gets its answer.
            if message[:1] == b"\x01" and message[1:].startswith(wire.SYNC_PREFIX):
                self.publisher_socket.send(wire.SYNC_HEADER + message[1:])
                self.handshakes += 1
        return True

    def _on_monitor(self) -> bool | None:
        for _ in range(BATCH):
            try:
                message = recv_monitor_message(self.monitor_socket, zmq.NOBLOCK)
            except zmq.Again:
                return
            if message["event"] == zmq.EVENT_ACCEPTED:
                self.listeners += 1
            elif message["event"] == zmq.EVENT_DISCONNECTED:
                self.listeners = max(self.listeners - 1, 0)
        return True

    # -- control --------------------------------------------------------------------

    def register_verb(self, verb: bytes, handler: VerbHandler) -> None:
        """Answer control requests ``verb`` with ``handler(args)``; it raises ValueError to refuse."""
        self.verbs[verb] = handler

    def _on_control(self) -> bool | None:
        for index in range(BATCH):
            if index and not _readable(self._ctl_ready):
                return
            try:
                frames = self.control_socket.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return
            answer = controlserver.answer(self.verbs, frames, self.complaints, self.endpoints.ctl)
            if answer is not None:
                self.control_socket.send_multipart(answer)
        return True

    def note_barrier(self, token: bytes) -> None:
        """A closing publisher's barrier frame was read (here or by a component's intake, e.g. the relay)."""
        self._barriers[token] = None
        if len(self._barriers) > BARRIERS_KEPT:
            self._barriers.popitem(last=False)

    def _barrier(self, args: Any) -> dict:
        """Whether the barrier frame with token ``args`` was read: every frame its publisher sent before is numbered."""
        if not isinstance(args, bytes):
            raise ValueError("expected the barrier token (bytes)")
        return {"taken": self._barriers.pop(args, False) is None, "seq": self.seq}

    def _ping(self, _args: Any) -> dict:
        return {"node": self.settings.node, "pid": os.getpid(), "epoch": self.epoch, "seq": self.seq}

    def _stats(self, _args: Any) -> dict:
        stats = {**self._ping(None), "uptime": time.time() - self.started, "refused": self.complaints.count,
                 "handshakes": self.handshakes, "events": self.seq - self.epoch,
                 "listeners": self.listeners, "listener_lost": self.listener_lost,
                 "window": len(self.window.events), "window_size": self.window.size}
        if self.journal is not None:
            journal = self.journal.reader.stats()
            stats["journal"] = {"bytes": journal.bytes, "events": journal.events, "segments": journal.segments,
                                "first_seq": journal.first_seq, "last_seq": journal.last_seq,
                                "error": self.journal.failed}
        return stats

    def _replay(self, args: Any) -> dict:
        """Events after ``after``: from the window when it holds them, else from the journal."""
        if not isinstance(args, dict) or not isinstance(args.get("after"), int):
            raise ValueError("expected {'after': <seq>, 'limit': <n>}")
        after = args["after"]
        limit = args.get("limit")
        limit = min(limit, REPLAY_PAGE) if isinstance(limit, int) and limit > 0 else REPLAY_PAGE
        window = self.window.events
        answer = {"epoch": self.epoch, "seq": self.seq, "lost": 0, "restarted": False, "events": []}
        if self.journal is not None and not (window and window[0][0] <= after + 1):
            read = self.journal.reader.read(after, limit, REPLAY_BYTES)
            if read.events or read.lost:
                answer["events"], answer["lost"] = read.events, read.lost
                self.listener_lost += read.lost
                return answer
        replay = self.window.since(after, limit)
        answer.update(lost=replay.lost, restarted=replay.restarted and self.journal is None, events=replay.events)
        self.listener_lost += replay.lost
        return answer

    def _drain_intake(self) -> None:
        """At a stop: number, journal and send what publishers still have on the way in (their
        ``fire_event`` said yes), until the intake has been quiet for a moment or ``CLOSE_DRAIN`` passed."""
        now = time.monotonic()
        deadline, quiet_until = now + CLOSE_DRAIN, now + CLOSE_QUIET
        taken = self.seq
        while now < deadline and now < quiet_until:
            before = self.seq
            if not self._on_publish():
                if self.seq == before:
                    time.sleep(0.002)
            if self.seq != before:
                quiet_until = time.monotonic() + CLOSE_QUIET
            now = time.monotonic()
        if self.seq != taken:
            log.info("took in %d events still on their way in before stopping", self.seq - taken)

    def close(self) -> None:
        self._drain_intake()
        self.loop.remove_reader(self.monitor_socket)
        self.publisher_socket.disable_monitor()
        self.monitor_socket.close(0)
        for sock in (self.pull_socket, self.publisher_socket, self.control_socket):
            sock.close(0)
        if self.journal is not None:
            self.journal.close()
