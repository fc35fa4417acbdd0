"""Free TCP ports on loopback for local daemons and clusters that nothing else takes between pick and use.

Ports are picked below the kernel's ephemeral range (``net.ipv4.ip_local_port_range``), where no outgoing
connection and no bind to port 0 can take one, and, in a pytest-xdist worker, from a band of that worker's
own (``make cluster`` fixes its ports; tests and benchmarks pick).
"""
from __future__ import annotations

import os
import random
import socket
from pathlib import Path

HOST = "127.0.0.1"
PICK_FLOOR = 10000
EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
_HANDED: set[int] = set()  # ports this process has handed out (or found taken) since the last clear


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on now, from ``_pick_band``; one
    process hands a port out once while it has others left. Where the ephemeral range leaves no room below
    it, the kernel picks."""
    low, high = _pick_band()
    if high - low >= 4 * count:
        return free_runs(count, 1)
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sockets.append(sock)
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_runs(count: int, length: int) -> list[int]:
    """The first ports of ``count`` runs of ``length`` consecutive TCP ports on 127.0.0.1 that nothing
    listens on now and no run shares, from ``_pick_band`` (a local cluster whose nodes take the next ports)."""
    low, high = _pick_band()
    if high - low < 4 * count * length:
        raise OSError(f"no room below the ephemeral range for {count} runs of {length} ports")
    firsts: list[int] = []
    pick = random.SystemRandom().randrange
    while len(firsts) < count:
        if len(_HANDED) > (high - low) // 2:
            _HANDED.clear()
        first = pick(low, high - length + 1)
        run = range(first, first + length)
        if any(port in _HANDED for port in run):
            continue
        _HANDED.update(run)  # taken ones too: not tried again until the next clear
        if all(_bindable(port) for port in run):
            firsts.append(first)
    return firsts


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _pick_band() -> tuple[int, int]:
    """The ports ``free_ports`` picks from: below the ephemeral range, this xdist worker's share of it."""
    try:
        ephemeral_low = int(Path(EPHEMERAL_RANGE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    low, high = PICK_FLOOR, max(PICK_FLOOR, ephemeral_low)
    worker, workers = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and workers.isdigit() and int(workers) > 0:
        share = (high - low) // int(workers)
        low += int(worker[2:]) % int(workers) * share
        high = low + share
    return low, high
