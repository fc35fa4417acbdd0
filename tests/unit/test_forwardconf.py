"""The forward config: brokers typed, bad values named with file and key, secrets from files and the environment."""
from __future__ import annotations

import pytest
import yaml

from daemon.forward import registry
from daemon.forward.worker import Backoff, redact
from eventbus import forwardconf
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
