"""The two systems under test, started as a user would: the bus via ``eventbus master -c DIR``, the proxy.

Each lives in its own short /tmp directory (IPC paths are limited to 107
bytes) that is removed when it stops. ``first_round_trip`` times a cold
start: from spawning the daemon to a client hearing an event it fired.
"""
from __future__ import annotations

import contextlib
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator

import yaml

from bench.clients import Target
from bench.measure import venv_bin, wait_until
from bench.procs import Daemon, free_port, short_tmpdir


def _write_master_config(root: Path, **keys: object) -> Path:
    config_dir = root / "conf"
    config_dir.mkdir()
    path = config_dir / "master"
    # Its own free ports: the defaults (4505, 4506) may belong to another master on this machine.
    path.write_text(yaml.safe_dump({"root_dir": str(root), "sock_dir": "s", "log_level": "warning",
                                    "publish_port": free_port(), "ret_port": free_port(), **keys}))
    return path


def _bus_daemon(root: Path, **master_keys: object) -> tuple[Daemon, Target, Path]:
    config_path = _write_master_config(root, **master_keys)
    daemon = Daemon([venv_bin("eventbus"), "master", "-c", str(config_path.parent)], root / "master.log")
    return daemon, Target("bus", str(config_path)), root / "s"


def _reference_daemon(root: Path, python: bool = False) -> tuple[Daemon, Target]:
    daemon = Daemon([sys.executable, "-m", "bench.reference", *(["--python"] if python else []), str(root)],
                    root / "reference.log", cwd=Path(__file__).resolve().parent.parent)
    return daemon, Target("reference", str(root))


@contextlib.contextmanager
def running_bus(**master_keys: object) -> Iterator[tuple[Daemon, Target]]:
    """A master daemon on a fresh config (plus ``master_keys``), ready (it answered a ping), stopped and
    removed after."""
    from eventbus.bus import control
    from eventbus.errors import BusUnavailableError

    root = short_tmpdir("ebb")
    daemon, target, sock_dir = _bus_daemon(root, **master_keys)

    def answers() -> bool:
        daemon.check_alive()
        try:
            control.ping(sock_dir, timeout=0.5)
            return True
        except BusUnavailableError:
            return False
    try:
        daemon.start()
        wait_until(answers, 20, "the master daemon to answer a ping")
        yield daemon, target
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def running_reference(python: bool = False) -> Iterator[tuple[Daemon, Target]]:
    """The reference proxy (``python``: the Python floor), ready (both sockets bound), stopped and removed after."""
    root = short_tmpdir("ebr")
    daemon, target = _reference_daemon(root, python)

    def bound() -> bool:
        daemon.check_alive()
        return (root / "in.ipc").exists() and (root / "out.ipc").exists()
    try:
        daemon.start()
        wait_until(bound, 20, "the reference proxy to bind")
        yield daemon, target
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


def first_round_trip(kind: str, timeout: float = 20.0, **master_keys: object) -> float:
    """Seconds from spawning a fresh daemon to a client receiving an event it fired itself."""
    root = short_tmpdir("ebs")
    try:
        if kind == "bus":
            daemon, target, _ = _bus_daemon(root, **master_keys)
            return _timed(daemon, lambda: _bus_round_trip(target, daemon, timeout))
        daemon, target = _reference_daemon(root)
        return _timed(daemon, lambda: _reference_round_trip(target, daemon, timeout))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _timed(daemon: Daemon, round_trip: object) -> float:
    try:
        daemon.start()
        round_trip()  # type: ignore[operator]
        return time.perf_counter() - daemon.started_at
    finally:
        daemon.stop()


def _bus_round_trip(target: Target, daemon: Daemon, timeout: float) -> None:
    """What a script started with the daemon does: retry the handle until the bus is live, fire, hear."""
    from eventbus import config, event

    opts = config.client_config(target.where)
    deadline = time.monotonic() + timeout
    while True:
        handle = event.get_event("master", sock_dir=opts["sock_dir"], opts=opts)
        if handle.connected:
            break
        handle.destroy()
        daemon.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError("the master daemon never went live")
        time.sleep(0.002)
    with handle:
        if not handle.fire_event({"hello": "bus"}, "bench/startup"):
            raise RuntimeError("the master daemon did not take the first event")
        if handle.get_event(wait=timeout, tag="bench/startup") is None:
            raise RuntimeError("the first event never came back")


def _reference_round_trip(target: Target, daemon: Daemon, timeout: float) -> None:
    """The same with the bare proxy: wait for its socket, then fire until heard (a bare SUB cannot tell
    when it is live). Connecting before the socket exists would cost zmq's 100 ms reconnect interval.
    """
    from bench.reference import Publisher, Subscriber

    outlet = Path(target.where) / "out.ipc"
    deadline = time.monotonic() + timeout
    while not outlet.exists():
        daemon.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError("the reference proxy never bound its sockets")
        time.sleep(0.002)
    subscriber = Subscriber(target.where)
    publisher = Publisher(target.where)
    try:
        while True:
            publisher.send({"hello": "proxy"}, "bench/startup")
            if subscriber.recv(0.002) is not None:
                return
            daemon.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError("the reference proxy never answered")
    finally:
        publisher.close()
        subscriber.close()
