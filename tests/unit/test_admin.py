"""The admin API with no master running: key operations on the key directories, by the master's own code."""
from __future__ import annotations

import pytest
import zmq

from eventbus import keys
from eventbus.bus.admin import Admin
from eventbus.errors import BusUnavailableError, UnknownKeyError


def test_without_a_master_key_operations_change_the_directories(tmp_path):
    pki = tmp_path / "pki"
    store = keys.KeyStore(pki)
    for minion_id in ("web1", "web2"):
        store.decide(minion_id, zmq.curve_keypair()[0].decode(), auto_accept=False)
    admin = Admin(tmp_path / "nomaster", pki)
    assert admin.list_keys()["minions_pre"] == ["web1", "web2"]
    assert admin.accept("web1") == ["web1"]
    assert admin.accept_all() == ["web2"] and admin.accept_all() == []
    assert admin.reject("web2") == ["web2"] and admin.delete("web1") == ["web1"]
    assert admin.list_keys() == {"minions": [], "minions_denied": [], "minions_pre": [], "minions_rejected": ["web2"]}
    with pytest.raises(UnknownKeyError, match="no key for minion 'nobody' in minions_pre or minions_rejected"):
        admin.accept("nobody")


def test_without_a_master_and_without_keys_every_operation_says_no_daemon(tmp_path):
    admin = Admin(tmp_path / "nomaster")
    for call in (admin.list_keys, lambda: admin.accept("web1"), admin.link_status,
                 lambda: admin.fire({}, "myco/x", "*")):
        with pytest.raises(BusUnavailableError, match="no daemon is running"):
            call()
