"""Real eventbus processes for the benchmarks and the tests: config dirs, daemons, a master with minions.

Both ``bench/`` and ``tests/`` start daemons as a user would (``eventbus
master -c DIR``), wait for them to answer on their control socket (never a
sleep), and stop them with terminate, wait, kill. This module is that one
way; it imports nothing from ``tests``, and its polling (``wait_for``) and
process meter come from ``bench.measure``.
"""
from __future__ import annotations

import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import yaml

from bench.measure import ProcessMeter, wait_for

EVENTBUS = str(Path(sys.executable).parent / "eventbus")


def short_tmpdir(prefix: str = "eb") -> Path:
    """A short directory under /tmp: UNIX socket paths are limited to 107 bytes."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir="/tmp"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now, which nothing else takes meanwhile
    (``eventbus.cli.freeports``: below the ephemeral range, a band per test worker)."""
    from eventbus.cli.freeports import free_ports

    return free_ports(1)[0]


def raise_fd_limit() -> None:
    """Lift this process's open-file limit to its hard limit (thousands of streams need thousands of fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def write_config(config_dir: Path, name: str, **keys: Any) -> Path:
    """Write config file ``name`` (master/minion/api) into ``config_dir``."""
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / name
    path.write_text(yaml.safe_dump(keys, sort_keys=True))
    return path


class Daemon:
    """A real daemon process with its output kept in a log file: started, watched, stopped."""

    def __init__(self, argv: Sequence[str], log_path: Path, cwd: Path | None = None,
                 env: dict | None = None, name: str | None = None) -> None:
        self.argv = list(argv)
        self.name = name or " ".join(argv[:3])
        self.log_path = log_path
        self.cwd = cwd
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self._log: Any = None

    @classmethod
    def eventbus(cls, command: str, config_dir: Path, *extra: str, env: dict | None = None) -> "Daemon":
        """``eventbus COMMAND -c DIR EXTRA...``, logging to ``DIR/COMMAND.stderr``."""
        return cls([EVENTBUS, command, "-c", str(config_dir), *extra], config_dir / f"{command}.stderr", env=env,
                   name=command)

    def start(self) -> "Daemon":
        self._log = open(self.log_path, "ab")
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=self._log, cwd=self.cwd, env=self.env)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """``AssertionError`` with the end of the daemon's log when it has exited."""
        if not self.alive():
            code = self.proc.returncode if self.proc is not None else None
            raise AssertionError(f"{self.name} exited with {code}:\n{self.log[-4000:]}")

    def wait_ready(self, sock_dir: Path, timeout: float = 10.0) -> "Daemon":
        """Wait until the daemon answers a ping on its control socket (not a sleep)."""
        from eventbus.bus import control
        from eventbus.errors import BusUnavailableError

        def ready() -> bool:
            self.check_alive()
            try:
                control.ping(sock_dir, timeout=0.5)
                return True
            except BusUnavailableError:
                return False
        wait_for(ready, timeout, what=f"{self.name} to answer on {sock_dir}")
        return self

    def meter(self) -> ProcessMeter:
        """CPU and memory of the daemon."""
        return ProcessMeter(self.pid)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int | None:
        """terminate, wait, kill: the daemon's exit code (``None`` if it had to be killed)."""
        if self.proc is None:
            return None
        code: int | None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                code = None
        else:
            code = self.proc.returncode
        if self._log is not None:
            self._log.close()
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> "Daemon":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Node:
    """A config dir for a master or a minion (own short temp dir, own free ports), and its daemon."""

    def __init__(self, root: Path, name: str, **keys: Any) -> None:
        self.root = root
        self.name = name
        self.config_dir = root / "conf"
        keys.setdefault("root_dir", str(root))
        keys.setdefault("sock_dir", name[:3])
        keys.setdefault("log_level", "info")
        # Every master listens for minions on its own ports, so parallel runs never collide.
        self._own_ports = "publish_port" not in keys and "ret_port" not in keys
        keys.setdefault("publish_port", free_port())
        keys.setdefault("ret_port", free_port())
        self.keys = keys
        self.path = write_config(self.config_dir, name, **keys)
        self.daemon: Daemon | None = None

    @property
    def settings(self) -> Any:
        from eventbus import config

        cls = config.MasterConfig if self.name == "master" else config.MinionConfig
        return config.load(cls, self.path)

    @property
    def sock_dir(self) -> Path:
        return self.settings.sock_dir

    def opts(self) -> dict:
        from eventbus import config

        return config.client_config(self.path)

    def handshakes(self) -> int:
        """How many listeners have connected to this node's bus so far."""
        from eventbus.bus import control, wire

        return control.request(self.sock_dir, wire.VERB_STATS)["handshakes"]

    def start_listener(self, *args: str, **popen: Any) -> subprocess.Popen:
        """Start ``eventbus ARGS`` (e.g. watch) and return once it listens on this node's bus."""
        before = self.handshakes()
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen([EVENTBUS, *args], text=True, **popen)
        wait_for(lambda: proc.poll() is not None or self.handshakes() > before, 15,
                 what=f"{args[0]} to listen")
        return proc

    def start(self, *extra: str, timeout: float = 10.0) -> Daemon:
        """Start the daemon and wait until it answers.

        A free port can be taken by another process between choosing it and binding it (other
        test runs share the machine): a master on ports of its own then retries on new ones.
        """
        for attempt in range(3):
            self.daemon = Daemon.eventbus(self.name, self.config_dir, *extra).start()
            try:
                self.daemon.wait_ready(self.sock_dir, timeout)
                return self.daemon
            except AssertionError:
                if not (self._own_ports and self.name == "master" and attempt < 2
                        and "Address already in use" in self.daemon.log and not self.daemon.alive()):
                    raise
                self.daemon.stop()
                self.daemon.log_path.unlink()
                self.keys.update(publish_port=free_port(), ret_port=free_port())
                self.path = write_config(self.config_dir, self.name, **self.keys)
        raise AssertionError("unreachable")

    def stop(self) -> int | None:
        return self.daemon.stop() if self.daemon is not None else None

    def cleanup(self, keep: bool = False) -> None:
        """Kill the daemon if it still runs; remove the temp dir unless ``keep`` (its logs tell a failure)."""
        if self.daemon is not None and self.daemon.alive():
            self.daemon.kill()
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


