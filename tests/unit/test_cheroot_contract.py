"""The cheroot internals the API's gate (``eventbus.netapi.connloop``) relies on, checked on the cheroot installed.

cheroot has no public hook for two things the gate does: putting its own
connection manager in the server (``HTTPServer._connections``, set by
``prepare``) and handing a worker a request it has already read (the
reader's ``_read_buf`` and ``_read_pos``). setup.cfg pins cheroot to the
range these were checked on, so an upgrade that drops one fails here, by
name, and not in production.
"""
from __future__ import annotations

import configparser
import importlib.metadata
import inspect
import re
import socket
from pathlib import Path

from cheroot import connections, makefile, server, wsgi

SETUP_CFG = Path(__file__).resolve().parents[2] / "setup.cfg"
# What cheroot's server asks of its connection manager: all that ``eventbus.netapi.connloop.Gate`` offers in its place.
MANAGER_CALLS = {"run", "stop", "close", "put", "can_add_keepalive_connection"}


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_setup_cfg_pins_cheroot_to_a_range_the_installed_one_is_in():
    parser = configparser.ConfigParser()
    parser.read(SETUP_CFG)
    pins = [line.replace(" ", "") for line in parser["options"]["install_requires"].splitlines()
            if line.strip().lower().startswith("cheroot")]
    assert pins, "setup.cfg does not pin cheroot: eventbus.netapi.connloop relies on internals of the versions tested"
    pin = re.fullmatch(r"cheroot>=([\d.]+),<([\d.]+)", pins[0])
    assert pin, f"expected 'cheroot>=X,<Y' in setup.cfg, found {pins[0]!r}"
    installed = importlib.metadata.version("cheroot")
    assert version(pin[1]) <= version(installed) < version(pin[2]), \
        f"cheroot {installed} is outside the range setup.cfg pins ({pins[0]})"


def test_a_prepared_server_keeps_its_connection_manager_in_connections_and_asks_it_only_what_the_gate_offers():
    httpd = wsgi.Server(("127.0.0.1", 0), lambda environ, start_response: [])
    httpd.prepare()
    try:
        assert isinstance(getattr(httpd, "_connections", None), connections.ConnectionManager), \
            "cheroot's HTTPServer.prepare() no longer sets _connections: eventbus.netapi.connloop.GatedServer puts its gate there"
    finally:
        httpd.stop()
    asked = set(re.findall(r"self\._connections\.(\w+)", inspect.getsource(server.HTTPServer)))
    assert asked <= MANAGER_CALLS, \
        f"cheroot's server asks its connection manager for {sorted(asked - MANAGER_CALLS)}: eventbus.netapi.connloop.Gate has none"


def test_bytes_put_in_the_readers_read_buf_are_what_it_reads_next():
    ours, theirs = socket.socketpair()
    try:
        reader = makefile.MakeFile(theirs, "rb")
        for name in ("_read_buf", "_read_pos"):
            assert hasattr(reader, name), f"cheroot's request reader has no {name}: eventbus.netapi.connloop hands a worker " \
                                          f"the request it read through it"
        reader._read_buf, reader._read_pos = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nnext", 0
        assert reader.has_data() and reader.readline() == b"GET / HTTP/1.1\r\n"
        assert reader.readline() == b"Host: x\r\n" and reader.readline() == b"\r\n"
        assert reader.read1(1 << 30) == b"next" and not reader.has_data()
    finally:
        ours.close()
        theirs.close()
