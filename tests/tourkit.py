"""A ``make run`` session to follow the README in: the runner, a user's shell, terminals, a stand-in web host.

``Tour`` starts ``python -m eventbus.cli.devrun`` on a copy of ``conf/`` with free
ports (``MakeRun``), gives it a directory laid out like a checkout (``conf/``,
``.venv``), a bash that keeps its variables from one block to the next (the
user's terminal), commands in terminals of their own (``watch``, ``curl -N``),
its own record of the master bus, and a local HTTP server standing in for the
documents' example hosts. Every wait has a deadline and says what it awaited.
"""
from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

import psutil
import yaml

from tests.e2e.test_make_run import MakeRun
from tests.readme_tour import REPO

DEADLINE = 20.0  # seconds for anything a user would see "at once"
# The documents' example hosts, and the local receiver's origin that stands in for them.
EXAMPLE_ORIGINS = ("https://shop.example", "https://hooks.example.com")


class Lines:
    """The lines of a process's output, read by a thread as they come."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append(None)  # type: ignore[arg-type]  # end of output
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self.lines)

    def since(self, start: int = 0) -> list[str]:
        with self._cond:
            return [line for line in self.lines[start:] if line is not None]

    def wait(self, found: Callable[[list[str]], Any], timeout: float) -> Any:
        """``found(lines)`` once it is truthy (re-asked at each new line); ``None`` after ``timeout``, or
        at once when the output has ended without it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = found([line for line in self.lines if line is not None])
                left = deadline - time.monotonic()
                if result or left <= 0 or (self.lines and self.lines[-1] is None):
                    return result or None
                self._cond.wait(min(left, 0.2))


class Terminal:
    """A command in a terminal of its own (``watch``, ``curl -N``): bash in its own session, stopped with it.

    Its stderr is kept apart: on a terminal curl shows no progress meter, in a pipe it would.
    """

    def __init__(self, command: str, cwd: Path, env: dict) -> None:
        self.command = command
        self.popen = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      start_new_session=True)
        self.out = Lines(self.popen.stdout)
        self.err = Lines(self.popen.stderr)

    def printed(self) -> str:
        """Its output, and the end of its stderr, for a failure message."""
        err = [line.rsplit("\r", 1)[-1] for line in self.err.since()][-8:]
        return "\n".join(self.out.since()[-30:] + (["(stderr:)", *err] if err else []))

    def exited(self) -> bool:
        return self.popen.poll() is not None

    def ended(self, timeout: float) -> bool:
        """Whether it exits within ``timeout`` (its output read to the end)."""
        self.out.wait(lambda _lines: False, timeout)
        try:
            self.popen.wait(2)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)  # its own session: bash and what it started
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


class Shell:
    """The user's terminal: one bash, so what a block sets (``SECRET=...``) is there for the next one."""

    MARK = "__tour_done__"

    def __init__(self, cwd: Path, env: dict) -> None:
        self.scripts = cwd / ".tour"
        self.scripts.mkdir()
        self.popen = subprocess.Popen(["bash", "--norc", "--noprofile"], cwd=cwd, env=env, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True)
        self.out = Lines(self.popen.stdout)
        self.count = 0

    def run(self, command: str, timeout: float = DEADLINE) -> tuple[int | None, list[str]]:
        """Run ``command`` as typed at the prompt (stdin empty): its exit code (``None``: timed out) and output."""
        self.count += 1
        script = self.scripts / f"{self.count}.sh"
        script.write_text(command + "\n")
        start = len(self.out)
        mark = re.compile(rf"{self.MARK} {self.count} (\d+)$")
        self.popen.stdin.write(f"source {script} </dev/null 2>&1; printf '\\n%s %d %d\\n' {self.MARK} "
                               f"{self.count} $?\n")
        self.popen.stdin.flush()

        def done(lines: list[str]) -> Any:
            return next((mark.match(line) for line in lines[start:] if mark.match(line)), None)
        end = self.out.wait(done, timeout)
        code: int | None = int(end.group(1)) if end else None
        if end is None:  # a command that hangs: stop what it started, as Ctrl-C would
            for child in psutil.Process(self.popen.pid).children(recursive=True):
                child.kill()
            self.out.wait(done, 10)
        lines = self.out.since(start)
        lines = lines[:next((i for i, line in enumerate(lines) if mark.match(line)), len(lines))]
        return code, lines[:-1] if lines and lines[-1] == "" else lines

    def close(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


class Receiver:
    """An HTTP server on a free port that answers 200 to everything and keeps what it was sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict, bytes]] = []
        received = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append((self.command, self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_PUT = do_POST

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def user_env() -> dict:
    """The environment of a user who ran ``make run``: the checkout's ``.venv/bin`` is not on ``PATH``."""
    venv = (REPO / ".venv").resolve()
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(part for part in env.get("PATH", "").split(os.pathsep)
                                  if part and not Path(part).resolve().is_relative_to(venv))
    return env


def until(found: Callable[[], Any], what: str, got: Callable[[], str], timeout: float = DEADLINE) -> Any:
    """``found()`` once truthy; else ``AssertionError`` naming what was awaited and what came instead."""
    deadline = time.monotonic() + timeout
    while True:
        result = found()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}; got:\n{got()}")
        time.sleep(0.05)


