"""What `make run` starts (cli/devrun.py on the conf/ samples) works as its printout says."""
from __future__ import annotations

import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import psutil
import pytest
import yaml

from tests.helpers import free_port, run_cli, short_tmpdir, wait_for
from tests.sse import SSEReader

REPO = Path(__file__).resolve().parents[2]
# `python -m eventbus.cli.devrun CONF` with SIGINT at its default, as a terminal starts it: a test run started
# in the background (`make test &`) ignores SIGINT, and children inherit that. exec keeps the pid.
AS_FROM_A_TERMINAL = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                      "os.execv(sys.executable, [sys.executable, '-m', 'eventbus.cli.devrun', *sys.argv[1:]])")


def sample_conf_with_free_ports(root: Path) -> Path:
    """The checkout's conf/ samples, copied as they are, except for ports free on this machine."""
    conf = root / "conf"
    shutil.copytree(REPO / "conf", conf)
    publish, ret, http = free_port(), free_port(), free_port()
    for name, ports in (("master", {"publish_port": publish, "ret_port": ret}),
                        ("minion", {"publish_port": publish, "ret_port": ret}), ("api", {"port": http})):
        keys = yaml.safe_load((conf / name).read_text())
        keys.update(ports)
        (conf / name).write_text(yaml.safe_dump(keys))
    return conf


def read_until(stream, marker: str, timeout: float) -> str:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)  # the stream ended: the runner exited, so no marker will come

    threading.Thread(target=pump, daemon=True).start()
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is None:
            raise AssertionError(f"the output ended before {marker!r}; printed:\n{''.join(seen)}")
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"no {marker!r} within {timeout}s; printed so far:\n{''.join(seen)}")


class MakeRun:
    """``make run``'s runner on a copy of conf/ (free ports), its printout read until it says it is ready."""

    def __init__(self, prepare: Callable[[Path], object] | None = None) -> None:
        self.root = short_tmpdir("ebr")
        self.conf = sample_conf_with_free_ports(self.root)
        if prepare is not None:  # edits the copied conf/ before the start (tests/e2e/test_readme_tour.py)
            prepare(self.conf)
        self.log_path = self.root / "devrun.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", AS_FROM_A_TERMINAL, str(self.conf)], cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True)
        self.printed = read_until(self.proc.stdout, "Ctrl-C stops everything.", 90)

    def ports(self) -> list[int]:
        master = yaml.safe_load((self.conf / "master").read_text())
        return [master["publish_port"], master["ret_port"], yaml.safe_load((self.conf / "api").read_text())["port"]]

    def ipc_files(self) -> list[Path]:
        return list((self.root / "run" / "var" / "run" / "eventbus").rglob("*.ipc"))

    def stop(self, signum: int) -> int:
        """Send ``signum`` to the runner alone; its exit code once it has stopped every daemon."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the runner did not exit within 60 s of {signal.Signals(signum).name}:\n"
                                 f"{self.log_path.read_text(errors='replace')[-4000:]}") from None
        self._log.close()
        return code

    def cleanup(self) -> None:
        """Kill a runner that is still up and its daemons too (a killed runner cannot stop them)."""
        if self.proc.poll() is None:
            daemons = psutil.Process(self.proc.pid).children(recursive=True)
            self.proc.kill()
            self.proc.wait()
            for daemon in daemons:
                try:
                    daemon.kill()
                except psutil.NoSuchProcess:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now (as a restarted daemon would: SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
        except OSError:
            return False
        return True


def test_make_run_starts_master_minion_and_api_that_work_together():
    run = MakeRun()
    try:
        printed, conf = run.printed, run.conf
        assert "watch the master bus" in printed
        token = re.search(r"API token:\s+(\S+)", printed).group(1)
        url = re.search(r"curl -N '(\S+)'", printed).group(1)
        assert token in url
        # The live view's address logs the page in (tests/e2e/test_api_browser.py drives it).
        assert re.search(r"live view: +(\S+)", printed).group(1) == url.replace("/events?", "/ui?")
        # The minion's key is pending, as in Salt, until accepted.
        accepted = run_cli("key", "--accept", "local-minion", "-c", str(conf))
        assert accepted.returncode == 0, accepted.stderr
        with SSEReader(url, timeout=30) as stream:
            assert stream.response.status_code == 200
            assert run_cli("fire", '{"message": "It works!"}', "myco/event/success", "--node", "master",
                           "-c", str(conf)).returncode == 0
            assert run_cli("send", "myco/hello", "who=me", "-c", str(conf)).returncode == 0
            seen = {}
            for record in stream:
                seen[record["tag"]] = record["data"]["data"]
                if "myco/event/success" in seen and "myco/hello" in seen:
                    break
            # `eventbus status` on what `make run` started: every daemon, the API's figures with no token
            # (its status file is at most a second old).
            def status() -> dict[str, str]:
                done = run_cli("status", "-c", str(conf))
                assert done.returncode == 0, done.stdout + done.stderr
                return dict(line.split(": ", 1) for line in done.stdout.splitlines())
            lines = wait_for(lambda: (now := status())["sse_streams"] == "1" and now, 20, interval=0.2,
                             what="the open stream in eventbus status")
            assert lines["api"].startswith("running (pid ") and int(lines["api_requests_total"]) >= 2
            assert lines["minion"].startswith("running (id local-minion") and lines["forward"] == "running"
        assert seen["myco/event/success"]["message"] == "It works!"
        assert seen["myco/hello"]["id"] == "local-minion" and seen["myco/hello"]["data"]["who"] == "me"
        assert run.stop(signal.SIGINT) == 0
        assert run.ipc_files() == []
        assert "Traceback" not in run.log_path.read_text()
    finally:
        run.cleanup()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_runner_stopped_by_a_supervisor_or_a_closed_terminal_leaves_nothing_running(signum):
    run = MakeRun()
    children: list[psutil.Process] = []
    try:
        children = psutil.Process(run.proc.pid).children(recursive=True)
        commands = sorted(next(arg for arg in c.cmdline() if arg in ("master", "minion", "api", "forward",
                                                                         "eventbus.daemon.reactor")) for c in children)
        assert commands == ["api", "eventbus.daemon.reactor", "forward", "master", "minion"], commands
        ports = run.ports()
        assert not any(port_is_free(port) for port in ports)  # the daemons hold them while running
        # Only the runner gets the signal, as from `timeout`, systemd or `kill`; not its process group.
        assert run.stop(signum) == 0
        _gone, alive = psutil.wait_procs(children, timeout=30)
        assert alive == [], [c.cmdline() for c in alive]
        assert [port for port in ports if not port_is_free(port)] == []
        assert run.ipc_files() == []
        assert "Traceback" not in run.log_path.read_text()
    finally:
        for child in children:  # a failed run must not leave its daemons to the next test
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        run.cleanup()


def test_a_bad_sample_config_stops_the_runner_with_one_error_line():
    root = short_tmpdir("ebb")
    try:
        conf = sample_conf_with_free_ports(root)
        (conf / "master").write_text((conf / "master").read_text() + "publish_port: many\n")
        done = subprocess.run([sys.executable, "-m", "eventbus.cli.devrun", str(conf)], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 1
        assert done.stderr.strip().splitlines() == [
            f"error: {conf / 'master'}: key 'publish_port' has value 'many'; expected a TCP port number from 1 to 65535"]
        assert "Traceback" not in done.stdout + done.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)
