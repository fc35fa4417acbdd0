"""What a hostile client may not do, decided without sockets: request heads, failed logins, log floods.

``examine`` says whether a connection's bytes so far are a complete request, still coming, or refused
(431, 414, 413, 400); ``LoginGuard`` counts failed logins per address over a sliding minute (a check in
progress counts as a failure; at most ``concurrent`` checks per address); ``OncePerInterval`` lets one log
line per (limit, address) through per minute. Adapters: ``eventbus.netapi.connloop`` and the ``/login``
route; the rules are in docs/api.md, Hostile clients.
"""
from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

# A request head (request line and headers) over this is answered 431 (docs/api.md, Hostile clients).
MAX_HEAD_BYTES = 16 * 1024
MAX_HEADER_LINES = 100
MAX_URL_BYTES = 8 * 1024
LOGIN_WINDOW = 60.0
HEAD_END = b"\r\n\r\n"
HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
HTTP_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")


@dataclass(frozen=True)
class Verdict:
    """What to do with a connection's bytes so far.

    ``status`` 0: still coming (``need`` bytes in all when known, else 0);
    ``status`` 200: complete, hand it on (``need`` is how many bytes the
    request spans); otherwise the error to answer.
    """

    status: int
    need: int = 0
    reason: str = ""
    # The client sent ``Expect: 100-continue`` and waits for ``100 Continue`` before its body.
    expect_continue: bool = False
    # A chunked body's scanner, to be fed the same bytes (and more) until it says the body has ended.
    chunks: "ChunkedBody | None" = None


INCOMPLETE = Verdict(0)


def examine(data: bytes | bytearray, max_body: int, *, max_head: int = MAX_HEAD_BYTES,
            max_lines: int = MAX_HEADER_LINES, max_url: int = MAX_URL_BYTES) -> Verdict:
    """The verdict on ``data``, the bytes received since the request began."""
    start = 0
    while data.startswith(b"\r\n", start):  # RFC 9112 2.2: blank lines before a request line are ignored
        start += 2
    end = data.find(HEAD_END, start)
    if end < 0:
        if len(data) - start > max_head:
            return Verdict(431, reason=f"the request head is over {max_head} bytes")
        line_end = data.find(b"\r\n", start)
        if line_end < 0 and len(data) - start > max_url + 32:
            return Verdict(414, reason=f"the request URL is over {max_url} bytes")
        if data.count(b"\r\n", start) > max_lines:
            return Verdict(431, reason=f"the request has over {max_lines} header lines")
        return INCOMPLETE
    head_size = end + 4 - start
    if head_size > max_head:
        return Verdict(431, reason=f"the request head is {head_size} bytes, over the limit of {max_head}")
    head = bytes(data[start:end])
    lines = head.split(b"\r\n")
    request_line = lines[0].split(b" ")
    if len(request_line) == 3 and len(request_line[1]) > max_url:
        return Verdict(414, reason=f"the request URL is {len(request_line[1])} bytes, over the limit of {max_url}")
    # cheroot reads a version as two numbers of any spelling ("HTTP/1.-1"); CherryPy then fails reading it.
    parts = lines[0].strip().split(b" ", 2)
    if len(parts) == 3 and HTTP_VERSION.fullmatch(parts[2]) is None:
        return Verdict(400, reason="the request line's HTTP version is malformed (expected HTTP/<digit>.<digit>)")
    if len(lines) - 1 > max_lines:
        return Verdict(431, reason=f"the request has {len(lines) - 1} header lines, over the limit of {max_lines}")
    length: int | None = None
    chunked = False
    expect_continue = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue  # cheroot answers malformed lines itself
        name = name.strip().lower()
        if name == b"content-length":
            value = value.strip()
            if not value.isdigit() or (length is not None and int(value) != length):
                return Verdict(400, reason="the Content-Length header is not one number")
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = chunked or b"chunked" in value.lower()
        elif name == b"expect":
            expect_continue = value.strip().lower() == b"100-continue"
    if chunked:
        scanner = ChunkedBody(end + 4, max_body, expect_continue)
        return scanner.scan(data)
    if length is not None and length > max_body:
        return Verdict(413, reason=f"the request body is {length} bytes, over the limit of {max_body} bytes")
    need = end + 4 + (length or 0)
    return Verdict(200 if len(data) >= need else 0, need=need, expect_continue=expect_continue)


