"""Ask a bus daemon something over its control socket (ping, stats, replay, ...)."""
from __future__ import annotations

import os
from typing import Any

import zmq

from eventbus.bus import wire
from eventbus.errors import BusUnavailableError, DaemonRefusedError


class Client:
    """A control connection kept open for repeated requests (a listener's replay pages)."""

    def __init__(self, context: zmq.Context, sock_dir: str | os.PathLike) -> None:
        self.context = context
        self.endpoints = wire.endpoints(sock_dir)
        self._dealer: zmq.Socket | None = None

    def request(self, verb: bytes, args: Any = None, timeout: float = 5.0) -> Any:
        """Send one control request and return the daemon's result.

        ``BusUnavailableError`` when no daemon answers within ``timeout`` seconds;
        ``DaemonRefusedError`` (with the daemon's ``reason``) when it refuses.
        """
        endpoints = self.endpoints
        if not endpoints.files[2].exists():
            self.close()
            raise BusUnavailableError(f"no daemon is running on sock_dir {endpoints.sock_dir} "
                                      f"(no {endpoints.files[2].name} socket there)",
                                      sock_dir=str(endpoints.sock_dir))
        if self._dealer is None:
            self._dealer = self.context.socket(zmq.DEALER)
            self._dealer.setsockopt(zmq.LINGER, 0)
            self._dealer.connect(endpoints.ctl)
        dealer = self._dealer
        dealer.send_multipart(wire.request(verb, args))
        if not dealer.poll(int(timeout * 1000)):
            # A late answer must not be taken for the next request's: start a new connection.
            self.close()
            raise BusUnavailableError(f"the daemon on sock_dir {endpoints.sock_dir} did not answer "
                                      f"within {timeout:g} s", sock_dir=str(endpoints.sock_dir))
        ok, result = wire.parse_reply(dealer.recv_multipart())
        if not ok:
            name = verb.decode(errors="replace")
            reason = str(result)
            # The daemon words a handler's refusal "<verb>: <reason>"; the reason is what a user needs.
            if reason.startswith(f"{name}: "):
                reason = reason[len(name) + 2:]
            raise DaemonRefusedError(name, reason, sock_dir=str(endpoints.sock_dir))
        return result

    def close(self) -> None:
        if self._dealer is not None:
            self._dealer.close(0)
            self._dealer = None


def request(sock_dir: str | os.PathLike, verb: bytes, args: Any = None, timeout: float = 5.0,
            context: zmq.Context | None = None) -> Any:
    """Send one control request on a connection of its own and return the daemon's result.

    ``BusUnavailableError`` when no daemon answers within ``timeout`` seconds;
    ``DaemonRefusedError`` (with the daemon's ``reason``) when it refuses.
    """
    own_context = context is None
    client = Client(context or zmq.Context(), sock_dir)
    try:
        return client.request(verb, args, timeout)
    finally:
        client.close()
        if own_context:
            client.context.term()


def ping(sock_dir: str | os.PathLike, timeout: float = 5.0) -> dict:
    """The daemon's identity: ``{"node", "pid", "epoch", "seq"}``."""
    return request(sock_dir, wire.VERB_PING, None, timeout)
