"""Test helpers: per-test config dirs, real daemon processes, the CLI as a user runs it."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import yaml

BIN = Path(sys.executable).parent
EVENTBUS = str(BIN / "eventbus")


def short_tmpdir(prefix: str = "eb") -> Path:
    """A short directory under /tmp: UNIX socket paths are limited to 107 bytes."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir="/tmp"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(config_dir: Path, name: str, **keys: Any) -> Path:
    """Write config file ``name`` (master/minion/api) into ``config_dir``."""
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / name
    path.write_text(yaml.safe_dump(keys, sort_keys=True))
    return path


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
             what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Daemon:
    """A real ``eventbus <command> -c DIR`` process with its stderr kept in a file."""

    def __init__(self, command: str, config_dir: Path, *extra: str, env: dict | None = None) -> None:
        self.command = command
        self.config_dir = config_dir
        self.extra = extra
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.log_path = config_dir / f"{command}.stderr"

    def start(self) -> "Daemon":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([EVENTBUS, self.command, "-c", str(self.config_dir), *self.extra],
                                     stdout=self._log, stderr=self._log, env=self.env)
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, sock_dir: Path, timeout: float = 10.0) -> "Daemon":
        """Wait until the daemon answers a ping on its control socket (not a sleep)."""
        from eventbus import control
        from eventbus.errors import BusUnavailableError

        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.command} exited with {self.proc.returncode}:\n{self.log}")
            try:
                control.ping(sock_dir, timeout=0.5)
                return True
            except BusUnavailableError:
                return False
        wait_for(ready, timeout, what=f"{self.command} to answer on {sock_dir}")
        return self

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int | None:
        """terminate, wait, kill: the daemon's exit code (None if it had to be killed)."""
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
        self._log.close()
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


def run_cli(*args: str, input: str | None = None, timeout: float = 30.0,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``eventbus ARGS`` as a user would and capture what it prints."""
    return subprocess.run([EVENTBUS, *args], input=input, capture_output=True, text=True,
                          timeout=timeout, env=env)


class Node:
    """A per-test config dir for a master or minion, with its typed settings."""

    def __init__(self, root: Path, name: str, **keys: Any) -> None:
        self.root = root
        self.name = name
        self.config_dir = root / "conf"
        keys.setdefault("root_dir", str(root))
        keys.setdefault("sock_dir", name[:3])
        keys.setdefault("log_level", "info")
        # Every test master listens for minions on its own ports, so parallel runs never collide.
        keys.setdefault("publish_port", free_port())
        keys.setdefault("ret_port", free_port())
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
        from eventbus import control, wire

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

    def start(self, *extra: str) -> Daemon:
        self.daemon = Daemon(self.name, self.config_dir, *extra).start()
        self.daemon.wait_ready(self.sock_dir)
        return self.daemon

    def stop(self) -> int | None:
        return self.daemon.stop() if self.daemon is not None else None

    def cleanup(self) -> None:
        if self.daemon is not None and self.daemon.alive():
            self.daemon.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def env_without(*names: str) -> dict:
    env = dict(os.environ)
    for name in names:
        env.pop(name, None)
    return env
