"""The master's key store (Salt's layout) and a daemon's own key pair."""
from __future__ import annotations

import stat

import pytest
import zmq

from eventbus import keys, masters
from eventbus.errors import UnknownKeyError


def key() -> str:
    return zmq.curve_keypair()[0].decode()


def test_unknown_minions_pend_unless_auto_accept(tmp_path):
    store = keys.KeyStore(tmp_path)
    a, b = key(), key()
    assert store.decide("a", a, auto_accept=False) == keys.Decision("pend", False)
    assert (tmp_path / "minions_pre" / "a").read_text().strip() == a
    assert store.decide("a", a, auto_accept=False).act == "pend"
    assert store.decide("b", b, auto_accept=True) == keys.Decision("accept", True)
    assert store.listing() == {"minions": ["b"], "minions_denied": [], "minions_pre": ["a"], "minions_rejected": []}


def test_an_id_is_bound_to_its_first_key(tmp_path):
    store = keys.KeyStore(tmp_path)
    real, other = key(), key()
    store.decide("web1", real, auto_accept=True)
    assert store.decide("web1", other, auto_accept=True) == keys.Decision("denied", False)
    assert store.lookup("web1") == ("minions", real)
    assert store.listing()["minions_denied"] == ["web1"]
    assert store.delete("web1") == real and store.listing()["minions_denied"] == []
    store.decide("db1", real, auto_accept=False)
    assert store.decide("db1", other, auto_accept=False).act == "denied"
    assert store.lookup("db1") == ("minions_pre", real)


def test_accept_reject_delete_move_the_files(tmp_path):
    store = keys.KeyStore(tmp_path)
    k = key()
    store.decide("a", k, auto_accept=False)
    assert store.accept("a") == k and store.decide("a", k, False).accepted
    assert store.reject("a") == k and store.decide("a", k, False) == keys.Decision("reject", False)
    assert store.accept("a") == k
    assert store.delete("a") == k and store.lookup("a") is None
    with pytest.raises(UnknownKeyError, match="no key for minion 'a'"):
        store.accept("a")
    with pytest.raises(UnknownKeyError, match="not a valid minion id"):
        store.delete("../master")


def test_own_key_pair_is_made_once_with_a_private_secret(tmp_path):
    public, secret = keys.key_pair(tmp_path / "pki", "minion")
    assert keys.valid_key(public) and len(secret) == 40
    assert stat.S_IMODE((tmp_path / "pki" / "minion.key_secret").stat().st_mode) == 0o600
    assert keys.key_pair(tmp_path / "pki", "minion") == (public, secret)
    assert not keys.valid_key("short") and not keys.valid_key("~" * 40)


def test_master_key_is_pinned(tmp_path):
    path = tmp_path / masters.PINNED_DIR / "m1_4506.pub"
    assert masters.pinned_key(path) is None
    k = key()
    masters.pin_key(path, k)
    assert masters.pinned_key(path) == k
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_change_yields_each_key_moved_as_the_master_and_the_offline_cli_use_it(tmp_path):
    store = keys.KeyStore(tmp_path)
    a, b = key(), key()
    store.decide("a", a, auto_accept=False)
    store.decide("b", b, auto_accept=False)
    assert list(store.change("accept_all")) == [keys.KeyChange("a", "accept", a), keys.KeyChange("b", "accept", b)]
    assert list(store.change("accept_all")) == []
    assert list(store.change("reject", "a")) == [keys.KeyChange("a", "reject", a)]
    assert list(store.change("delete", "b")) == [keys.KeyChange("b", "delete", b)]
    assert store.listing() == {"minions": [], "minions_denied": [], "minions_pre": [], "minions_rejected": ["a"]}
    with pytest.raises(UnknownKeyError, match="unknown key operation 'promote'"):
        list(store.change("promote", "a"))
    with pytest.raises(UnknownKeyError, match="None is not a valid minion id"):
        list(store.change("accept"))
