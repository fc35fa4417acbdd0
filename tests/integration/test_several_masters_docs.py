"""docs/fleet.md's configs run as written, on real daemons, and do what the page says.

Each ``yaml`` block of the page starts with ``# /etc/eventbus/NODE on HOST``.
What cannot be as written on one test machine is replaced, and only that:
each master of a minion's ``master`` list becomes, in order, a running
master on loopback with ports of its own (a mapping item; the item-forms
block keeps its forms and gets local hosts and ports), and every config gets
a short temp ``root_dir``/``sock_dir``, ``heartbeat_interval`` 0.3 and, for
a master, free ports.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from eventbus import event
from tests.fleetkit import Fleet, RelayStream, collect, log_of, masters_of, name_of, numbers, wait_live
from tests.helpers import failed, free_port, run_cli, wait_for, write_config
from tests.readme_tour import doc_blocks

HEADER = re.compile(r"^# /etc/eventbus/(master|minion) on (\S+)$")
BLOCKS = [b for b in doc_blocks() if b.doc == "docs/fleet.md" and b.lang == "yaml"]


def block_config(node: str, start: str) -> dict:
    """The keys of the page's ``node`` block whose first key line starts with ``start``."""
    found = [b for b in BLOCKS if HEADER.match(b.text.splitlines()[0]).group(1) == node
             and any(line.startswith(start) for line in b.text.splitlines())]
    assert len(found) == 1, f"docs/fleet.md has {len(found)} {node} blocks with {start!r}"
    return yaml.safe_load(found[0].text)


def written_masters(keys: dict) -> list:
    return [keys["master"]] if isinstance(keys["master"], str) else list(keys["master"])


@pytest.fixture
def fleet(request):
    made = Fleet()
    yield made
    made.cleanup(show_logs=failed(request))


def test_every_block_names_its_file_and_loads(tmp_path: Path, monkeypatch) -> None:
    from eventbus import config

    monkeypatch.setenv("NATS_PASSWORD", "the-fleet-password")  # the cluster blocks' password_env

    assert len(BLOCKS) >= 5
    for block in BLOCKS:
        header = HEADER.match(block.text.splitlines()[0])
        assert header, f"{block.where}: the block does not start with '# /etc/eventbus/NODE on HOST'"
        path = tmp_path / header.group(1)
        path.write_text(block.text)
        cls = config.MasterConfig if header.group(1) == "master" else config.MinionConfig
        config.load(cls, path)  # as written: any bad key or value raises


def start_minion(fleet: Fleet, keys: dict):
    """The page's minion config with its masters replaced by running ones: (minion, masters)."""
    masters = [fleet.master() for _ in written_masters(keys)]
    others = {k: v for k, v in keys.items() if k not in ("master", "id")}
    return fleet.minion(keys["id"], masters, **others), masters


def test_one_master_as_written(fleet) -> None:
    keys = block_config("minion", "master: ")
    assert isinstance(keys["master"], str)
    minion, (master,) = start_minion(fleet, keys)
    wait_for(lambda: masters_of(minion)[name_of(master)]["state"] == "accept", 20, what="accepted")
    RelayStream(minion, "myco/one", 3, every=0).start().join()
    wait_for(lambda: numbers(master, "myco/one") == {"web1": [0, 1, 2]}, 20, what="3 events on the master")


def test_hot_as_written_reaches_every_master(fleet) -> None:
    keys = block_config("minion", "  - master3")
    assert "master_type" not in keys
    minion, masters = start_minion(fleet, keys)
    assert len(masters) == 3
    RelayStream(minion, "myco/hot", 3, every=0).start().join()
    for master in masters:
        wait_for(lambda master=master: numbers(master, "myco/hot") == {"web1": [0, 1, 2]}, 20,
                 what=f"3 events on {master.keys['id']}")


def test_failover_as_written_moves_after_one_and_a_half_alive_intervals_and_fails_back(fleet) -> None:
    keys = block_config("minion", "master_failback: true")
    assert keys["master_type"] == "failover" and keys["master_alive_interval"] == 5
    minion, (first, second) = start_minion(fleet, keys)
    wait_live(minion, first)
    first.daemon.kill()
    wait_live(minion, second, timeout=30)
    moved = re.search(rf"moving from the master at {re.escape(name_of(first))} to the master at "
                      rf"{re.escape(name_of(second))}: it has not answered for (\d+\.\d) s "
                      r"\(master_alive_interval 5 s\)", log_of(minion))
    assert moved and float(moved.group(1)) >= 7.5, log_of(minion)[-2000:]
    RelayStream(minion, "myco/fo", 3, every=0).start().join()
    wait_for(lambda: numbers(second, "myco/fo") == {"web1": [0, 1, 2]}, 20, what="3 events on the second")
    first.start()
    wait_live(minion, first, timeout=30)


