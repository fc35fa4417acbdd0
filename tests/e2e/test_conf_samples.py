"""The ``conf/`` samples start their daemons as they are; a key of the wrong type stops each daemon's start
with one ``error:`` line naming file, key, value and what was expected."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
import requests
import yaml

from eventbus import config
from eventbus.bus import control, wire
from eventbus.forwarding import config as forwardconf
from eventbus.errors import BusUnavailableError
from tests.e2e.test_make_run import sample_conf_with_free_ports
from tests.helpers import EVENTBUS, Daemon, short_tmpdir, wait_for, write_config


@pytest.fixture
def samples() -> Iterator[Path]:
    """A copy of conf/ in a short temp dir, ports free on this machine; its root_dir (``../run``) is there too."""
    root = short_tmpdir("ebs")
    conf = sample_conf_with_free_ports(root)
    assert config.load(config.MasterConfig, conf / "master").root_dir == root / "run"
    yield conf
    shutil.rmtree(root, ignore_errors=True)


class Started:
    """The daemons a test started from the samples; on failure their output, then stopped."""

    def __init__(self, conf: Path) -> None:
        self.conf = conf
        self.daemons: list[Daemon] = []

    def start(self, name: str) -> Daemon:
        daemon = Daemon.eventbus(name, self.conf).start()
        self.daemons.append(daemon)
        return daemon

    def bus(self, name: str) -> Daemon:
        """``eventbus master|minion -c CONF``, once it answers on its control socket."""
        cls = config.MasterConfig if name == "master" else config.MinionConfig
        return self.start(name).wait_ready(config.load(cls, self.conf / name).sock_dir, timeout=20)

    def stop(self) -> None:
        for daemon in reversed(self.daemons):
            code = daemon.stop()
            assert code == 0, f"{daemon.name} exited with {code}:\n{daemon.log[-3000:]}"
            assert "Traceback" not in daemon.log, daemon.log


@pytest.fixture
def started(samples: Path) -> Iterator[Started]:
    running = Started(samples)
    try:
        yield running
    except BaseException:
        for daemon in running.daemons:
            print(f"--- {daemon.name} ---\n{daemon.log[-3000:]}")
        raise
    finally:
        for daemon in running.daemons:
            if daemon.alive():
                daemon.kill()


def test_conf_master_starts(started):
    started.bus("master")
    started.stop()


def test_conf_minion_starts(started):
    started.bus("minion")
    started.stop()


def test_conf_api_starts(started):
    started.bus("master")
    api = started.start("api")
    port = yaml.safe_load((started.conf / "api").read_text())["port"]

    def answers() -> bool:
        api.check_alive()
        try:
            return requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
        except requests.RequestException:
            return False
    wait_for(answers, 20, what="the sample API to answer")
    started.stop()


def test_conf_forward_starts(started):
    started.bus("master")
    forward = started.start("forward")
    sock_dir = forwardconf.load(started.conf / "forward").sock_dir

    def answers() -> bool:
        forward.check_alive()
        try:
            control.request(sock_dir, wire.VERB_PING, timeout=0.5)
            return True
        except BusUnavailableError:
            return False
    wait_for(answers, 20, what="the sample forwarder to answer")
    started.stop()


# One real start per daemon with a key of the wrong type (tests/unit/test_config_wrong_types.py has every key).
WRONG = {
    "master": ({"publish_port": "http"}, "key 'publish_port' has value 'http'; expected a TCP port number"),
    "minion": ({"spool_max_events": "many"}, "key 'spool_max_events' has value 'many'; expected an integer"),
    "api": ({"token_expire": "soon"}, "key 'token_expire' has value 'soon'; expected a positive number"),
    "forward": ({"log_file": 5}, "key 'log_file' has value 5; expected a file system path"),
}


@pytest.mark.parametrize("name", WRONG)
def test_a_wrong_type_stops_the_daemon_with_one_error_line(tmp_path, name):
    keys, expected = WRONG[name]
    path = write_config(tmp_path, name, root_dir=str(tmp_path), **keys)
    done = subprocess.run([EVENTBUS, name, "-c", str(tmp_path)], capture_output=True, text=True, timeout=30)
    lines = done.stderr.splitlines()
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {path}: {expected}"), lines[0]  # file, key, value, what was expected
    assert done.stdout == ""