class Tour:
    """``make run`` on a copy of conf/, and everything a user following the documents has at hand."""

    def __init__(self, prepare: Callable[["Tour", Path], object] | None = None) -> None:
        self.receiver = Receiver()
        self.vars: dict[str, str] = {}       # values later blocks use (a channel's url and secret)
        self.marks: dict[str, int] = {}      # block -> lines the master bus record had when it started
        self.ran: set[str] = set()           # blocks run so far (some run within another's step)
        self.terminals: dict[str, Terminal] = {}
        self.cleanups: list[Callable[[], object]] = []
        self.background: list[Terminal] = []
        self.shell: Shell | None = None
        self.token = self.password = ""     # known once make run has printed them
        self.run = MakeRun.__new__(MakeRun)  # kept before it starts: one that fails to come up is stopped too
        try:
            self.run.__init__(prepare=lambda conf: self._prepare(conf, prepare))
            self.root = self.run.root
            (self.root / ".venv").symlink_to(REPO / ".venv")
            self.env = user_env()
            self.token = re.search(r"API token:\s+(\S+)", self.run.printed).group(1)
            self.password = (self.root / "run/etc/eventbus/api-dev-password").read_text().strip()
            self.shell = Shell(self.root, self.env)
            # The tour's own record of the master bus: where "on the master bus" and "fires TAG" are looked for.
            self.terminals["on the master bus"] = self.start(".venv/bin/eventbus watch -c conf")
        except BaseException:
            self.close()
            raise

    def _prepare(self, conf: Path, prepare: Callable[["Tour", Path], object] | None) -> None:
        self.conf = conf
        self.api_port = yaml.safe_load((conf / "api").read_text())["port"]
        if prepare is not None:
            prepare(self, conf)

    def substitute(self, text: str) -> str:
        """A document's text as it runs here: the API's free port, this run's token and password, local hosts."""
        text = re.sub(r"\b(localhost|127\.0\.0\.1):8000\b", rf"\g<1>:{self.api_port}", text)
        if self.token:
            text = text.replace("<token>", self.token).replace("<password>", self.password)
        for origin in EXAMPLE_ORIGINS:
            text = text.replace(origin, self.receiver.origin)
        return text

    @property
    def master_sock_dir(self) -> Path:
        from eventbus import config

        return config.load(config.MasterConfig, self.conf / "master").sock_dir

    def handshakes(self) -> int:
        from eventbus.bus import control, wire

        return control.request(self.master_sock_dir, wire.VERB_STATS)["handshakes"]

    @property
    def master_pid(self) -> int:
        for child in psutil.Process(self.run.proc.pid).children():
            if "master" in child.cmdline():
                return child.pid
        raise AssertionError(f"no master among make run's children:\n{self.log()}")

    def log(self) -> str:
        """The end of what make run's daemons logged."""
        return self.run.log_path.read_text(errors="replace")[-3000:]

    def start(self, command: str) -> Terminal:
        """``command`` in a terminal of its own, once it listens (the master counts one more listener)
        or has printed something or has exited."""
        before = self.handshakes()
        terminal = Terminal(command, self.root, self.env)
        self.background.append(terminal)
        until(lambda: terminal.exited() or terminal.out.since() or self.handshakes() > before,
              f"`{command}` to listen", terminal.printed)
        return terminal

    def start_daemon(self, command: str) -> Terminal:
        """A daemon beside make run's (stopped with the tour)."""
        terminal = Terminal(command, self.root, self.env)
        self.background.append(terminal)
        return terminal

    def close(self) -> None:
        """Stop everything the tour started (make run with SIGINT, as Ctrl-C) and remove its directory."""
        try:
            for terminal in self.background:
                terminal.stop()
            if self.shell is not None:
                self.shell.close()
            if hasattr(self.run, "proc"):
                self.run.stop(signal.SIGINT)
        finally:
            if hasattr(self.run, "proc"):
                self.run.cleanup()
            elif hasattr(self.run, "root"):  # its conf/ was made, its start failed
                shutil.rmtree(self.run.root, ignore_errors=True)
            self.receiver.close()
            for cleanup in self.cleanups:
                cleanup()


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