def test_the_item_forms_as_written(fleet) -> None:
    """Each form as written, with only hosts and port numbers made local: the minion goes down the list."""
    block = next(b for b in BLOCKS if "  - {host:" in b.text)
    publish_port, ret_port = free_port(), free_port()
    first = fleet.master(interface="127.0.0.1", publish_port=publish_port, ret_port=ret_port)
    # host:port: the minion's publish_port, another ret_port; on another loopback address, as on another host.
    second = fleet.master(interface="127.0.0.2", publish_port=publish_port, ret_port=free_port())
    third = fleet.master()
    text = as_run(block.text, {
        "master1.example.com": "127.0.0.1",
        "master2.example.com:4516": f"127.0.0.2:{second.keys['ret_port']}",
        "{host: 10.0.0.3, ret_port: 4526, publish_port: 4525}":
            f"{{host: 127.0.0.1, ret_port: {third.keys['ret_port']}, publish_port: {third.keys['publish_port']}}}"})
    keys = yaml.safe_load(text)
    minion = fleet.minion(keys.pop("id"), [], start=False)
    # The block leaves master_alive_interval to heartbeat_interval; 0.5 s keeps a busy machine from moving early.
    minion.keys.update(keys, publish_port=publish_port, ret_port=ret_port, master_alive_interval=0.5)
    minion.path = write_config(minion.config_dir, "minion", **minion.keys)
    minion.start()
    for number, (master, after) in enumerate(((first, second), (second, third), (third, None))):
        wait_live(minion, {"host": master.keys.get("interface", "127.0.0.1"), "ret_port": master.keys["ret_port"]},
                  timeout=20)
        RelayStream(minion, "myco/forms", 2, every=0, first=2 * number).start().join()
        wait_for(lambda master=master, number=number: numbers(master, "myco/forms") == {"web1": [2 * number,
                                                                                              2 * number + 1]},
                 20, what=f"2 events on {master.keys['id']}")
        if after is not None:
            master.daemon.kill()


def as_run(text: str, replace: dict[str, str]) -> str:
    for old, new in replace.items():
        assert old in text, f"docs/fleet.md's item block no longer has {old!r}"
        text = text.replace(old, new)
    return text


def test_a_master_as_written_shows_its_id(fleet) -> None:
    keys = block_config("master", "interface: ")
    master = fleet.master(**keys)
    shown = run_cli("status", "-c", str(master.config_dir))
    assert shown.returncode == 0, shown.stderr
    assert f"master_id: {keys['id']}" in shown.stdout.splitlines()
    with event.get_event("master", opts=master.opts()) as bus:
        fleet.minion("web1", [master])
        assert collect(bus, "salt/minion/web1/start", 1, wait=20), "no minion linked to the documented master"


def test_the_cluster_blocks_as_written_join_two_masters(tmp_path: Path, monkeypatch) -> None:
    """The fleet-wide bus's two master blocks, on a real 3-node cluster that wants their user and password:
    an event fired on master1 is on master2's bus with ``_origin``."""
    from eventbus import systemstatus
    from eventbus.cli.natscluster import NatsCluster
    from tests.fleetkit import journal_events

    monkeypatch.setenv("NATS_PASSWORD", "the-fleet-password")
    made = Fleet()
    with NatsCluster(tmp_path / "nats", user="eventbus", password="the-fleet-password") as cluster:
        try:
            masters = []
            for name in ("master1", "master2"):
                found = [b for b in BLOCKS if b.text.startswith(f"# /etc/eventbus/master on {name}")
                         and "cluster:" in b.text]
                assert len(found) == 1, f"docs/fleet.md has {len(found)} cluster blocks for {name}"
                keys = yaml.safe_load(found[0].text)
                assert keys["cluster"]["servers"] == ["nats://nats1:4222", "nats://nats2:4222", "nats://nats3:4222"]
                keys["cluster"]["servers"] = cluster.urls  # the documented hosts, here on loopback
                masters.append(made.master(**keys))
            for master in masters:
                wait_for(lambda m=master: (systemstatus.read_cluster(m.settings) or {}).get("state") == "up", 60,
                         what=f"{master.keys['id']} up")
            with event.MasterEvent(opts=masters[0].opts(), listen=False) as handle:
                assert handle.fire_event({"n": 1}, "myco/hello")
            wait_for(lambda: [d for _, d in journal_events(masters[1], "myco/hello")], 60,
                     what="master1's event on master2's bus")
            assert [d["_origin"] for _, d in journal_events(masters[1], "myco/hello")] == ["master1"]
        finally:
            made.cleanup()
