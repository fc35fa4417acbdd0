"""The minion's ``master`` key as a list (SPEC 12): items, ports, pins, and one error naming the key for each mistake."""
from __future__ import annotations

import pytest
import yaml

from eventbus import config
from eventbus.errors import ConfigError
from eventbus.masters import MasterAddress


def load(tmp_path, **keys) -> config.MinionConfig:
    (tmp_path / "minion").write_text(yaml.safe_dump({"id": "web1", "ret_port": 4600, "publish_port": 4601, **keys}))
    return config.load(config.MinionConfig, tmp_path / "minion")


def test_a_plain_host_is_one_master_on_the_minions_ports(tmp_path):
    settings = load(tmp_path, master="salt.example")
    assert settings.masters == (MasterAddress("salt.example", 4600, 4601),)
    assert settings.master_type == "str" and settings.alive_interval == settings.heartbeat_interval == 5.0


def test_each_kind_of_item_and_the_ports_left_out(tmp_path):
    settings = load(tmp_path, master=["m1", "m2:5000", {"host": "m3", "ret_port": 6000, "publish_port": 6001},
                                      {"host": "m4", "pubkey": "k" * 40}],
                    master_type="failover", master_alive_interval=2, master_failback=True)
    assert settings.masters == (MasterAddress("m1", 4600, 4601), MasterAddress("m2", 5000, 4601),
                                MasterAddress("m3", 6000, 6001), MasterAddress("m4", 4600, 4601, "k" * 40))
    assert [m.name for m in settings.masters] == ["m1:4600", "m2:5000", "m3:6000", "m4:4600"]
    assert settings.alive_interval == 2.0 and settings.master_failback
    # An opts dict made from it reads back the same (Salt-style handles take those).
    assert config.typed(config.to_dict(settings), config.MinionConfig).masters == settings.masters


def test_pins_one_file_for_one_master_and_one_each_under_masters_for_several(tmp_path):
    one, other = MasterAddress("m1", 4506, 4505), MasterAddress("m2", 4507, 4505)
    assert one.pin_path(tmp_path, several=False) == tmp_path / "minion_master.pub"
    assert {one.pin_path(tmp_path, True), other.pin_path(tmp_path, True)} == {
        tmp_path / "masters" / "m1_4506.pub", tmp_path / "masters" / "m2_4507.pub"}


@pytest.mark.parametrize("value, says", [
    (["m1", None], "item 2: an item is empty"),
    (["m1", ""], "item 2: a host is empty"),
    (["m1", "m1:4600"], "item 2: m1:4600 is listed twice"),
    (["m1", {"host": "m1"}], "item 2: m1:4600 is listed twice"),
    (["m1", "m2:0"], "0 is not a TCP port"),
    (["m1", "m2:70000"], "70000 is not a TCP port"),
    (["m1", "m2:http"], "bad port 'http'"),
    (["m1", {"host": "m2", "ret_port": "x"}], "ret_port 'x' is not a TCP port"),
    (["m1", {"host": "m2", "port": 1}], "unknown item key 'port'"),
    (["m1", {"ret_port": 1}], "a host is empty"),
    ([], "the list is empty"),
    ({"host": "m1"}, "neither a host nor a list"),
    ("m 1", "holds ' '"),
    ("", "a host is empty"),
])
def test_a_bad_master_list_is_one_error_naming_the_key(tmp_path, value, says):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, master=value)
    message = str(caught.value)
    assert "key 'master'" in message and says in message and "\n" not in message
    assert caught.value.key == "master"


@pytest.mark.parametrize("keys, name", [
    ({"master_type": "hot"}, "master_type"),
    ({"master_alive_interval": 0}, "master_alive_interval"),
    ({"master_failback": "yes"}, "master_failback"),
    ({"master": ["m1", "m2"], "master_pubkey": "k" * 40}, "master_pubkey"),
])
def test_the_other_fleet_keys_say_which_key_is_wrong(tmp_path, keys, name):
    with pytest.raises(ConfigError, match=f"key '{name}'") as caught:
        load(tmp_path, **keys)
    assert caught.value.key == name


def test_a_master_has_an_id_too(tmp_path):
    (tmp_path / "master").write_text("id: master-east\n")
    assert config.load(config.MasterConfig, tmp_path / "master").id == "master-east"
    (tmp_path / "master").write_text("id: 'a b'\n")
    with pytest.raises(ConfigError, match="key 'id'"):
        config.load(config.MasterConfig, tmp_path / "master")
