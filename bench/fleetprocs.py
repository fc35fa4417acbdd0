"""The helper processes of ``bench.fleet``: link workers (``bench.fleetclient``) and bus clients (``bench.fleetbus``).

Each is a child process driven by command lines on its stdin and answering
one JSON line each on stdout; this module starts them, talks to them and
stops them.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence


class Child:
    """A helper process speaking JSON lines."""

    def __init__(self, argv: Sequence[str], first_line: str | None = None, log: Path | None = None) -> None:
        self._log = open(log, "ab") if log is not None else None
        self.proc = subprocess.Popen([sys.executable, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, bufsize=1)
        if first_line is not None:
            self.write(first_line)

    def write(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def read(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"helper {self.proc.args[1:3]} exited with {self.proc.wait()}")
        return json.loads(line)

    def ask(self, command: str) -> Any:
        self.write(command)
        return self.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.write("quit")
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()


class Workers:
    """Link worker processes, asked all at once and their answers summed."""

    def __init__(self, port: int, server_key: str, groups: list[list[str]], heartbeat: float, log: Path) -> None:
        self.children = [Child(["-m", "bench.fleetclient"],
                               json.dumps({"port": port, "server_key": server_key, "ids": ids,
                                           "heartbeat": heartbeat, "seed": n}), log)
                         for n, ids in enumerate(groups)]

    def ask(self, command: str) -> dict:
        for child in self.children:
            child.write(command)
        total: dict = {}
        for child in self.children:
            for key, value in child.read().items():
                total[key] = total.get(key, 0) + value
        return total

    def stop(self) -> None:
        for child in self.children:
            child.stop()


def bus_client(role: str, sock_dir: Path, log: Path, *extra: str) -> Child:
    """A ``bench.fleetbus`` process on the master bus, returned once it listens."""
    child = Child(["-m", "bench.fleetbus", role, str(sock_dir), *extra], log=log)
    child.read()
    return child
