"""Ask a bus daemon something over its control socket (ping, stats, replay, ...)."""
from __future__ import annotations

import os
from typing import Any

import zmq

from eventbus import wire
from eventbus.errors import BusUnavailableError, DaemonRefusedError


def request(sock_dir: str | os.PathLike, verb: bytes, args: Any = None, timeout: float = 5.0,
            context: zmq.Context | None = None) -> Any:
    """Send one control request and return the daemon's result.

    ``BusUnavailableError`` when no daemon answers within ``timeout`` seconds;
    ``DaemonRefusedError`` (with the daemon's ``reason``) when it refuses.
    """
    endpoints = wire.endpoints(sock_dir)
    if not endpoints.files[2].exists():
        raise BusUnavailableError(f"no daemon is running on sock_dir {endpoints.sock_dir} "
                                  f"(no {endpoints.files[2].name} socket there)", sock_dir=str(sock_dir))
    own_context = context is None
    context = context or zmq.Context()
    dealer = context.socket(zmq.DEALER)
    try:
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(endpoints.ctl)
        dealer.send_multipart(wire.request(verb, args))
        if not dealer.poll(int(timeout * 1000)):
            raise BusUnavailableError(f"the daemon on sock_dir {endpoints.sock_dir} did not answer "
                                      f"within {timeout:g} s", sock_dir=str(sock_dir))
        ok, result = wire.parse_reply(dealer.recv_multipart())
    finally:
        dealer.close(0)
        if own_context:
            context.term()
    if not ok:
        name = verb.decode(errors="replace")
        reason = str(result)
        # The daemon words a handler's refusal "<verb>: <reason>"; the reason is what a user needs.
        if reason.startswith(f"{name}: "):
            reason = reason[len(name) + 2:]
        raise DaemonRefusedError(name, reason, sock_dir=str(endpoints.sock_dir))
    return result


def ping(sock_dir: str | os.PathLike, timeout: float = 5.0) -> dict:
    """The daemon's identity: ``{"node", "pid", "epoch", "seq"}``."""
    return request(sock_dir, wire.VERB_PING, None, timeout)
