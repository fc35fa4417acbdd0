"""The reference: the strongest bare design of this bus, a pyzmq PULL->PUB proxy with msgpack.

``python -m bench.reference DIR`` runs the proxy: ``zmq.proxy`` forwards
frames in C, with no checks, numbering or replay. ``python -m
bench.reference --python DIR`` runs the *Python floor* instead: the least a
Python daemon can do per event (one ``poll`` on the socket's ``ZMQ_FD``,
``recv`` until empty, ``send``), which is what ``bench.floor`` measures the
bus and the proxy against. Publishers PUSH the same
single frame our bus takes (``tag NUL msgpack``) with a reused msgpack
Packer; subscribers split the tag and unpack the data. Queue sizes are the
bus's own defaults, so both designs absorb the same bursts.
"""
from __future__ import annotations

import select
import sys
from pathlib import Path

import msgpack
import zmq

# The same queue sizes as the bus: daemon in (per publisher) and out, a publisher's and a listener's queue.
DAEMON_QUEUE = 10_000
PUBLISH_QUEUE = 10_000
SUBSCRIBER_QUEUE = 10_000
LISTEN_QUEUE = 100_000


def endpoints(directory: str | Path) -> tuple[str, str]:
    """(pull, pub) IPC endpoints of a proxy in ``directory``."""
    return f"ipc://{directory}/in.ipc", f"ipc://{directory}/out.ipc"


def _bound(directory: str | Path) -> tuple[zmq.Socket, zmq.Socket]:
    """The proxy's PULL and PUB sockets, bound in ``directory`` with the bus's queue sizes."""
    pull_endpoint, pub_endpoint = endpoints(directory)
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, DAEMON_QUEUE)
    pull.bind(pull_endpoint)
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, SUBSCRIBER_QUEUE)
    pub.bind(pub_endpoint)
    return pull, pub


def serve(directory: str | Path) -> None:
    """Run the proxy until killed."""
    zmq.proxy(*_bound(directory))


def serve_python(directory: str | Path) -> None:
    """Forward frames in a Python loop, with nothing else per event, until killed."""
    pull, pub = _bound(directory)
    poller = select.poll()
    poller.register(pull.getsockopt(zmq.FD), select.POLLIN)
    recv, send, noblock = pull.recv, zmq.backend.Socket.send.__get__(pub), int(zmq.NOBLOCK)
    while True:
        poller.poll(1000)
        while True:
            try:
                frame = recv(noblock)
            except zmq.Again:
                break
            send(frame)


class Publisher:
    """A PUSH socket sending ``tag NUL msgpack`` frames; ``send`` blocks on back-pressure."""

    def __init__(self, directory: str | Path) -> None:
        self.context = zmq.Context()
        self.push = self.context.socket(zmq.PUSH)
        self.push.setsockopt(zmq.SNDHWM, PUBLISH_QUEUE)
        self.push.setsockopt(zmq.LINGER, 5000)
        self.push.connect(endpoints(directory)[0])
        self.pack = msgpack.Packer(use_bin_type=True).pack

    def send(self, data: dict, tag: str) -> None:
        self.push.send(tag.encode() + b"\x00" + self.pack(data))

    def close(self) -> None:
        self.push.close()
        self.context.term()


class Subscriber:
    """A SUB socket on every event; ``recv`` returns (tag, data) or ``None`` after ``timeout`` s."""

    def __init__(self, directory: str | Path) -> None:
        self.context = zmq.Context()
        self.sub = self.context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, LISTEN_QUEUE)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(endpoints(directory)[1])
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")

    def recv(self, timeout: float) -> tuple[str, dict] | None:
        sub = self.sub
        try:
            frame = sub.recv(zmq.NOBLOCK)
        except zmq.Again:
            if not sub.poll(int(timeout * 1000)):
                return None
            frame = sub.recv()
        cut = frame.index(b"\x00")
        return frame[:cut].decode(), msgpack.unpackb(memoryview(frame)[cut + 1:], raw=False)

    def close(self) -> None:
        self.sub.close(0)
        self.context.term()


if __name__ == "__main__":
    if sys.argv[1] == "--python":
        serve_python(sys.argv[2])
    else:
        serve(sys.argv[1])
