"""The commands that write the API's or master's state, run without ``-c`` where no config file is:
one ``error:`` line naming the file looked for, nothing written; with one there, its layout.

The config directory looked in is ``$EVENTBUS_CONFIG_DIR`` (here in tmp_path, so the tests never
depend on /etc). As root the default root_dir is ``/``: the paths a command would write there must
not exist before (else the test is skipped) and are checked, and removed, after.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers import EVENTBUS, run_cli, write_config

# What the commands under test would write on defaults, relative to the default root_dir.
STATE = ("cloudevents", "users", "var/lib/eventbus", "etc/eventbus")


def _defaults_root(home: Path) -> Path:
    return Path("/") if os.geteuid() == 0 else home / ".eventbus"


@pytest.fixture
def no_config(tmp_path: Path) -> Iterator[tuple[dict, Path]]:
    """An environment with HOME in tmp_path and an empty config directory; the run's cwd is tmp_path."""
    env = dict(os.environ, HOME=str(tmp_path), EVENTBUS_CONFIG_DIR=str(tmp_path / "etc"))
    (tmp_path / "etc").mkdir()
    root = _defaults_root(tmp_path)
    guarded = [root / name for name in STATE]
    if root == Path("/"):
        there = [str(p) for p in guarded if p.exists()]
        if there:
            pytest.skip(f"running as root and {', '.join(there)} exist: this test must not touch them")
    try:
        yield env, root
    finally:
        if root == Path("/"):
            for path in guarded:  # only what this test made (they were absent before)
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()


def _run(env: dict, cwd: Path, *args: str, input: str | None = None):
    import subprocess

    return subprocess.run([EVENTBUS, *args], input=input, capture_output=True, text=True, timeout=30,
                          env=env, cwd=cwd)


COMMANDS = [
    ("eventtype", "add", "com.example.order", "--schema", "order.json"),
    ("eventtype", "finalize", "com.example.order", "--version", "1.0"),
    ("eventtype", "list"),
    ("channel", "add", "shop"),
    ("channel", "rotate", "shop", "--grace", "0"),
    ("channel", "remove", "shop"),
    ("channel", "list"),
    ("user", "add", "carol", "--password-stdin"),
]


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(c[:2]) for c in COMMANDS])
def test_without_a_config_file_the_api_state_commands_refuse_and_write_nothing(no_config, tmp_path, args):
    env, root = no_config
    (tmp_path / "order.json").write_text(json.dumps({"type": "object"}))
    before = sorted(tmp_path.rglob("*"))
    done = _run(env, tmp_path, *args, input="pw-of-carol\n")
    assert done.returncode != 0
    assert done.stderr == f"error: no config file {tmp_path / 'etc' / 'api'} (give -c DIR)\n"
    assert done.stdout == ""
    assert sorted(tmp_path.rglob("*")) == before
    assert not [str(p) for p in (root / name for name in STATE) if p.exists()]


def test_key_without_a_config_file_and_no_master_running_refuses_and_writes_nothing(no_config, tmp_path):
    env, root = no_config
    before = sorted(tmp_path.rglob("*"))
    for args in (("key", "--accept", "m1"), ("key", "--list")):
        done = _run(env, tmp_path, *args)
        assert done.returncode != 0
        assert done.stderr == f"error: no config file {tmp_path / 'etc' / 'master'} (give -c DIR)\n"
    assert sorted(tmp_path.rglob("*")) == before
    assert not [str(p) for p in (root / name for name in STATE) if p.exists()]


def test_the_config_directory_of_eventbus_config_dir_is_used_with_the_state_layout(no_config, tmp_path):
    env, _root = no_config
    etc = tmp_path / "etc"
    write_config(etc, "api", root_dir=str(tmp_path / "root"),
                 external_auth={"file": {"carol": ["*"]}})
    (tmp_path / "order.json").write_text(json.dumps({"type": "object"}))
    for args in (("eventtype", "add", "com.example.order", "--schema", "order.json"),
                 ("channel", "add", "shop"), ("user", "add", "carol", "--password-stdin")):
        done = _run(env, tmp_path, *args, input="pw-of-carol\n")
        assert done.returncode == 0, done.stderr
    state = tmp_path / "root" / "var/lib/eventbus/cloudevents"
    assert json.loads((state / "eventtypes.json").read_text())["com.example.order"]["1.0"]["finalized"] is False
    assert "shop" in json.loads((state / "channels.json").read_text())
    assert (state / "secrets" / "shop").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "root" / "etc/eventbus/api-users").is_file()
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["etc", "var"]
    assert run_cli("channel", "list", "-c", str(etc)).stdout.startswith("shop\t")
