"""The local bus: publishers PUSH events in, the daemon numbers them and PUBlishes them out.

Per event the daemon checks the frames (size, tag, a real msgpack map),
gives the event the next sequence number, sends it to every subscriber and
keeps it in the replay window. The XPUB socket drops events for a subscriber
whose queue (``subscriber_queue``) is full, so a stalled subscriber costs
bounded memory and slows no one; its handle counts the gap. Control requests
(ping, stats, replay, and verbs other components register) come in on a
ROUTER socket.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

import msgpack
import zmq

from daemon.complaints import Complaints
from daemon.loop import Loop
from daemon.window import Window
from eventbus import payload, wire
from eventbus.config import BusConfig
from eventbus.errors import InvalidEventError

log = logging.getLogger(__name__)

# Events handled per wake-up before other sockets get their turn.
BATCH = 256
# Frames a little over max_event_size are refused with a log line; far bigger ones zmq cuts off.
FRAME_SLACK = 4096

VerbHandler = Callable[[Any], Any]

# pyzmq's Socket.send is a Python wrapper (routing ids, groups) around this Cython method;
# for plain bytes it only adds a call, which is a tenth of the daemon's per-event cost.
_send_bytes = zmq.backend.Socket.send


class Bus:
    """One daemon's local bus on its IPC sockets."""

    def __init__(self, settings: BusConfig, context: zmq.Context, loop: Loop) -> None:
        self.settings = settings
        self.endpoints = wire.endpoints(settings.sock_dir)
        self.max_event_size = settings.max_event_size
        self.epoch = time.time_ns() // 1000
        self.seq = self.epoch
        self.window = Window(settings.event_window, self.epoch, settings.event_window_bytes)
        self.started = time.time()
        self.complaints = Complaints(log)
        self.handshakes = 0  # listeners that proved themselves live (see eventbus.wire)
        self.verbs: dict[bytes, VerbHandler] = {
            wire.VERB_PING: self._ping, wire.VERB_STATS: self._stats, wire.VERB_REPLAY: self._replay}

        old_umask = os.umask(0o077)
        try:
            self.pull_socket = context.socket(zmq.PULL)
            self.pull_socket.setsockopt(zmq.RCVHWM, 10_000)
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
        loop.add_reader(self.pull_socket, self._on_publish)
        loop.add_reader(self.publisher_socket, self._on_subscription)
        loop.add_reader(self.control_socket, self._on_control)

    # -- events in ------------------------------------------------------------------

    def _on_publish(self) -> None:
        recv = self.pull_socket.recv
        send = _send_bytes.__get__(self.publisher_socket)
        header = wire.HEADER.pack
        keep = self.window.add
        check = payload.check_published
        limit = self.max_event_size
        epoch = self.epoch
        seq = self.seq
        try:
            for _ in range(BATCH):
                try:
                    frame = recv(zmq.NOBLOCK)
                except zmq.Again:
                    return
                try:
                    check(frame, limit)
                except InvalidEventError as exc:
                    self.complaints.refuse(exc.reason, f"refused an event on {self.endpoints.pull}: {exc}")
                    continue
                seq += 1
                out = header(seq, epoch) + frame
                send(out)
                keep((seq, out))
        finally:
            self.seq = seq

    def publish(self, tag: str, data: dict) -> int:
        """Fire an event of the daemon's own (stamped, size-checked); return its seq."""
        raw_tag, raw_data = payload.pack_event(tag, data, self.max_event_size)
        return self.publish_frame(wire.publish_frame(raw_tag, raw_data))

    def publish_frame(self, frame: bytes) -> int:
        """Put an already checked ``tag NUL data`` frame on the bus; return its seq."""
        self.seq += 1
        out = wire.HEADER.pack(self.seq, self.epoch) + frame
        self.publisher_socket.send(out)
        self.window.add((self.seq, out))
        return self.seq

    # -- subscriptions --------------------------------------------------------------

    def _on_subscription(self) -> None:
        recv = self.publisher_socket.recv
        for _ in range(BATCH):
            try:
                message = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            # \x01 + topic is a subscription; a sync token gets its answer.
            if message[:1] == b"\x01" and message[1:].startswith(wire.SYNC_PREFIX):
                self.publisher_socket.send(wire.SYNC_HEADER + message[1:])
                self.handshakes += 1

    # -- control --------------------------------------------------------------------

    def register_verb(self, verb: bytes, handler: VerbHandler) -> None:
        """Answer control requests ``verb`` with ``handler(args)``; it raises ValueError to refuse."""
        self.verbs[verb] = handler

    def _on_control(self) -> None:
        for _ in range(BATCH):
            try:
                frames = self.control_socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            # ROUTER prepends the peer identity; a REQ peer adds an empty delimiter too.
            route, request = frames[:1], frames[1:]
            if request and request[0] == b"":
                route, request = frames[:2], frames[2:]
            if len(request) != 2:
                self.complaints.refuse("control-malformed", f"refused a malformed control request on {self.endpoints.ctl}")
                continue
            verb, raw_args = request
            handler = self.verbs.get(verb)
            if handler is None:
                self.complaints.refuse("control-verb", f"refused unknown control verb {verb[:40]!r} on {self.endpoints.ctl}")
                self.control_socket.send_multipart(route + wire.reply(f"unknown verb {verb[:40]!r}", ok=False))
                continue
            try:
                args = msgpack.unpackb(raw_args, raw=False)
                result, ok = handler(args), True
            except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
                result, ok = f"{verb.decode(errors='replace')}: {exc}", False
            self.control_socket.send_multipart(route + wire.reply(result, ok=ok))

    def _ping(self, _args: Any) -> dict:
        return {"node": self.settings.node, "pid": os.getpid(), "epoch": self.epoch, "seq": self.seq}

    def _stats(self, _args: Any) -> dict:
        return {**self._ping(None), "uptime": time.time() - self.started, "refused": self.complaints.count,
                "handshakes": self.handshakes,
                "window": len(self.window.events), "window_size": self.window.size}

    def _replay(self, args: Any) -> dict:
        if not isinstance(args, dict) or not isinstance(args.get("after"), int):
            raise ValueError("expected {'after': <seq>, 'limit': <n>}")
        limit = args.get("limit")
        replay = self.window.since(args["after"], limit if isinstance(limit, int) else None)
        return {"epoch": self.epoch, "seq": self.seq, "lost": replay.lost, "restarted": replay.restarted,
                "events": replay.events}

    def close(self) -> None:
        for sock in (self.pull_socket, self.publisher_socket, self.control_socket):
            sock.close(0)
