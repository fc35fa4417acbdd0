"""``eventbus forward`` started once with every key set to a non-default valid value: the file's own keys,
every common broker key and each started broker type's ``KEYS``, each seen to take effect (see
test_every_key.py for the rules)."""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
import sqlite3
import uuid
from typing import Any, Iterator

import psycopg
import pytest

from eventbus import configdoc, event
from eventbus.bus import control, wire
from eventbus.forwarding import config as forwardconf
from eventbus.sink import COMMON_KEYS
from tests.forwardkit import hook_receiver
from tests.helpers import Daemon, Node, free_port, run_cli, short_tmpdir, wait_for, write_config
from tests.integration.test_every_key import Seen, at_default, logged
from tests.integration.test_every_key_brokers import COVERED as BROKERS_COVERED


def builtin_types() -> list[str]:
    from eventbus.daemon.forward import registry

    return list(registry.BUILTIN)


def registry_keys(kind: str) -> dict[str, Any]:
    """Broker type ``kind``'s keys and their defaults, as its sink declares them."""
    from eventbus.daemon.forward import registry

    return dict(registry.sink_class(kind, kind).KEYS or {})


def type_keys(kind: str) -> list[str]:
    """The keys of broker type ``kind`` besides the common ones."""
    return [key for key in registry_keys(kind) if key not in COMMON_KEYS]


def forward_keys(master_config: str, brokers: list[dict]) -> dict[str, Any]:
    return {"root_dir": "root", "master_config": master_config, "log_file": "logs/forward.log", "log_level": "info",
            "brokers": brokers,
            # Rasa's form of one more broker: named after its type, lower-cased.
            forwardconf.RASA_KEY: {"type": "File", "path": "out/rasa.jsonl", "tags": ["keys/*"]}}


def top_keys() -> set[str]:
    """The keys of the forward file: its settings, and its two ways of giving brokers."""
    return set(configdoc.keys_of("forward")) | {"brokers", forwardconf.RASA_KEY}


# Each type started here: its blocks (given the webhook receiver's port, the PostgreSQL database and an SQLite
# file), together every key of the type; and, over all types, every common key.
BROKER_TYPES = {
    "file": lambda port, db, lite: [
        {"name": "f", "type": "file", "path": "out/events.jsonl", "max_bytes": 2000, "backups": 1,
         "tags": ["keys/*"], "format": "cloudevents", "outbox_max_events": 500}],
    "sql": lambda port, db, lite: [
        {"name": "pg", "type": "sql", "dialect": "postgresql", "host": "127.0.0.1", "port": 5432, "db": db,
         "username": "postgres", "password": "trust-ignores-it", "query": {"application_name": "eventbus-keys"}},
        {"name": "lite", "type": "sql", "url": f"sqlite:///{lite}"}],
    "webhook": lambda port, db, lite: [
        {"name": "hook", "type": "webhook", "url": f"http://127.0.0.1:{port}/hook", "secret": "keys-shared-secret",
         "mode": "binary", "timeout": 3, "retries": 1, "format": "cloudevents"},
        {"name": "down", "type": "webhook", "url": f"http://127.0.0.1:{free_port()}/", "outbox_max_events": 5}],
}
# Common keys this test cannot set, each with the test that sets it and sees it take effect.
COMMON_ELSEWHERE = {"source": "test_cluster_forward.py: 'fleet' needs a master with cluster, on a NATS cluster"}
# Types whose brokers no every-key test starts, each with the reason; test_every_key_brokers.py starts the
# types in BROKERS_COVERED, each with every key set.
NOT_STARTED: dict[str, str] = {}


def test_every_declared_key_has_a_value_here():
    assert set(forward_keys("m", [])) == top_keys()
    assert at_default("forward", forward_keys("m", [])) == []
    assert set(BROKER_TYPES) | set(NOT_STARTED) | set(BROKERS_COVERED) == set(builtin_types()), \
        "each built-in broker type, one way or other"
    common: set[str] = set()
    for kind, blocks in BROKER_TYPES.items():
        given = {key for block in blocks(1, "db", "/x.db") for key in block}
        defaults = registry_keys(kind)
        assert not [key for block in blocks(1, "db", "/x.db") for key, value in block.items()
                    if key in defaults and key != "type" and value == defaults[key]], f"type {kind}: a default value"
        assert given - set(COMMON_KEYS) == set(type_keys(kind)), f"type {kind}: {sorted(set(type_keys(kind)) ^ given)}"
        common |= given & set(COMMON_KEYS)
    assert common == set(COMMON_KEYS) - set(COMMON_ELSEWHERE)


