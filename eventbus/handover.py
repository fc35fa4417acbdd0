"""A closing publisher's hand-over: wait until the daemon has read every frame the publisher sent.

The barrier protocol of ``eventbus.wire``, client side. Used by the blocking
and asyncio handles when they close, for the bus and for the minion's relay.
"""
from __future__ import annotations

import logging
import os
import time

import zmq

from eventbus import control, wire
from eventbus.errors import EventBusError

log = logging.getLogger(__name__)

# A closing publisher waits at most this long for the daemon to read what it still holds.
HAND_OVER_TIMEOUT = 30.0
# A barrier ask the daemon does not answer within this means it is gone.
ASK_TIMEOUT = 1.0
_send_bytes = zmq.backend.Socket.send
_NOBLOCK = int(zmq.NOBLOCK)


def hand_over(push: zmq.Socket, context: zmq.Context, sock_dir: str | os.PathLike,
              timeout: float = HAND_OVER_TIMEOUT) -> bool:
    """Before a publisher closes: wait until the daemon has read every frame ``push`` sent.

    Sends a barrier frame last and asks the daemon's ``barrier`` verb until
    it was read (see ``eventbus.wire``). ``True`` when it was; ``False`` when
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
                _send_bytes(push, frame, _NOBLOCK)  # queued behind every event this socket holds
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
