"""Outbound HTTP POST over kept-alive connections: the reactor's ``post``, webhooks, CloudEvents reports and ``send``.

The standard library's ``http.client``: a ``Poster`` keeps a connection per
(scheme, host, port) and serves one thread at a time (``post`` gives each
thread its own). A kept-alive connection the server closed while idle gets
one fresh try at once; no answer otherwise (no connection, a lost one, a
timeout) raises ``HttpConnectionError``. Redirects are not followed.
"""
from __future__ import annotations

import http.client
import random
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urlsplit

from eventbus.errors import EventBusError, HttpConnectionError, InvalidArgumentError

KEPT = 16  # connections a Poster keeps open (a reactor rule may post to many hosts), the least recently used going

Where = tuple[str, str, int]


@dataclass(frozen=True)
class Answer:
    """What the server at ``url`` answered."""

    url: str
    status: int
    reason: str
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def problem(self) -> str | None:
        """``None`` for a 2xx, else the answer in a few words."""
        return None if self.ok else f"{self.url} answered {self.status} {self.reason}"


class Poster:
    """POSTs over connections kept alive per (scheme, host, port), for one thread at a time."""

    def __init__(self) -> None:
        self._connections: dict[Where, http.client.HTTPConnection] = {}  # least recently used first

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Answer:
        """POST ``body`` to ``url`` within ``timeout`` seconds: the answer, whatever its status."""
        try:
            parts = urlsplit(url)
            where = (parts.scheme, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
        except ValueError as exc:
            raise InvalidArgumentError(f"cannot POST to {url!r}: {exc}", argument="url", value=url) from None
        if where[0] not in ("http", "https") or not where[1]:
            raise InvalidArgumentError(f"cannot POST to {url!r}: expected an http:// or https:// URL",
                                       argument="url", value=url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        while True:
            connection = self._connection(where, timeout)
            reused = connection.sock is not None
            try:
                connection.request("POST", target, body, dict(headers))
                response = connection.getresponse()
                return Answer(url, response.status, response.reason, response.read())
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self._connections.pop(where).close()
                if isinstance(exc, ValueError):  # a header http.client refuses (a line break, not Latin-1)
                    raise InvalidArgumentError(f"cannot POST to {url}: {exc}", argument="headers") from None
                if not reused or isinstance(exc, TimeoutError):  # else: closed while idle, one fresh try
                    why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                    raise HttpConnectionError(f"cannot POST to {url}: {why}", url=url) from None

    def deliver(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float,
                retries: int) -> str | None:
        """POST until a 2xx, up to ``retries`` times more with capped exponential backoff and jitter;
        ``None``, or why the last try failed."""
        delay, problem = 0.1, None
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 5.0)
            try:
                problem = self.post(url, body, headers, timeout).problem
            except EventBusError as exc:
                problem = str(exc)
            if problem is None:
                break
        return problem

    def _connection(self, where: Where, timeout: float) -> http.client.HTTPConnection:
        connection = self._connections.pop(where, None)  # put back last: the most recently used
        if connection is None:
            scheme, host, port = where
            connection = http.client.HTTPSConnection(host, port, context=ssl.create_default_context()) \
                if scheme == "https" else http.client.HTTPConnection(host, port)
            if len(self._connections) >= KEPT:
                self._connections.pop(next(iter(self._connections))).close()
        elif connection.sock is not None:
            connection.sock.settimeout(timeout)
        connection.timeout = timeout
        self._connections[where] = connection
        return connection

    def close(self) -> None:
        while self._connections:
            self._connections.popitem()[1].close()


_local = threading.local()


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Answer:
    """``Poster.post`` on the calling thread's own ``Poster``, whose connections stay open for its next POST."""
    poster = getattr(_local, "poster", None)
    if poster is None:
        poster = _local.poster = Poster()
    return poster.post(url, body, headers, timeout)
