"""send and key as a user runs them."""
from __future__ import annotations

from typing import Iterator

import pytest

from eventbus import event
from tests.helpers import run_cli
from tests.linkkit import Site, wait_link


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.cleanup()


def test_send_adds_pairs_and_environment(site):
    master, minion = site.linked()
    env = {"PATH": "/usr/bin:/bin", "EB_MARK": "yes"}
    with event.get_event("master", opts=master.opts()) as bus:
        sent = run_cli("send", "myco/deploy/done", '{"app": "web"}', "version=7", "--with-env",
                       "-c", str(minion.config_dir), env=env)
        assert sent.returncode == 0, sent.stderr
        got = bus.get_event(wait=5, tag="myco/deploy/done")
    assert got["id"] == "m1" and got["tag"] == "myco/deploy/done" and got["cmd"] == "_minion_event"
    assert got["data"]["app"] == "web" and got["data"]["version"] == "7"
    assert got["data"]["environ"]["EB_MARK"] == "yes"


def test_send_bad_input_is_one_line(site):
    minion = site.minion("m1")
    conf = str(minion.config_dir)
    for args, problem in ((["myco/x", "[1, 2"], "DATA"), (["myco/x", "a=1", "oops"], "KEY=VALUE"),
                          (["", "a=1"], "tag"), (["myco/x"], "no minion daemon")):
        result = run_cli("send", *args, "-c", conf)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
        assert problem in result.stderr


def test_key_commands_work_without_a_running_master(site):
    master = site.master()
    pki = master.settings.pki_dir
    for state, minion_id in (("minions_pre", "web1"), ("minions_pre", "web2"), ("minions", "db1")):
        (pki / state).mkdir(parents=True, exist_ok=True)
        (pki / state / minion_id).write_text("x" * 40 + "\n")
    conf = str(master.config_dir)
    assert run_cli("key", "--list", "-c", conf).stdout.splitlines() == [
        "Accepted Keys:", "db1", "Denied Keys:", "Unaccepted Keys:", "web1", "web2", "Rejected Keys:"]
    accepted = run_cli("key", "--accept-all", "-c", conf)
    assert accepted.returncode == 0 and accepted.stdout.splitlines() == [
        "Key for minion web1 accepted.", "Key for minion web2 accepted."]
    assert run_cli("key", "--reject", "db1", "-c", conf).returncode == 0
    assert run_cli("key", "--delete", "web2", "-c", conf).returncode == 0
    assert run_cli("key", "-L", "-c", conf).stdout.splitlines() == [
        "Accepted Keys:", "web1", "Denied Keys:", "Unaccepted Keys:", "Rejected Keys:", "db1"]
    missing = run_cli("key", "--accept", "nobody", "-c", conf)
    assert missing.returncode == 1 and missing.stderr == "error: no key for minion 'nobody' in minions_pre or minions_rejected\n"


def test_key_delete_on_a_running_master_fires_and_the_minion_pends_again(site):
    master = site.master(auto_accept=False)
    master.start()
    minion = site.minion("m1")
    minion.start()
    wait_link(minion, "pend")
    conf = str(master.config_dir)
    with event.get_event("master", opts=master.opts()) as bus:
        assert run_cli("key", "-a", "m1", "-c", conf).returncode == 0
        wait_link(minion, "accept")
        deleted = run_cli("key", "-d", "m1", "-c", conf)
        assert deleted.returncode == 0 and deleted.stdout == "Key for minion m1 deleted.\n"
        changes = [bus.get_event(wait=5, tag="salt/key") for _ in range(2)]
        assert [(c["act"], c["id"]) for c in changes] == [("accept", "m1"), ("delete", "m1")]
        wait_link(minion, "pend")
    listing = run_cli("key", "--list", "-c", conf).stdout.splitlines()
    assert listing == ["Accepted Keys:", "Denied Keys:", "Unaccepted Keys:", "m1", "Rejected Keys:"]
    # The running master's refusal reads exactly like the offline one: the reason, nothing of the protocol.
    missing = run_cli("key", "--accept", "nobody", "-c", conf)
    assert missing.returncode == 1 and missing.stderr == "error: no key for minion 'nobody' in minions_pre or minions_rejected\n"


def test_a_bad_master_pubkey_is_one_config_error(site):
    from tests.helpers import Daemon

    minion = site.minion("m1", master_pubkey="not-a-key")
    daemon = Daemon.eventbus("minion", minion.config_dir).start()
    assert daemon.proc.wait(10) == 1
    daemon.stop()
    assert "error: " in daemon.log and "'master_pubkey' has value 'not-a-key'" in daemon.log
    assert "Traceback" not in daemon.log


def test_a_master_whose_port_is_taken_says_so(site):
    import socket

    from tests.helpers import Daemon

    master = site.master()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", site.ret_port))
        squatter.listen(1)
        daemon = Daemon.eventbus("master", master.config_dir).start()
        assert daemon.proc.wait(10) == 1
        daemon.stop()
    assert f"error: cannot listen for minions on tcp://127.0.0.1:{site.ret_port} (ret_port)" in daemon.log
    assert "Traceback" not in daemon.log
