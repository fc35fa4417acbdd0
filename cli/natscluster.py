"""A local NATS JetStream cluster on loopback: ``nats-server`` nodes with their own ports, config and store dir.

What the fleet-wide bus (SPEC section 12, the master's ``cluster`` key) runs on, made real on one
machine for the tests, the benchmarks and ``make cluster``. ``NatsCluster(directory)`` writes one
config per node under ``directory/<node>/`` (``n1``, ``n2``, ...: client, route and monitor ports on
127.0.0.1, a ``cluster`` block routing to every other node, ``jetstream { store_dir }``), starts each
``nats-server -c`` with its output appended to ``directory/<node>/nats.log``, and answers readiness and
stream leadership from each node's monitor port (``/jsz``), polled against a deadline. A node killed
and started again keeps its config, ports and store dir, so it rejoins with what it had stored.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Sequence

from eventbus.cli.freeports import free_ports
from eventbus.errors import EventBusError

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
HOST = "127.0.0.1"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class NodePorts(NamedTuple):
    """One node's TCP ports on 127.0.0.1: clients, cluster routes, HTTP monitoring."""

    client: int
    route: int
    monitor: int


def _quoted(text: str) -> str:
    """A NATS config string literal (its parser reads JSON's double-quoted form)."""
    return json.dumps(text)


