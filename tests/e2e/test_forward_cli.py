"""``eventbus forward`` as a user starts it with bad input: one clear line, non-zero exit, no traceback."""
from __future__ import annotations

import os

import pytest

from tests.helpers import run_cli, write_config


@pytest.mark.parametrize("brokers, words", [
    ([{"name": "k", "type": "kafkaa"}], "broker 'k': unknown broker type 'kafkaa'"),
    ([{"name": "c", "type": "no_such_pkg_fwd.sinks.Mine"}],
     "cannot import the sink class 'no_such_pkg_fwd.sinks.Mine'"),
    ([{"name": "w", "type": "webhook"}], "broker 'w' (type webhook): missing key 'url'"),
    ([{"name": "s", "type": "sql", "hots": "db"}], "broker 's' (type sql): unknown key 'hots'"),
    ([{"name": "f/1", "type": "file"}], "key 'name' has value 'f/1'"),
    ([{"name": "s", "type": "sql", "password_env": "NO_SUCH_VAR_FWD"}], "environment variable NO_SUCH_VAR_FWD"),
])
def test_a_bad_broker_stops_forward_with_one_line(short_tmp, brokers, words):
    conf = short_tmp / "conf"
    write_config(conf, "master", root_dir=str(short_tmp))
    write_config(conf, "forward", root_dir=str(short_tmp), brokers=brokers)
    result = run_cli("forward", "-c", str(conf))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert words in result.stderr


def test_no_forward_file_and_no_running_forwarder_are_one_line_each(short_tmp):
    conf = short_tmp / "conf"
    write_config(conf, "master", root_dir=str(short_tmp))
    result = run_cli("forward", "-c", str(conf))
    assert result.returncode == 1 and "no forward config file" in result.stderr
    write_config(conf, "forward", root_dir=str(short_tmp), brokers=[{"name": "f", "type": "file"}])
    status = run_cli("forward", "--status", "-c", str(conf))
    assert status.returncode == 1
    assert status.stderr.strip().startswith("error: eventbus forward is not running")
    assert "Traceback" not in status.stderr


def test_a_custom_class_missing_a_method_is_one_line_naming_it(short_tmp):
    (short_tmp / "halfsink.py").write_text(
        "class Half:\n"
        "    @classmethod\n"
        "    def from_endpoint_config(cls, cfg):\n        return cls()\n"
        "    def publish(self, batch):\n        pass\n"
        "    def close(self):\n        pass\n")
    conf = short_tmp / "conf"
    write_config(conf, "master", root_dir=str(short_tmp))
    write_config(conf, "forward", root_dir=str(short_tmp), brokers=[{"name": "half", "type": "halfsink.Half"}])
    result = run_cli("forward", "-c", str(conf), env=dict(os.environ, PYTHONPATH=str(short_tmp)))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert "class 'halfsink.Half' is not a sink: it has no is_ready" in result.stderr


def test_a_pasted_rasa_block_with_an_unknown_type_is_one_line(short_tmp):
    conf = short_tmp / "conf"
    write_config(conf, "master", root_dir=str(short_tmp))
    (conf / "forward").write_text(f"root_dir: {short_tmp}\nevent_broker:\n  type: Redis\n  url: localhost\n")
    result = run_cli("forward", "-c", str(conf))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "broker 'redis': unknown broker type 'Redis'" in result.stderr