class ChunkedBody:
    """Finds where a chunked body ends, a little more at each call, and sums its size against the limit.

    It keeps its place, so feeding it a body that arrives a byte at a time
    costs time in proportion to the body, not to its square.
    """

    def __init__(self, start: int, max_body: int, expect_continue: bool = False) -> None:
        self.pos = start
        self.total = 0
        self.max_body = max_body
        self.expect_continue = expect_continue
        self.in_trailers = False
        self.trailer_start = 0

    def scan(self, data: bytes | bytearray) -> Verdict:
        """The verdict on ``data`` (the request's bytes from its start, as before plus any new ones)."""
        waiting = Verdict(0, chunks=self, expect_continue=self.expect_continue)
        while True:
            line_end = data.find(b"\r\n", self.pos)
            if self.in_trailers:
                if (line_end if line_end >= 0 else len(data)) - self.trailer_start > MAX_HEAD_BYTES:
                    return Verdict(431, reason=f"the chunked body's trailers are over {MAX_HEAD_BYTES} bytes")
                if line_end < 0:
                    return waiting
                if line_end == self.pos:
                    return Verdict(200, need=line_end + 2)
                self.pos = line_end + 2
                continue
            if line_end < 0:
                if len(data) - self.pos > 1024:
                    return Verdict(400, reason="a chunk size line is over 1024 bytes")
                return waiting
            size_text = bytes(data[self.pos:line_end]).split(b";", 1)[0].strip()
            if not size_text or len(size_text) > 16 or not all(c in HEX_DIGITS for c in size_text):
                return Verdict(400, reason="the chunked body has a malformed chunk size")
            size = int(size_text, 16)
            if self.total + size > self.max_body:
                return Verdict(413, reason=f"the request body is over the limit of {self.max_body} bytes")
            if size == 0:
                self.in_trailers = True
                self.pos = self.trailer_start = line_end + 2
                continue
            if len(data) < line_end + 4 + size:
                return waiting  # the place stays at this size line until the chunk is all here
            if data[line_end + 2 + size:line_end + 4 + size] != b"\r\n":
                return Verdict(400, reason="a chunk of the chunked body does not end with CRLF")
            self.total += size
            self.pos = line_end + 4 + size


class LoginGuard:
    """Failed logins per client address in a sliding minute; thread-safe, clock injectable for tests."""

    def __init__(self, rate: int, window: float = LOGIN_WINDOW, concurrent: int = 2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.concurrent = concurrent
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}
        self._checking: dict[str, int] = {}

    def begin(self, address: str) -> float:
        """Reserve a password check for ``address``: 0.0 if it may go on, else seconds until it may retry."""
        with self._lock:
            now = self.clock()
            failures = self._recent(address, now)
            checking = self._checking.get(address, 0)
            if len(failures) + checking >= self.rate or checking >= self.concurrent:
                if failures and len(failures) >= self.rate:
                    return max(1.0, failures[len(failures) - self.rate] + self.window - now)
                return 1.0  # the checks in progress may yet succeed
            self._checking[address] = checking + 1
            return 0.0

    def end(self, address: str, success: bool) -> None:
        """The check ``begin`` allowed is over; a failure is remembered for a minute."""
        with self._lock:
            left = self._checking.get(address, 1) - 1
            if left > 0:
                self._checking[address] = left
            else:
                self._checking.pop(address, None)
            if not success:
                self._failures.setdefault(address, deque()).append(self.clock())
            self._prune()

    def _recent(self, address: str, now: float) -> deque[float]:
        failures = self._failures.get(address)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def _prune(self) -> None:
        """Forget addresses with no recent failure, so the table stays as small as the attack is recent."""
        if len(self._failures) < 1024:
            return
        now = self.clock()
        for address in [a for a, f in self._failures.items() if not f or f[-1] <= now - self.window]:
            del self._failures[address]


class OncePerInterval:
    """Whether to log now: once per key per ``interval`` seconds, with the count of what was held back."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000) -> None:
        self.interval = interval
        self.clock = clock
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._last: dict[object, tuple[float, int]] = {}

    def check(self, key: object) -> int | None:
        """``None`` to stay quiet, else how many were held back since the last line for ``key``."""
        with self._lock:
            now = self.clock()
            last = self._last.get(key)
            if last is not None and now - last[0] < self.interval:
                self._last[key] = (last[0], last[1] + 1)
                return None
            if len(self._last) >= self.max_keys:
                self._last = {k: v for k, v in self._last.items() if now - v[0] < self.interval}
                if len(self._last) >= self.max_keys:
                    return None  # under a flood of addresses, the lines already written say enough
            self._last[key] = (now, 0)
            return 0 if last is None else last[1]
