"""Config: typed values, defaults, path rules, and one clear error per bad file, key or value."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from eventbus import config
from eventbus.errors import ConfigError


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_filled_and_paths_absolute(tmp_path):
    opts = config.master_config(write(tmp_path, "master", "root_dir: /srv/eb\n"))
    assert opts["sock_dir"] == "/srv/eb/var/run/eventbus/master"
    assert opts["pki_dir"] == "/srv/eb/etc/eventbus/pki/master"
    assert opts["publish_port"] == 4505 and opts["ret_port"] == 4506
    assert opts["interface"] == "127.0.0.1"
    assert opts["auto_accept"] is False and opts["presence_events"] is False
    assert opts["max_event_size"] == 1048576
    assert opts["event_match_type"] == "startswith"
    assert opts["loop_interval"] == 60
    assert opts["log_level"] == "warning" and opts["log_file"] is None


def test_minion_defaults(tmp_path):
    opts = config.minion_config(write(tmp_path, "minion", "root_dir: /srv/eb\n"))
    assert opts["sock_dir"] == "/srv/eb/var/run/eventbus/minion"
    assert opts["master"] == "127.0.0.1"
    assert opts["id"] == __import__("socket").gethostname()


def test_relative_root_dir_is_taken_from_the_config_files_directory(tmp_path):
    (tmp_path / "conf").mkdir()
    path = write(tmp_path / "conf", "master", "root_dir: ../run\nsock_dir: s\nlog_file: log/master.log\n")
    opts = config.master_config(path)
    assert opts["root_dir"] == str(tmp_path / "run")
    assert opts["sock_dir"] == str(tmp_path / "run" / "s")
    assert opts["log_file"] == str(tmp_path / "run" / "log" / "master.log")


def test_absolute_paths_are_kept(tmp_path):
    opts = config.master_config(write(tmp_path, "master", "root_dir: /a\nsock_dir: /b/sock\n"))
    assert opts["sock_dir"] == "/b/sock"


def test_default_root_is_home_for_users_and_slash_for_root():
    settings = config.load(config.MasterConfig, None)
    expected = Path("/") if os.geteuid() == 0 else Path.home() / ".eventbus"
    assert settings.root_dir == expected


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "master", "publish_prot: 4505\n")
    with pytest.raises(ConfigError) as info:
        config.master_config(path)
    assert "unknown key 'publish_prot'" in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text, key, expected", [
    ("publish_port: abc", "publish_port", "port"),
    ("publish_port: 70000", "publish_port", "port"),
    ("auto_accept: 'yes please'", "auto_accept", "true or false"),
    ("max_event_size: -5", "max_event_size", "integer"),
    ("event_match_type: prefix", "event_match_type", "startswith"),
    ("log_level: loud", "log_level", "warning"),
    ("loop_interval: 0", "loop_interval", "positive"),
    ("interface: ''", "interface", "non-empty"),
])
def test_bad_values_name_file_key_value_and_expectation(tmp_path, text, key, expected):
    path = write(tmp_path, "master", text + "\n")
    with pytest.raises(ConfigError) as info:
        config.master_config(path)
    message = str(info.value)
    assert str(path) in message and repr(key) in message and expected in message
    assert info.value.key == key


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "master", "log_level: info\npublish_port: [4505\n")
    with pytest.raises(ConfigError) as info:
        config.master_config(path)
    assert str(path) in str(info.value) and "malformed YAML" in str(info.value)
    assert "line" in str(info.value)


def test_a_list_instead_of_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="expected a mapping"):
        config.master_config(write(tmp_path, "master", "- a\n- b\n"))


def test_empty_file_means_defaults(tmp_path):
    assert config.master_config(write(tmp_path, "master", ""))["publish_port"] == 4505


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        config.master_config(tmp_path / "nope")


def test_minion_id_must_not_be_a_glob(tmp_path):
    with pytest.raises(ConfigError, match="'id'"):
        config.minion_config(write(tmp_path, "minion", "id: 'web*'\n"))


def test_secrets_are_never_echoed(tmp_path):
    with pytest.raises(ConfigError) as info:
        config.api_config(write(tmp_path, "api", "jwt_secret: hunter2\n"))
    assert "hunter2" not in str(info.value)


def test_client_config_picks_the_schema_by_file_name(tmp_path):
    assert "id" in config.client_config(write(tmp_path, "minion", "id: m1\n"))
    assert "interface" in config.client_config(write(tmp_path, "master", ""))


def test_typed_accepts_salt_style_opts_dicts(tmp_path):
    opts = config.minion_config(write(tmp_path, "minion", "root_dir: /r\nid: m1\n"))
    settings = config.typed(opts)
    assert isinstance(settings, config.MinionConfig)
    assert settings.sock_dir == Path("/r/var/run/eventbus/minion") and settings.id == "m1"
    assert config.typed({"sock_dir": "/x"}).sock_dir == Path("/x")


def test_too_long_sock_dir_is_refused_with_the_reason():
    from eventbus.bus import wire

    with pytest.raises(ConfigError, match="too long"):
        wire.endpoints("/tmp/" + "d" * 120)


def test_sample_configs_in_the_checkout_load():
    conf = Path(__file__).resolve().parents[2] / "conf"
    for name, load in (("master", config.master_config), ("minion", config.minion_config)):
        opts = load(conf / name)
        assert opts["root_dir"] == str(conf.parent / "run"), name
        assert not opts["sock_dir"].startswith(("/etc", "/var")), name


@pytest.mark.parametrize("text, opts", [
    ("publish_prot: 4505\n", {"publish_prot": 4505}),
    ("publish_port: abc\n", {"publish_port": "abc"}),
    ("publish_port: 70000\n", {"publish_port": 70000}),
    ("auto_accept: 'yes please'\n", {"auto_accept": "yes please"}),
    ("sock_dir: 5\n", {"sock_dir": 5}),
    ("root_dir: ['a']\n", {"root_dir": ["a"]}),
])
def test_opts_dicts_are_checked_like_files_with_the_same_message(tmp_path, text, opts):
    with pytest.raises(ConfigError) as from_file:
        config.master_config(write(tmp_path, "master", text))
    with pytest.raises(ConfigError) as from_dict:
        config.typed(opts)
    in_file = str(from_file.value).split(": ", 1)[1]
    assert str(from_dict.value) == f"opts: {in_file}"
    assert from_dict.value.key == from_file.value.key


def test_opts_dicts_round_trip_and_take_paths(tmp_path):
    for name, load, cls in (("master", config.master_config, config.MasterConfig),
                            ("minion", config.minion_config, config.MinionConfig),
                            ("api", config.api_config, config.ApiConfig)):
        path = write(tmp_path, name, "root_dir: /r\nexternal_auth: {file: {alice: ['*']}}\n" if name == "api"
                     else "root_dir: /r\n")
        assert config.typed(load(path), cls) == config.load(cls, path)
    assert config.typed({"sock_dir": Path("/p/s")}).sock_dir == Path("/p/s")
    # A minion's dict given where a master's is the default is read as a minion's (get_event("minion", opts)).
    assert isinstance(config.typed({"id": "m1"}), config.MinionConfig)
    with pytest.raises(ConfigError, match="opts: key 'id'"):
        config.typed({"id": ".."}, config.MinionConfig)


def test_external_auth_is_typed_with_the_rest(tmp_path):
    api = config.load(config.ApiConfig, write(tmp_path, "api", "root_dir: /r\nexternal_auth:\n  file:\n"
                                              "    users_file: u\n    alice: ['*']\n    bob: myco/*\n"))
    backend = api.external_auth["file"]
    assert isinstance(backend, config.AuthBackend)
    assert backend.users_file == Path("/r/u") and backend.perms == {"alice": ("*",), "bob": ("myco/*",)}
    assert config.load(config.ApiConfig, write(tmp_path, "api", "")).external_auth == {}
    for text, expected in (("external_auth: {pam: {}}", "backend 'pam' is not supported"),
                           ("external_auth: {file: [alice]}", "must be a mapping with a users_file"),
                           ("external_auth: {file: {alice: [1]}}", "external_auth.file.alice must be a list"),
                           ("external_auth: [file]", "'external_auth' has value ['file']; expected a mapping")):
        with pytest.raises(ConfigError) as info:
            config.load(config.ApiConfig, write(tmp_path, "api", text + "\n"))
        assert expected in str(info.value) and str(tmp_path / "api") in str(info.value)