class NatsCluster:
    """``nodes`` nats-server processes forming the JetStream cluster ``name`` under ``directory``.

    ``ports`` fixes each node's ``NodePorts`` (``make cluster`` does, so configs can name them);
    by default free ones are picked. ``user`` and ``password`` put an ``authorization`` block in
    every node's config (clients only: routes are not affected), or ``token`` a token one;
    ``advertise=False`` keeps clients on the URLs they were given (a test proxy in front of a node stays in
    the path). ``extra`` lines go at the end of every node's config (an operator-mode block, say). As a
    context manager it starts the nodes not running, waits until JetStream is ready and kills every node on exit.
    """

    def __init__(self, directory: str | Path, nodes: int = 3, name: str = "eventbus", *,
                 user: str | None = None, password: str | None = None, token: str | None = None,
                 ports: Sequence[NodePorts] | None = None, advertise: bool = True,
                 extra: Sequence[str] = ()) -> None:
        if nodes < 1:
            raise EventBusError(f"a NATS cluster needs at least one node, not {nodes}")
        if (user is None) != (password is None):
            raise EventBusError("a NATS cluster's authorization needs both user and password")
        if ports is None:
            picked = free_ports(3 * nodes)
            ports = [NodePorts(*picked[3 * i:3 * i + 3]) for i in range(nodes)]
        if len(ports) != nodes:
            raise EventBusError(f"{len(ports)} port sets given for {nodes} NATS nodes")
        self.directory = Path(directory).resolve()
        self.name = name
        self.user = user
        self.password = password
        self.token = token
        self.advertise = advertise  # False: clients learn no other node's URL, they stay on the ones they name
        self.extra = list(extra)
        self.ports: list[NodePorts] = list(ports)
        self.names: list[str] = [f"n{i + 1}" for i in range(nodes)]
        self._procs: list[subprocess.Popen | None] = [None] * nodes
        for index in range(nodes):
            self._write_config(index)

    # -- where things are

    @property
    def urls(self) -> list[str]:
        """Every node's client URL, ``nats://127.0.0.1:<port>``, in node order."""
        return [f"nats://{HOST}:{p.client}" for p in self.ports]

    @property
    def monitor_urls(self) -> list[str]:
        """Every node's HTTP monitoring base URL (``/jsz``, ``/healthz``, ``/varz``...)."""
        return [f"http://{HOST}:{p.monitor}" for p in self.ports]

    def node_dir(self, index: int) -> Path:
        return self.directory / self.names[index]

    def config_path(self, index: int) -> Path:
        return self.node_dir(index) / "nats.conf"

    def log_path(self, index: int) -> Path:
        return self.node_dir(index) / "nats.log"

    def store_dir(self, index: int) -> Path:
        """Node ``index``'s JetStream files."""
        return self.node_dir(index) / "jetstream"

    def running(self, index: int) -> bool:
        """Whether node ``index`` was started, not stopped or killed since, and has not exited."""
        proc = self._procs[index]
        return proc is not None and proc.poll() is None

    # -- configs

    def _write_config(self, index: int) -> None:
        node = self.ports[index]
        routes = ", ".join(f"nats-route://{HOST}:{p.route}" for i, p in enumerate(self.ports) if i != index)
        lines = [
            f"server_name: {_quoted(self.names[index])}",
            f"listen: {HOST}:{node.client}",
            f"http: {HOST}:{node.monitor}",
        ]
        if len(self.ports) > 1:  # one node is a plain JetStream server: a cluster block needs routes
            lines += [
                "cluster {",
                f"  name: {_quoted(self.name)}",
                f"  listen: {HOST}:{node.route}",
                f"  routes: [{routes}]",
                *([] if self.advertise else ["  no_advertise: true"]),
                "}",
            ]
        lines += [
            "jetstream {",
            f"  store_dir: {_quoted(str(self.node_dir(index)))}",  # nats-server adds /jetstream
            "}",
        ]
        if self.token is not None:
            lines += ["authorization {", f"  token: {_quoted(self.token)}", "}"]
        elif self.user is not None:
            lines += ["authorization {", f"  user: {_quoted(self.user)}",
                      f"  password: {_quoted(self.password or '')}", "}"]
        lines += self.extra
        self.node_dir(index).mkdir(parents=True, exist_ok=True)
        path = self.config_path(index)
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)  # it may hold a password

    # -- processes

    def start(self) -> None:
        """Start every node that is not running (the cluster forms once a quorum is up; see ``wait_ready``)."""
        for index in range(len(self.names)):
            if not self.running(index):
                self.start_node(index)

    def start_node(self, index: int) -> None:
        """Start node ``index`` with its config, ports and store dir; a no-op if it runs."""
        if self.running(index):
            return
        self._procs[index] = None
        with open(self.log_path(index), "ab") as log:
            # A stop signal is held until the process is recorded, so a caller stopping on it
            # (``make cluster``'s Ctrl-C) never leaves a node it does not know of. nats-server sets
            # its own signal mask. Its own session: a terminal's Ctrl-C reaches the caller only, which
            # stops what uses the cluster before the cluster.
            held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                self._procs[index] = subprocess.Popen(
                    [NATS_SERVER, "-c", str(self.config_path(index))], start_new_session=True,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            except OSError as exc:
                raise EventBusError(f"cannot start NATS node {self.names[index]} with {NATS_SERVER}: "
                                    f"{exc.strerror or exc} (is nats-server installed?)") from None
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (no shutdown of its own: a crash) and reap it."""
        self._end(index, signal.SIGKILL)

    def stop(self, index: int) -> None:
        """SIGTERM node ``index`` and wait for it to exit (SIGKILL after 10 s)."""
        self._end(index, signal.SIGTERM)

    def _end(self, index: int, signum: int) -> None:
        proc = self._procs[index]
        self._procs[index] = None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signum)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        """SIGTERM every node, then wait for each (SIGKILL one still there after 10 s)."""
        for proc in self._procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for index in range(len(self._procs)):
            self._end(index, signal.SIGTERM)

    def kill_all(self) -> None:
        """SIGKILL every node and reap them all."""
        for proc in self._procs:
            if proc is not None and proc.poll() is None:
                proc.kill()
        for index in range(len(self._procs)):
            self._end(index, signal.SIGKILL)

    def close(self) -> None:
        """Kill every node and wait for each; the directory stays (logs, stores)."""
        self.kill_all()

    def __enter__(self) -> NatsCluster:
        try:
            self.start()
            self.wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -- monitoring

    def log_tail(self, index: int, lines: int = 20) -> str:
        """The last ``lines`` lines of node ``index``'s log."""
        try:
            text = self.log_path(index).read_text(errors="replace")
        except FileNotFoundError:
            return "(no log yet)"
        return "\n".join(text.splitlines()[-lines:])

    def jsz(self, index: int, timeout: float = 2.0, **params: Any) -> dict:
        """Node ``index``'s ``/jsz`` answer as a dict; ``params`` are its query (``streams=True``...).

        Raises ``OSError`` (``URLError``, a refused or reset connection) when the node does not answer.
        """
        query = urllib.parse.urlencode({key.replace("_", "-"): str(value).lower() if isinstance(value, bool)
                                        else value for key, value in params.items()})
        url = f"{self.monitor_urls[index]}/jsz" + (f"?{query}" if query else "")
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return json.load(answer)

    def check(self) -> None:
        """Raise ``EventBusError`` naming a node that exited on its own, with the end of its log."""
        for index in range(len(self._procs)):
            self._exited(index)

    def _exited(self, index: int) -> None:
        proc = self._procs[index]
        if proc is not None and proc.poll() is not None:
            self._procs[index] = None
            raise EventBusError(f"NATS node {self.names[index]} exited with code {proc.returncode}; "
                                f"the end of {self.log_path(index)}:\n{self.log_tail(index)}")

    def _not_ready(self, live: list[int], quorum: bool = False) -> tuple[int, str] | None:
        """Why JetStream is not ready yet on the live nodes (node, reason), or None when it is (with
        ``quorum``: once a majority of the nodes is current)."""
        need = len(self.names) // 2 + 1 if quorum else len(self.names)
        leaders = set()
        for index in live:
            try:
                answer = self.jsz(index)
            except (OSError, ValueError) as exc:
                return index, f"its monitor port does not answer ({exc})"
            if len(self.names) == 1:
                return None if answer.get("config") else (index, "its JetStream is not enabled yet")
            meta = answer.get("meta_cluster") or {}
            if not meta.get("leader"):
                return index, "it sees no JetStream meta leader"
            if (meta.get("cluster_size") or 0) < need:
                return index, f"its JetStream knows {meta.get('cluster_size') or 0} of {len(self.names)} nodes"
            leaders.add(meta["leader"])
        if len(leaders) > 1:
            return live[0], f"the nodes name different meta leaders {sorted(leaders)}"
        leader = leaders.pop()
        if leader not in self.names:
            return live[0], f"the meta leader {leader!r} is no node of this cluster"
        leader_index = self.names.index(leader)
        if leader_index not in live:
            return leader_index, "it is named meta leader but is not running"
        replicas = {r["name"]: r for r in (self.jsz(leader_index).get("meta_cluster") or {}).get("replicas") or []}
        current, lagging = 1, None
        for index in live:
            if index == leader_index:
                continue
            replica = replicas.get(self.names[index])
            if replica is None or not replica.get("current") or replica.get("offline"):
                lagging = lagging if lagging is not None else index
            else:
                current += 1
        if lagging is not None and (not quorum or current < need):
            return lagging, f"the meta leader {leader} does not see it current"
        return None

    def wait_ready(self, timeout: float = 120.0, quorum: bool = False) -> None:
        """Return once every running node agrees on a JetStream meta leader that sees them all current.

        Then a stream with as many replicas as running nodes can be added. With ``quorum``, once the
        leader sees a majority of the nodes current: enough for the streams a cluster restarted with, while
        a node that was away catches up (under load, nats-server can take minutes to count it in again).
        Raises ``EventBusError`` naming the node and showing the end of its log when a node exits or
        ``timeout`` passes.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            live = [i for i in range(len(self._procs)) if self._procs[i] is not None]
            if not live:
                raise EventBusError("no NATS node of the cluster is running")
            try:
                waiting = self._not_ready(live, quorum)
            except (OSError, ValueError) as exc:
                waiting = live[0], f"the meta leader's monitor port does not answer ({exc})"
            if waiting is None:
                return
            if time.monotonic() > deadline:
                index, reason = waiting
                raise EventBusError(f"NATS JetStream cluster {self.name!r} not ready within {timeout:g} s: "
                                    f"node {self.names[index]}: {reason}; the end of {self.log_path(index)}:\n"
                                    f"{self.log_tail(index)}")
            time.sleep(0.1)

    def stream_leader(self, stream: str, timeout: float = 30.0) -> int:
        """The index of the node leading ``stream``, waiting up to ``timeout`` s for one to be elected.

        A node counts as leader when its own ``/jsz`` says so: a follower's view may still name a
        leader that was just killed.
        """
        deadline = time.monotonic() + timeout
        while True:
            for index in range(len(self._procs)):
                self._exited(index)
                if self._procs[index] is None:
                    continue
                try:
                    answer = self.jsz(index, accounts=True, streams=True)
                except (OSError, ValueError):
                    continue
                for account in answer.get("account_details") or []:
                    for detail in account.get("stream_detail") or []:
                        alone = self.names[0] if len(self.names) == 1 else None  # no cluster: its one node
                        leader = (detail.get("cluster") or {}).get("leader", alone)
                        if detail.get("name") == stream and leader == self.names[index]:
                            return index
            if time.monotonic() > deadline:
                raise EventBusError(f"stream {stream!r} has no leader on a running node of NATS cluster "
                                    f"{self.name!r} after {timeout:g} s")
            time.sleep(0.1)

    def __repr__(self) -> str:
        return f"NatsCluster({str(self.directory)!r}, nodes={len(self.names)}, name={self.name!r})"
