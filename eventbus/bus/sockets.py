"""A bus handle's two sockets, opened and closed the same way by the blocking and the asyncio handle.

The listener's sync token and the publisher's closing barrier are the
protocols of ``eventbus.bus.wire``; the hand-over serves the bus and the minion's relay.
"""
from __future__ import annotations

import logging
import math
import os
import time

import zmq

from eventbus.bus import control, wire
from eventbus.errors import EventBusError

log = logging.getLogger(__name__)

# A listener may be this many events behind before the bus starts dropping for it.
LISTEN_QUEUE = 100_000
PUBLISH_QUEUE = 10_000
# A new listener waits this long for the daemon to prove it live.
CONNECT_TIMEOUT = 5.0
# A closing publisher waits at most this long for the daemon to read what it still holds.
HAND_OVER_TIMEOUT = 30.0
# A barrier ask the daemon does not answer within this means it is gone.
ASK_TIMEOUT = 1.0
# pyzmq's Socket.send is a Python wrapper (routing ids, groups) around this Cython method;
# for plain bytes it only adds a call per event.
send_bytes = zmq.backend.Socket.send
_NOBLOCK = int(zmq.NOBLOCK)


def poll_ms(seconds: float) -> int:
    """A wait of ``seconds`` as a poll's timeout: whole milliseconds, rounded up (never negative).

    Rounded down, a wait's last fraction of a millisecond became a zero timeout, and a reader waiting for
    its deadline polled again and again until it passed: about 0.5 ms of busy CPU at the end of every wait.
    """
    return max(math.ceil(seconds * 1000), 0)


def open_listener(context: zmq.Context, endpoints: wire.Endpoints) -> tuple[zmq.Socket, bytes]:
    """A SUB socket subscribed to every event, and the sync token it asked for last."""
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, LISTEN_QUEUE)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RECONNECT_IVL, 100)
    sub.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    sub.connect(endpoints.pub)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    token = wire.SYNC_PREFIX + os.urandom(12)
    sub.setsockopt(zmq.SUBSCRIBE, token)
    return sub, token


def open_publisher(context: zmq.Context, endpoints: wire.Endpoints, timeout_ms: int,
                   endpoint: str | None = None) -> zmq.Socket:
    """A PUSH socket that queues only to a connected daemon (so a send can time out)."""
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.IMMEDIATE, 1)
    push.setsockopt(zmq.SNDHWM, PUBLISH_QUEUE)
    push.setsockopt(zmq.LINGER, max(timeout_ms, 1000))
    push.setsockopt(zmq.SNDTIMEO, timeout_ms)
    push.setsockopt(zmq.RECONNECT_IVL, 100)
    push.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    push.connect(endpoint or endpoints.pull)
    return push


def hand_over(push: zmq.Socket, context: zmq.Context, sock_dir: str | os.PathLike,
              timeout: float = HAND_OVER_TIMEOUT) -> bool:
    """Before a publisher closes: wait until the daemon has read every frame ``push`` sent.

    Sends a barrier frame last and asks the daemon's ``barrier`` verb until
    it was read (see ``eventbus.bus.wire``). ``True`` when it was; ``False`` when
    no daemon is connected or answering (what ``push`` still held is lost
    with the connection) or after ``timeout`` seconds of a daemon that
    answers but does not read. ``context`` is a blocking context (the
    control requests are made on it).
    """
    token = os.urandom(12)
    frame = wire.barrier_frame(token)
    client = control.Client(context, sock_dir)
    deadline = time.monotonic() + timeout
    pause = 0.0005
    try:
        while True:
            try:
                send_bytes(push, frame, _NOBLOCK)  # queued behind every event this socket holds
                break
            except zmq.Again:
                # No daemon connected, or our queue is full: a daemon that still answers will read it.
                client.request(wire.VERB_PING, None, ASK_TIMEOUT)
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.01)
        while not client.request(wire.VERB_BARRIER, token, ASK_TIMEOUT)["taken"]:
            if time.monotonic() > deadline:
                log.warning("the daemon on %s did not read this publisher's last events within %g s",
                            sock_dir, timeout)
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        return True
    except EventBusError as exc:
        log.debug("no hand-over to the daemon on %s: %s", sock_dir, exc)
        return False
    finally:
        client.close()