@pytest.fixture
def pg_database() -> Iterator[str]:
    name = f"eb_keys_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test", autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    yield name
    with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test", autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_forward_with_every_key_set(pg_database):
    root = short_tmpdir("ebkf")
    master = Node(root, "master")
    fwd_conf = root / "fwdconf"
    home = fwd_conf / "root"
    fwd_log, lite = home / "logs/forward.log", root / "lite.db"
    common = [key for key in COMMON_KEYS if key not in COMMON_ELSEWHERE]
    seen = Seen("forward", (*top_keys(), *common, *(key for kind in BROKER_TYPES for key in type_keys(kind))))
    forward = None
    with hook_receiver(failures=2) as hook:  # retries: 1 gives up after 2 tries (the default 3: after 4)
        brokers = [block for make in BROKER_TYPES.values()
                   for block in make(hook.server_address[1], pg_database, lite)]
        path = write_config(fwd_conf, "forward", **forward_keys("../conf/master", brokers))
        try:
            master.start()
            forward = Daemon.eventbus("forward", fwd_conf).start()
            wait_for(lambda: forward.check_alive() or (home / "var/run/eventbus/forward/ctl.ipc").exists(), 20,
                     what="the forwarder's control socket under root_dir")
            wait_for(lambda: logged(fwd_log, "eventbus forward ready"), what="the forwarder's lines in log_file")
            assert "eventbus forward ready" not in forward.log and "[INFO]" in fwd_log.read_text()
            seen("root_dir", "log_file", "log_level", "brokers")

            def delivered(name: str) -> int:
                brokers = control.request(home / "var/run/eventbus/forward", wire.VERB_STATS, timeout=5)["brokers"]
                return next(b["delivered"] for b in brokers if b["name"] == name)
            # Three rounds of 7 events, each delivered before the next: the file sink rotates between batches.
            with event.get_event("master", opts=master.opts(), listen=False) as bus:
                for n in range(21):
                    assert bus.fire_event({"n": n, "pad": "p" * 100}, "keys/fwd", timeout=3000)
                    if n % 7 == 6:
                        wait_for(lambda: delivered("f") == n + 1, 30, what=f"{n + 1} events in the file")
                assert bus.fire_event({"n": -1}, "other/fwd", timeout=3000)
            seen("master_config")  # the master at ../conf/master, relative to the forward file

            def status() -> dict[str, str]:
                done = run_cli("forward", "--status", "-c", str(fwd_conf))
                assert done.returncode == 0, done.stderr
                return {line.split()[0]: line for line in done.stdout.splitlines()}
            lines = wait_for(lambda: (s := status()) and all(
                f"delivered={22 if name in ('pg', 'lite', 'hook') else 21}" in s[name]
                for name in ("f", "pg", "lite", "hook", "file")) and s, 60, what="every broker to deliver")
            assert lines["f"].startswith("f file up") and lines["pg"].startswith("pg sql up")
            assert lines["file"].startswith("file file up") and (home / "out/rasa.jsonl").exists()
            seen("name", "type", forwardconf.RASA_KEY)
            # 22 events, a bound of 5 waiting: the rest dropped, counted. A batch the failing broker holds
            # in delivery at the last append is not droppable then (at most the 5 it could read).
            def held_and_dropped() -> tuple[int, int] | None:
                found = re.search(r"pending=(\d+) dropped=(\d+)", status()["down"])
                counts = (int(found[1]), int(found[2])) if found else None
                return counts if counts and sum(counts) == 22 and 5 <= counts[0] <= 10 else None
            wait_for(held_and_dropped, 30, what="the bound")
            seen("outbox_max_events")

            out = home / "out/events.jsonl"
            records = [json.loads(line) for p in (out.with_name("events.jsonl.1"), out) if p.exists()
                       for line in p.read_text().splitlines()]
            assert {r["type"] for r in records} == {"keys/fwd"} and {r["specversion"] for r in records} == {"1.0"}
            assert [r["data"]["n"] for r in records] == list(range(7, 21)), "the first round rotated away"
            assert not out.with_name("events.jsonl.2").exists()
            seen("path", "max_bytes", "backups", "tags", "format")

            with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname=pg_database) as db:
                assert db.execute("SELECT count(*) FROM events WHERE tag = 'keys/fwd'").fetchone()[0] == 21
                named = db.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
                                   "application_name = 'eventbus-keys'", (pg_database,)).fetchone()[0]
            assert named >= 1, "query's options reach the connection"
            seen("dialect", "host", "port", "db", "username", "password", "query")
            with sqlite3.connect(lite) as db:
                assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 22
            seen("url")

            posted = [(headers, body) for where, headers, body in hook.received if where == "/hook"]
            assert len(posted) == 22 and posted[0][0]["ce-specversion"] == "1.0", "binary mode: ce-* headers"
            for headers, body in posted:
                assert headers["x-hub-signature"] == "sha256=" + hmac.new(b"keys-shared-secret", body,
                                                                          hashlib.sha256).hexdigest()
            seen("mode", "secret")
            assert "broker hook (webhook) is down" in fwd_log.read_text(), "2 failed tries: the batch failed"
            seen("retries")
            # timeout shows only against a receiver that does not answer (seconds of waiting): what the
            # loaded config made of it.
            settings = forwardconf.load(path)
            assert next(b.options for b in settings.brokers if b.name == "hook")["timeout"] == 3
            seen("timeout")
            seen.done()
        except BaseException:
            print(f"--- forward log_file (end) ---\n{fwd_log.read_text()[-4000:] if fwd_log.exists() else ''}")
            print(f"--- forward stderr ---\n{forward.log[-3000:] if forward else ''}")
            raise
        finally:
            if forward is not None:
                forward.stop()
            master.stop()
            master.cleanup()
            shutil.rmtree(root, ignore_errors=True)
