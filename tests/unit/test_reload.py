"""SIGHUP's config re-read: which keys changed, who takes them, and the one line it logs."""
from __future__ import annotations

import logging
from pathlib import Path

from eventbus import config, reload

RULE = "reactor:\n  - 'a/*':\n      - fire: {tag: 'b/{{ id }}'}\n"


def write(path: Path, text: str) -> Path:
    path.write_text("root_dir: .\n" + text)
    return path


def test_changed_keys_compare_values_not_objects_and_ignore_where_the_file_is(tmp_path: Path) -> None:
    first = config.load(config.MasterConfig, write(tmp_path / "master", RULE))
    again = config.load(config.MasterConfig, tmp_path / "master")
    assert first.reactor[0] != again.reactor[0]  # compiled templates never compare equal...
    assert reload.changed_keys(first, again) == []  # ...so rules compare by their text
    write(tmp_path / "master", RULE.replace("b/", "c/") + "publish_port: 4999\n")
    assert reload.changed_keys(first, config.load(config.MasterConfig, tmp_path / "master")) == \
        ["publish_port", "reactor"]


def test_taken_keys_are_reloaded_the_rest_named_on_every_sighup_until_a_restart(tmp_path: Path, caplog) -> None:
    path = write(tmp_path / "master", "")
    reloader = reload.Reloader(config.load(config.MasterConfig, path), lambda p: config.load(config.MasterConfig, p))
    taken: list[int] = []
    reloader.take("reactor", lambda fresh: taken.append(len(fresh.reactor)) or f"rules ({len(fresh.reactor)})")
    caplog.set_level(logging.INFO, logger="eventbus.reload")
    write(path, RULE + "ret_port: 4999\n")
    reloader.reload()
    reloader.ask(1, None)  # as a signal handler: only noted...
    assert taken == [1]
    reloader.reload_if_asked()  # ...and done here: the rules are in force now, the port still waits
    path.write_text("root_dir: [\n")
    reloader.reload()
    lines = [record.getMessage() for record in caplog.records]
    assert lines[:2] == ["SIGHUP: rules (1); changed keys that need a restart: ret_port",
                         "SIGHUP: nothing to reload; changed keys that need a restart: ret_port"]
    assert len(lines) == 3 and caplog.records[2].levelno == logging.ERROR
    assert lines[2].startswith(f"SIGHUP: nothing reloaded, keeping the running config: {path}: malformed YAML")
    assert taken == [1] and len(reloader.running.reactor) == 1 and reloader.running.ret_port == 4506
