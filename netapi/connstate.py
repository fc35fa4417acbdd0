"""What the gate holds for each connection it reads, and its never-blocking socket helpers.

A connection is ``Held`` while its request is not all in (or while, kept
alive, it waits for the next one), a ``Handshake`` while its TLS handshake
runs, ``Draining`` for a moment after an error answer; ``error_response``
is the complete answer the gate sends itself (``eventbus.netapi.connloop``).
"""
from __future__ import annotations

import json
import os
import socket
import ssl
from typing import Any

from eventbus.netapi import limits

READ_SIZE = 65536
DRAIN_BYTES = 4 * 1024 * 1024

REASON_PHRASES = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
                  431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def error_response(status: int, reason: str, retry_after: int | None = None) -> bytes:
    """A complete ``Connection: close`` answer with the API's JSON error body."""
    body = json.dumps({"status": status, "return": reason}).encode()
    extra = f"Retry-After: {retry_after}\r\n" if retry_after else ""
    return (f"HTTP/1.1 {status} {REASON_PHRASES.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n").encode() + body


class Held:
    """A connection whose request is not all here yet (or which waits, kept alive, for its next one)."""

    __slots__ = ("gate", "sock", "conn", "address", "port", "makefile", "ssl_env", "deadline", "idle", "need",
                 "buffer", "continued", "chunks")

    def __init__(self, gate: Any, sock: socket.socket, conn: Any, address: str, port: int, makefile: Any,
                 ssl_env: dict, deadline: float, idle: bool) -> None:
        # A new connection gets its cheroot ``HTTPConnection`` (``conn``) only once its request is whole:
        # one that never finishes costs a socket and this object, nothing more.
        self.gate = gate
        self.sock = sock
        self.conn = conn
        self.address = address
        self.port = port
        self.makefile = makefile
        self.ssl_env = ssl_env
        self.deadline = deadline
        self.idle = idle
        self.need = 0
        self.buffer = bytearray()  # the request so far; given to cheroot's reader when it is whole
        self.continued = False
        self.chunks: limits.ChunkedBody | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()  # counted by ``CountedConnection``
        else:
            close_quietly(self.sock)
            self.gate.closed(None)


class Handshake:
    """A TLS connection whose handshake is under way."""

    __slots__ = ("sock", "address", "port", "deadline")

    def __init__(self, sock: ssl.SSLSocket, address: str, port: int, deadline: float) -> None:
        self.sock = sock
        self.address = address
        self.port = port
        self.deadline = deadline

    def close(self) -> None:
        close_quietly(self.sock)


class Draining:
    """An answered connection whose unwanted upload is read and dropped for a moment before it closes."""

    __slots__ = ("held", "deadline", "left")

    def __init__(self, held: Held, deadline: float) -> None:
        self.held = held
        self.deadline = deadline
        self.left = DRAIN_BYTES

    def close(self) -> None:
        self.held.close()


def close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


def send_now(sock: socket.socket, data: bytes) -> None:
    """Send a short answer if the socket takes it now; never blocks (the selector thread must not)."""
    try:
        if isinstance(sock, ssl.SSLSocket):
            blocking = sock.gettimeout()
            sock.setblocking(False)
            try:
                sock.send(data)
            finally:
                sock.settimeout(blocking)
        else:
            os.write(sock.fileno(), data)
    except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
        pass


def read_some(sock: socket.socket) -> bytes | None:
    """What the socket has now (b"" at EOF or on an error), ``None`` if nothing yet; never blocks."""
    try:
        if not isinstance(sock, ssl.SSLSocket):
            return os.read(sock.fileno(), READ_SIZE)
        data = sock.recv(READ_SIZE)
        while data and sock.pending():
            data += sock.recv(sock.pending())
        return data
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
        return None
    except (OSError, ssl.SSLError):  # SSLZeroReturnError (a clean TLS close) among them
        return b""
