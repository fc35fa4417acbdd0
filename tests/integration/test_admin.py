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
