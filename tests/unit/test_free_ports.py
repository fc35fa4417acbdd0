"""Ports for test daemons and local clusters: below the ephemeral range, a band per xdist worker, never twice."""
from __future__ import annotations

import socket

from eventbus.cli import freeports


def ephemeral_low() -> int:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
        return int(ports.read().split()[0])


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range():
    ports = freeports.free_ports(50)
    assert len(set(ports)) == 50
    assert all(freeports.PICK_FLOOR <= port < ephemeral_low() for port in ports)
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_something_listens_on_is_never_handed_out(monkeypatch):
    listening = socket.socket()
    listening.bind(("127.0.0.1", freeports.PICK_FLOOR + 7))
    listening.listen()
    try:
        monkeypatch.setattr(freeports, "_pick_band", lambda: (freeports.PICK_FLOOR, freeports.PICK_FLOOR + 12))
        freeports._HANDED.clear()
        assert freeports.PICK_FLOOR + 7 not in freeports.free_ports(3)
    finally:
        listening.close()
        freeports._HANDED.clear()


def test_each_xdist_worker_picks_from_a_band_of_its_own(monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    bands = []
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        bands.append(freeports._pick_band())
    (low0, high0), (low1, high1) = bands
    assert low0 == freeports.PICK_FLOOR and high0 <= low1 and high1 <= ephemeral_low()
    assert high0 - low0 >= 1000 and high1 - low1 >= 1000


def test_runs_of_consecutive_ports_are_bindable_disjoint_and_below_the_ephemeral_range():
    firsts = freeports.free_runs(3, 3)
    ports = [first + i for first in firsts for i in range(3)]
    assert len(set(ports)) == 9
    assert all(freeports.PICK_FLOOR <= port < ephemeral_low() for port in ports)
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
