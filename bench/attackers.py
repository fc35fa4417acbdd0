"""The attackers of ``bench.attack``: a timed login, slowloris half-open connections, a wrong-password flood.

``hold_half_open`` and ``flood_logins`` run in their own processes (spawned)
and hand their tallies back through a queue; ``login`` times one login from
a chosen source address (127.0.0.x).
"""
from __future__ import annotations

import http.client
import json
import selectors
import socket
import time
from typing import Any

from bench.api import PASSWORD
from bench.procs import raise_fd_limit

HALF_HEAD = b"GET /events HTTP/1.1\r\nHost: bench\r\n"
LOGIN_TIMEOUT = 10.0
FLOOD_ADDRESS = "127.0.0.3"


def login(port: int, source: str = "127.0.0.1", password: str = PASSWORD,
          timeout: float = LOGIN_TIMEOUT) -> tuple[int, float, str]:
    """(status or 0 on timeout/error, seconds, token) of one /login from ``source``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    body = json.dumps({"username": "bench", "password": password, "eauth": "file"})
    start = time.perf_counter()
    try:
        conn.request("POST", "/login", body=body, headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        data = answer.read()
        token = json.loads(data)["return"][0]["token"] if answer.status == 200 else ""
        return answer.status, time.perf_counter() - start, token
    except OSError:
        return 0, time.perf_counter() - start, ""
    finally:
        conn.close()


def hold_half_open(port: int, count: int, attackers: int, ready: Any, stop: Any, results: Any,
                   deadline_s: float) -> None:
    """Keep ``count`` connections sending half a head from 127.0.0.10..; reopen each one the server ends."""
    raise_fd_limit()
    selector = selectors.DefaultSelector()
    sources = [f"127.0.0.{10 + n}" for n in range(attackers)]
    opened = refused = 0

    def open_one(index: int) -> None:
        nonlocal opened, refused
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5,
                                            source_address=(sources[index % attackers], 0))
            sock.sendall(HALF_HEAD)
        except OSError:
            refused += 1
            return
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, index)
        opened += 1

    deadline = time.monotonic() + deadline_s
    for index in range(count):
        if time.monotonic() > deadline:
            break
        open_one(index)
    ready.set()
    answered = 0
    while not stop.is_set() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.2):
            selector.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]
            answered += 1
            if answered < 100 * count:
                open_one(key.data)
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    results.put({"opened": opened, "refused": refused, "answered": answered})


def flood_logins(port: int, count: int, ready: Any, results: Any, deadline_s: float) -> None:
    """Send ``count`` wrong-password logins at once, one connection each, from FLOOD_ADDRESS; tally the answers."""
    raise_fd_limit()
    body = json.dumps({"username": "bench", "password": "wrong-guess", "eauth": "file"}).encode()
    request = (b"POST /login HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nConnection: close\r\n"
               b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
    selector = selectors.DefaultSelector()
    statuses: dict[str, int] = {}
    buffers: dict[int, bytes] = {}
    start = time.monotonic()
    for index in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(FLOOD_ADDRESS, 0))
            sock.sendall(request)
        except OSError:
            statuses["connect failed"] = statuses.get("connect failed", 0) + 1
            continue
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, index)
        buffers[index] = b""
    ready.set()
    deadline = start + deadline_s
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            try:
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                buffers[key.data] += data
                continue
            status = buffers[key.data][9:12].decode() or "closed"
            statuses[status] = statuses.get(status, 0) + 1
            selector.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]
    unanswered = len(selector.get_map())
    if unanswered:
        statuses["no answer"] = unanswered
    results.put({"statuses": statuses, "seconds": time.monotonic() - start})