def link_state(node: Node) -> dict:
    """The node's ``link`` control answer (a minion's state and spool; a master's present set)."""
    from eventbus.bus import control, wire

    return control.request(node.sock_dir, wire.VERB_LINK, None, timeout=2.0)


def wait_link(minion: Node, state: str, timeout: float = 10.0) -> dict:
    """Wait until the minion's link is in ``state`` (accept, pend, reject, denied, connecting)."""
    return wait_for(lambda: (s := link_state(minion))["state"] == state and s, timeout,
                    what=f"minion link state {state!r}")


class Site:
    """One master and its minions on loopback sharing two free ports, each node in its own short temp dir.

    ``keys`` (e.g. ``log_level``) go into every node's config; ``heartbeat`` is the link's.
    """

    def __init__(self, heartbeat: float = 0.3, **keys: Any) -> None:
        self.publish_port = free_port()
        self.ret_port = free_port()
        self.heartbeat = heartbeat
        self.keys = keys
        self.nodes: list[Node] = []

    def master(self, **keys: Any) -> Node:
        node = Node(short_tmpdir("ebm"), "master", **{"heartbeat_interval": self.heartbeat, **self.keys, **keys,
                                                        "publish_port": self.publish_port, "ret_port": self.ret_port})
        self.nodes.append(node)
        return node

    def minion(self, minion_id: str, *, publish_port: int | None = None, ret_port: int | None = None,
               **keys: Any) -> Node:
        node = Node(short_tmpdir("ebn"), "minion", **{"heartbeat_interval": self.heartbeat, **self.keys, **keys,
                                                        "id": minion_id, "master": "127.0.0.1",
                                                        "publish_port": publish_port or self.publish_port,
                                                        "ret_port": ret_port or self.ret_port})
        self.nodes.append(node)
        return node

    def linked(self, minion_id: str = "m1", **master_keys: Any) -> tuple[Node, Node]:
        """A running auto-accepting master and a running minion whose link it has accepted."""
        master = self.master(auto_accept=True, **master_keys)
        master.start()
        minion = self.minion(minion_id)
        minion.start()
        wait_link(minion, "accept")
        return master, minion

    def cleanup(self, keep: bool = False) -> None:
        """Stop every node, minions first; remove their dirs unless ``keep``."""
        for node in reversed(self.nodes):
            if node.daemon is not None and node.daemon.alive():
                node.stop()
            node.cleanup(keep)
