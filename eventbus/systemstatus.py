"""The running system's figures, asked of each daemon when someone looks (``/metrics``, ``eventbus status``).

Nothing here is counted per event: the master answers ``stats`` and ``link``
from counters it keeps anyway (its sequence numbers, its publisher socket's
monitor, replay answers), the forwarder answers ``stats`` with its brokers,
and the reactor and the REST API write status files. A daemon that does not
answer is a ``down`` entry with the reason, never an exception for the caller.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from eventbus.bus import control, wire
from eventbus.config import ApiConfig, MasterConfig
from eventbus.errors import EventBusError

TIMEOUT = 2.0


@dataclass(frozen=True)
class Broker:
    """One forwarder broker: name, type, up/down and its three counts."""

    name: str
    type: str
    state: str
    delivered: int
    pending: int
    dropped: int


@dataclass
class Figures:
    """A snapshot: ``master``/``forward``/``reactor`` are ``None`` when that daemon did not answer (see ``down``)."""

    master: dict[str, Any] | None = None
    link: dict[str, Any] | None = None
    brokers: list[Broker] | None = None
    reactor: dict[str, Any] | None = None
    cluster: dict[str, Any] | None = None
    down: dict[str, str] = field(default_factory=dict)

    @property
    def journal_bytes(self) -> int:
        journal = (self.master or {}).get("journal")
        return int(journal["bytes"]) if journal else 0


def forward_sock_dir(master: MasterConfig) -> Path | None:
    """Where a forwarder of the config dir of ``master`` keeps its control socket (its ``forward`` file beside ``master``)."""
    source = Path(str(master.source))
    path = source.parent / "forward"
    if not path.is_file():
        return None
    from eventbus.forwarding import config as forwardconf

    return forwardconf.load(path).sock_dir


def reactor_status_path(master: MasterConfig) -> Path:
    """The status file the master's reactor writes, in the directory of its cursor and ledger (``eventbus.daemon.reactor.service``)."""
    return master.cachedir / "reactor" / "status.json"


def cluster_status_path(master: MasterConfig) -> Path:
    """The status file the master's cluster process writes (``eventbus.daemon.cluster``): its state
    (``up``/``down`` and ``error``), ``exported``, ``imported``, ``duplicates``, ``export_lag``."""
    return master.cachedir / "cluster" / "status.json"


def read_cluster(master: MasterConfig) -> dict[str, Any] | None:
    """The cluster process's status if it is running, else ``None``."""
    return read_status_file(cluster_status_path(master))


def is_running(status: dict[str, Any] | None) -> bool:
    """Whether ``status`` says its daemon runs and that pid is alive."""
    pid = status.get("pid") if status and status.get("running") else None
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    return True


def read_status_file(path: Path, *, stale: bool = False) -> dict[str, Any] | None:
    """A daemon's status file if the daemon is running (the file says so and its pid is alive), else ``None``;
    with ``stale``, what it last wrote, running or not."""
    try:
        status = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return status if isinstance(status, dict) and (stale or is_running(status)) else None


def read_reactor(master: MasterConfig) -> dict[str, Any] | None:
    """The reactor's status if it is running, else ``None``."""
    return read_status_file(reactor_status_path(master))


def api_status_path(api: ApiConfig) -> Path:
    """The status file a running REST API keeps with its own figures (``eventbus.netapi.apistatus``), in a 0700 dir."""
    return api.root_dir / "var/run/eventbus/api/status.json"


def read_api(api: ApiConfig) -> dict[str, Any] | None:
    """The REST API's own figures (streams, requests, CloudEvents counts) if it is running, else ``None``.

    A status file the CLI can read with no token: ``/metrics`` may need an admin's login.
    """
    return read_status_file(api_status_path(api))


def gather(master: MasterConfig, forward_dir: Path | None = None, *,
           context: zmq.Context | None = None, timeout: float = TIMEOUT) -> Figures:
    """Ask the master, the forwarder (control socket in ``forward_dir``, if any) and the reactor."""
    figures = Figures()
    try:
        figures.master = control.request(master.sock_dir, wire.VERB_STATS, None, timeout, context)
        figures.link = control.request(master.sock_dir, wire.VERB_LINK, None, timeout, context)
    except EventBusError as exc:
        figures.master = figures.link = None
        figures.down["master"] = str(exc)
    if forward_dir is not None:
        try:
            stats = control.request(forward_dir, wire.VERB_STATS, None, timeout, context)
            figures.brokers = [Broker(str(b["name"]), str(b["type"]), str(b["state"]), int(b["delivered"]),
                                      int(b["pending"]), int(b["dropped"])) for b in stats.get("brokers", [])]
        except EventBusError as exc:
            figures.down["forward"] = str(exc)
    if master.reactor:
        figures.reactor = read_reactor(master)
        if figures.reactor is None:
            figures.down["reactor"] = "the reactor is not running"
    if master.cluster is not None:
        figures.cluster = read_cluster(master)
        if figures.cluster is None:
            figures.down["cluster"] = "the master's cluster process is not running"
    return figures
