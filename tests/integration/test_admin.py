"""The admin API against a running master and minion: typed refusals, key changes, fires, status."""
from __future__ import annotations

from typing import Iterator

import pytest

from eventbus import event
from eventbus.bus import relay
from eventbus.bus.admin import Admin
from eventbus.errors import DaemonRefusedError, EventBusError
from tests.linkkit import Site, wait_link


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.cleanup()


def test_key_changes_go_through_the_master_and_refusals_are_typed(site):
    master = site.master(auto_accept=False)
    master.start()
    minion = site.minion("m1")
    minion.start()
    wait_link(minion, "pend")
    admin = Admin.for_master(master.settings)
    with pytest.raises(DaemonRefusedError) as refused:
        admin.accept("nobody")
    assert refused.value.verb == "key"
    assert refused.value.reason == "no key for minion 'nobody' in minions_pre or minions_rejected"
    assert str(master.sock_dir) in str(refused.value)
    with event.get_event("master", opts=master.opts()) as bus:
        assert admin.accept("m1") == ["m1"]
        change = bus.get_event(wait=5, tag="salt/key")
        assert change is not None and (change["id"], change["act"], change["result"]) == ("m1", "accept", True)
    wait_link(minion, "accept")
    status = admin.link_status()
    assert status["accepted"] == 1 and status["present"] == ["m1"]


def test_fires_on_minions_and_relay_refusals(site):
    master, minion = site.linked("web1")
    admin = Admin.for_master(master.settings)
    with event.get_event("minion", opts=minion.opts()) as bus:
        assert list(admin.fire_and_wait({"x": 1}, "myco/cmd", "web*", timeout=10)) == [("web1", True)]
        assert bus.get_event(wait=5, tag="myco/cmd")["x"] == 1
    with pytest.raises(EventBusError, match="no connected minion matches 'db\\*'"):
        list(admin.fire_and_wait({}, "myco/cmd", "db*", timeout=1))
    with pytest.raises(DaemonRefusedError) as refused:
        relay.send(minion.sock_dir, "salt/auth", {"forged": True})
    assert refused.value.verb == "relay" and refused.value.reason == "tag 'salt/auth' is reserved for the master"
    assert relay.send(minion.sock_dir, "myco/ok", {"x": 1})["master"] == "accept"


def test_a_running_master_slow_to_answer_never_finds_its_key_files_changed_under_it(site):
    """The admin changes key files itself only when no master runs; a stopped (SIGSTOP) one is an error."""
    import signal

    from eventbus.errors import BusUnavailableError

    master = site.master(auto_accept=False)
    master.start()
    minion = site.minion("m1")
    minion.start()
    wait_link(minion, "pend")
    pending = master.settings.pki_dir / "minions_pre" / "m1"
    assert pending.exists()
    master.daemon.signal(signal.SIGSTOP)
    try:
        with pytest.raises(BusUnavailableError, match="did not answer"):
            Admin.for_master(master.settings, timeout=0.5).accept("m1")
        assert pending.exists() and not (master.settings.pki_dir / "minions" / "m1").exists()
    finally:
        master.daemon.signal(signal.SIGCONT)
    assert Admin.for_master(master.settings).accept("m1") == ["m1"]
    wait_link(minion, "accept")
    master.stop()
    # No master at all: the files are changed directly.
    assert Admin.for_master(master.settings).reject("m1") == ["m1"]
    assert (master.settings.pki_dir / "minions_rejected" / "m1").exists()
