"""The forward config: brokers typed, bad values named with file and key, secrets from files and the environment."""
from __future__ import annotations

import pytest
import yaml

from eventbus.daemon.forward import registry
from eventbus.daemon.forward.worker import Backoff, redact
from eventbus.forwarding import config as forwardconf
from eventbus.errors import ConfigError


def write(tmp_path, **keys):
    path = tmp_path / "forward"
    path.write_text(yaml.safe_dump(keys))
    return path


def test_defaults_and_common_keys(tmp_path):
    settings = forwardconf.load(write(tmp_path, root_dir=".", brokers=[{"name": "f", "type": "file"}]))
    broker = settings.brokers[0]
    assert (broker.tags, broker.format, broker.outbox_max_events) == (("*",), "salt", 1_000_000)
    assert settings.master_config == tmp_path / "master"
    assert settings.state_dir == tmp_path.resolve() / "var/cache/eventbus/forward"


@pytest.mark.parametrize("brokers, words", [
    ([{"name": "a b", "type": "file"}], "key 'name' has value 'a b'"),
    ([{"name": "a", "type": "file"}, {"name": "a", "type": "sql"}], "two brokers are named 'a'"),
    ([{"name": "a"}], "broker 'a': missing key 'type'"),
    ([{"name": "a", "type": "file", "format": "xml"}], "key 'format' has value 'xml'"),
    ([{"name": "a", "type": "file", "outbox_max_events": 0}], "key 'outbox_max_events' has value 0"),
    ([{"name": "a", "type": "file", "tags": []}], "key 'tags' has value []"),
    ("file", "key 'brokers' has value 'file'"),
])
def test_bad_brokers_are_named(tmp_path, brokers, words):
    path = write(tmp_path, brokers=brokers)
    with pytest.raises(ConfigError) as caught:
        forwardconf.load(path)
    assert words in str(caught.value) and str(path) in str(caught.value)


def test_an_unknown_top_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'brokerz'"):
        forwardconf.load(write(tmp_path, brokerz=[]))


def test_secrets_come_from_a_file_or_the_environment_and_are_remembered_as_secrets(tmp_path, monkeypatch):
    (tmp_path / "pw").write_text("from-a-file\n")
    monkeypatch.setenv("FWD_SECRET", "from-the-env")
    settings = forwardconf.load(write(tmp_path, brokers=[
        {"name": "s", "type": "sql", "password_file": str(tmp_path / "pw")},
        {"name": "w", "type": "webhook", "url": "http://u:inurl@h/", "secret_env": "FWD_SECRET"}]))
    sql, hook = settings.brokers
    assert sql.options["password"] == "from-a-file" and "from-a-file" in sql.secrets
    assert hook.options["secret"] == "from-the-env"
    assert set(hook.secrets) >= {"from-the-env", "inurl"}


def test_a_missing_environment_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_FWD_VAR", raising=False)
    with pytest.raises(ConfigError, match="key 'password_env': environment variable NO_SUCH_FWD_VAR is not set"):
        forwardconf.load(write(tmp_path, brokers=[{"name": "s", "type": "sql", "password_env": "NO_SUCH_FWD_VAR"}]))


def test_type_keys_are_checked_by_the_sink_class():
    with pytest.raises(ConfigError, match="broker 'w' .*: missing key 'url'"):
        registry.sink_class("webhook", "w").options({"name": "w", "type": "webhook"})
    with pytest.raises(ConfigError, match="unknown key 'pasword'"):
        registry.sink_class("sql", "s").options({"name": "s", "type": "sql", "pasword": "x"})


@pytest.mark.parametrize("kind, words", [
    ("kafkaa", "unknown broker type 'kafkaa'"),
    ("no_such_pkg.mod.Sink", "cannot import the sink class 'no_such_pkg.mod.Sink'"),
    ("json.NoClass", "module 'json' has no class 'NoClass'"),
    ("json.JSONDecoder", "is not a sink: it has no from_endpoint_config"),
])
def test_a_type_that_is_no_sink_is_one_line(kind, words):
    with pytest.raises(ConfigError, match=words):
        registry.sink_class(kind, "b")


def test_redaction_hides_secrets_and_url_passwords():
    text = redact("login as bob with hunter2hunter2 to postgresql://bob:pw9@db/x failed", ("hunter2hunter2",))
    assert "hunter2" not in text and "pw9" not in text and "bob" in text


def test_backoff_grows_to_its_cap_with_jitter():
    backoff = Backoff(0.1, 2.0)
    delays = [backoff.next() for _ in range(10)]
    assert 0.05 <= delays[0] <= 0.1 and all(1.0 <= d <= 2.0 for d in delays[6:])
    backoff.reset()
    assert backoff.next() <= 0.1


