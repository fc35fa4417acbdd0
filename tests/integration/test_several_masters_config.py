"""A minion's master list as an operator writes it: a bad one stops the daemon with one line; status names them."""
from __future__ import annotations

import pytest

from bench.procs import write_config
from tests.fleetkit import Fleet, masters_of, name_of, unanswered_item, wait_live
from tests.helpers import failed, run_cli, short_tmpdir, wait_for


@pytest.fixture
def fleet(request):
    made = Fleet()
    yield made
    made.cleanup(show_logs=failed(request))


@pytest.mark.parametrize("keys, words", [
    ({"master": ["127.0.0.1:4506", ""]}, "item 2: a host is empty"),
    ({"master": ["127.0.0.1:4506", None]}, "item 2: an item is empty"),
    ({"master": ["127.0.0.1:4506", "127.0.0.1:4506"]}, "127.0.0.1:4506 is listed twice"),
    ({"master": ["127.0.0.1", "127.0.0.1:4506"], "ret_port": 4506}, "127.0.0.1:4506 is listed twice"),
    ({"master": ["127.0.0.1:4506", "127.0.0.1:70000"]}, "70000 is not a TCP port number"),
    ({"master": ["127.0.0.1:4506", "127.0.0.1:http"]}, "bad port 'http'"),
    ({"master": ["127.0.0.1:4506", {"host": "127.0.0.1", "ret_port": 0}]}, "ret_port 0 is not a TCP port"),
    ({"master": []}, "the list is empty"),
], ids=["empty-item", "null-item", "duplicate", "duplicate-default-port", "port-too-big", "port-not-a-number",
        "mapping-port-zero", "empty-list"])
def test_a_bad_master_list_is_one_error_line_naming_the_key(keys: dict, words: str) -> None:
    root = short_tmpdir("ebn")
    try:
        path = write_config(root / "conf", "minion", root_dir=str(root), sock_dir="min", id="m1", **keys)
        done = run_cli("minion", "-c", str(path.parent), timeout=30)
    finally:
        import shutil
        shutil.rmtree(root, ignore_errors=True)
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: key 'master' has value "), done.stderr
    assert words in lines[0], lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("master_type", ["hot", "multimaster", "failover "])
def test_an_unknown_master_type_is_one_error_line_naming_the_key(master_type: str) -> None:
    root = short_tmpdir("ebn")
    try:
        path = write_config(root / "conf", "minion", root_dir=str(root), sock_dir="min", id="m1",
                            master=["127.0.0.1:4506", "127.0.0.1:4507"], master_type=master_type)
        done = run_cli("minion", "-c", str(path.parent), timeout=30)
    finally:
        import shutil
        shutil.rmtree(root, ignore_errors=True)
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert lines == [f"error: {path}: key 'master_type' has value {master_type!r}; expected one of str, failover"]


def test_status_on_a_minion_names_its_masters_and_the_live_one(fleet) -> None:
    first, second = fleet.master(), fleet.master()
    never = unanswered_item()
    minion = fleet.minion("m1", [never, first, second], master_type="failover", master_alive_interval=0.4)
    wait_live(minion, first)
    shown = run_cli("status", "-c", str(minion.config_dir))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    lines = dict(line.split(": ", 1) for line in shown.stdout.splitlines())
    assert lines["minion"] == "running (id m1, link accept)"
    assert lines["minion_master_type"] == "failover"
    assert lines[f"minion_master.{name_of(first)}"] == "live accept pending=0"
    assert lines[f"minion_master.{name_of(second)}"].startswith("standby ")
    assert lines[f"minion_master.{name_of(never)}"].startswith("standby connecting")


def test_status_on_a_hot_minion_shows_every_master_live(fleet) -> None:
    masters = [fleet.master(), fleet.master()]
    minion = fleet.minion("m1", masters)
    wait_for(lambda: [line["state"] for line in masters_of(minion).values()] == ["accept", "accept"], 20,
             what="both masters to accept m1")
    shown = run_cli("status", "-c", str(minion.config_dir))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    lines = dict(line.split(": ", 1) for line in shown.stdout.splitlines())
    assert lines["minion"] == "running (id m1, link accept)"
    assert lines["minion_master_type"] == "str"
    assert [lines[f"minion_master.{name_of(m)}"] for m in masters] == ["live accept pending=0"] * 2