# -- KEY_file / KEY_env: a key that is itself a known key of its block keeps its own meaning -----------------


def sink_module(tmp_path, monkeypatch, name: str, source: str) -> str:
    """A module ``name`` in ``tmp_path`` (on sys.path for this test only) holding ``source``."""
    import sys

    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_log_file_is_the_log_file_not_the_key_log_read_from_a_file(tmp_path):
    settings = forwardconf.load(write(tmp_path, root_dir=".", log_file="forward.log",
                                      brokers=[{"name": "f", "type": "file"}]))
    assert settings.log_file == tmp_path.resolve() / "forward.log"


def test_a_top_key_may_itself_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FWD_LOG_FILE", "from-env.log")
    settings = forwardconf.load(write(tmp_path, root_dir=".", log_file_env="FWD_LOG_FILE"))
    assert settings.log_file == tmp_path.resolve() / "from-env.log"


def test_a_key_and_its_indirect_form_together_are_refused(tmp_path):
    (tmp_path / "pw").write_text("x")
    with pytest.raises(ConfigError, match="both 'password' and 'password_file' are given"):
        forwardconf.load(write(tmp_path, brokers=[{"name": "s", "type": "sql", "password": "y",
                                                   "password_file": str(tmp_path / "pw")}]))
    with pytest.raises(ConfigError, match="both 'password_env' and 'password_file' are given"):
        forwardconf.load(write(tmp_path, brokers=[{"name": "s", "type": "sql", "password_env": "HOME",
                                                   "password_file": str(tmp_path / "pw")}]))


def test_a_file_path_key_may_come_from_a_file(tmp_path):
    (tmp_path / "where").write_text("elsewhere.jsonl\n")
    settings = forwardconf.load(write(tmp_path, brokers=[{"name": "f", "type": "file",
                                                          "path_file": str(tmp_path / "where")}]))
    assert settings.brokers[0].options["path"] == "elsewhere.jsonl"


def test_a_custom_class_key_ending_in_file_is_its_own_key_when_the_class_declares_it(tmp_path, monkeypatch):
    module = sink_module(tmp_path, monkeypatch, "fwd_certsink", (
        "from eventbus.sink import Sink\n"
        "class Declared(Sink):\n"
        "    KEYS = {'cert_file': None, 'token': None}\n"
        "class Open(Sink):\n"
        "    pass\n"))
    (tmp_path / "token.txt").write_text("tok-from-file\n")
    settings = forwardconf.load(write(tmp_path, brokers=[
        {"name": "declared", "type": f"{module}.Declared", "cert_file": "/etc/ssl/client.pem",
         "token_file": str(tmp_path / "token.txt")},
        {"name": "open", "type": f"{module}.Open", "cert_file": str(tmp_path / "token.txt")}]))
    declared, open_ = settings.brokers
    assert declared.options["cert_file"] == "/etc/ssl/client.pem" and "cert" not in declared.options
    assert declared.options["token"] == "tok-from-file" and "tok-from-file" in declared.secrets
    assert open_.options["cert"] == "tok-from-file" and "cert_file" not in open_.options


def test_the_resolver_is_one_function_of_a_block_and_its_known_keys(tmp_path, monkeypatch):
    from eventbus import secretref

    (tmp_path / "s").write_text(" s3cret \n")
    monkeypatch.setenv("FWD_TOKEN", "t0ken")
    block, secrets = secretref.resolve(
        {"log_file": "x.log", "secret_file": str(tmp_path / "s"), "token_env": "FWD_TOKEN", "plain": 1},
        {"log_file"}, "forward", "")
    assert block == {"log_file": "x.log", "secret": "s3cret", "token": "t0ken", "plain": 1}
    assert set(secrets) == {"s3cret", "t0ken"}


# -- custom classes that do not subclass Sink ---------------------------------------------------------------


def test_a_plain_class_missing_a_method_is_named_with_the_method(tmp_path, monkeypatch):
    module = sink_module(tmp_path, monkeypatch, "fwd_halfsink", (
        "class Half:\n"
        "    @classmethod\n"
        "    def from_endpoint_config(cls, cfg):\n        return cls()\n"
        "    def publish(self, batch):\n        pass\n"
        "    def close(self):\n        pass\n"))
    with pytest.raises(ConfigError, match=rf"class '{module}.Half' is not a sink: it has no is_ready$"):
        forwardconf.load(write(tmp_path, brokers=[{"name": "h", "type": f"{module}.Half"}]))
