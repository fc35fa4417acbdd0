"""``eventbus forward`` with a real master: file and SQLite delivery, kill -9, master restarts, the outbox bound."""
from __future__ import annotations

import sqlite3
import threading

import pytest
import zmq

from eventbus.bus import control
from eventbus.errors import DaemonRefusedError
from eventbus.event import MasterEvent
from tests.forwardkit import Forwarder, fire_many, hook_receiver, read_lines
from tests.helpers import run_cli, wait_for


def sqlite_rows(path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT seq, tag, minion_id, time, data FROM events ORDER BY seq").fetchall()


def test_file_and_sqlite_get_every_matching_event_in_bus_order(master):
    fire_many(master, 3, tag="before/start")  # a broker seen for the first time starts at the head
    brokers = [{"name": "all", "type": "file", "path": "all.jsonl"},
               {"name": "only-a", "type": "file", "path": "a.jsonl", "tags": ["a/*"], "format": "cloudevents"},
               {"name": "db", "type": "sql", "dialect": "sqlite", "db": "events.db"}]
    forward = Forwarder(master, brokers).start()
    try:
        fire_many(master, 100, tag="a/x")
        fire_many(master, 100, tag="b/y", start=100)
        forward.wait_delivered("all", 200)
        forward.wait_delivered("only-a", 100)
        forward.wait_delivered("db", 200)
        everything = read_lines(master.root / "all.jsonl")
        assert [r["data"]["n"] for r in everything] == list(range(200))
        assert [r["seq"] for r in everything] == sorted(r["seq"] for r in everything)
        assert {r["tag"] for r in everything} == {"a/x", "b/y"}
        only_a = read_lines(master.root / "a.jsonl")
        assert [e["data"]["n"] for e in only_a] == list(range(100))
        assert only_a[0]["specversion"] == "1.0" and only_a[0]["type"] == "a/x"
        assert only_a[0]["id"] == str(everything[0]["seq"])
        rows = sqlite_rows(master.root / "events.db")
        assert [r[0] for r in rows] == [r["seq"] for r in everything]
        assert rows[0][1] == "a/x" and rows[0][2] is None and rows[0][3].endswith("Z")
        status = run_cli("forward", "--status", "-c", str(forward.config_dir))
        assert status.returncode == 0, status.stderr
        assert status.stdout.splitlines() == ["all file up delivered=200 pending=0 dropped=0",
                                              "only-a file up delivered=100 pending=0 dropped=0",
                                              "db sql up delivered=200 pending=0 dropped=0"]
    finally:
        assert forward.stop() == 0
    assert "Traceback" not in forward.log
    status = run_cli("forward", "--status", "-c", str(forward.config_dir))
    assert status.returncode != 0 and "eventbus forward is not running" in status.stderr


def test_kill_9_mid_stream_loses_nothing_and_sql_holds_no_duplicate(master):
    brokers = [{"name": "file", "type": "file", "path": "out.jsonl"},
               {"name": "db", "type": "sql", "dialect": "sqlite", "db": "events.db"}]
    forward = Forwarder(master, brokers).start()
    total = 4000
    firing = threading.Thread(target=fire_many, args=(master, total))
    firing.start()
    try:
        forward.wait_delivered("db", 300)
        forward.daemon.kill()
        firing.join(60)
        forward.start()
        forward.wait_delivered("file", 1)
        wait_for(lambda: len(sqlite_rows(master.root / "events.db")) >= total, 60, what="every row in SQLite")
        wait_for(lambda: len(read_lines(master.root / "out.jsonl")) >= total, 60, what="every line in the file")
        rows = sqlite_rows(master.root / "events.db")
        assert len(rows) == total == len({r[0] for r in rows})
        lines = read_lines(master.root / "out.jsonl")
        assert [r["data"]["n"] for r in lines] == list(range(total)), "every event once, in bus order"
    finally:
        firing.join(60)
        forward.stop()


def test_a_master_restart_mid_stream_loses_nothing(master):
    forward = Forwarder(master, [{"name": "file", "type": "file", "path": "out.jsonl"}]).start()
    try:
        head = control.ping(master.sock_dir)["seq"]
        fire_many(master, 500)
        # Fired events are the bus's once the master has numbered them; stop it right after that.
        wait_for(lambda: control.ping(master.sock_dir)["seq"] >= head + 500, 30, what="the master to take 500")
        master.stop()
        master.start()
        fire_many(master, 500, start=500)
        wait_for(lambda: len(read_lines(master.root / "out.jsonl")) >= 1000, 60, what="1000 lines")
        assert [r["data"]["n"] for r in read_lines(master.root / "out.jsonl")] == list(range(1000))
    finally:
        forward.stop()


def test_past_the_outbox_bound_the_oldest_are_dropped_and_reported_and_other_brokers_keep_going(master):
    brokers = [{"name": "dead", "type": "webhook", "url": "http://127.0.0.1:9/hook", "timeout": 1,
                "retries": 0, "outbox_max_events": 10},
               {"name": "file", "type": "file", "path": "out.jsonl"}]
    with MasterEvent(master.sock_dir, opts=master.settings) as bus:
        bus.subscribe("eventbus/forward/dead/")  # keep the drop reports that come before the down one
        forward = Forwarder(master, brokers).start()
        try:
            fire_many(master, 30)
            down = bus.get_event(wait=30, tag="eventbus/forward/dead/down")
            assert down is not None and "127.0.0.1:9" in down["error"]
            lost = 0
            while lost < 20:
                dropped = bus.get_event(wait=30, tag="eventbus/forward/dead/dropped")
                assert dropped is not None, f"only {lost} drops reported"
                lost += dropped["lost"]
            assert lost == 20
            forward.wait_delivered("file", 30)
            status = run_cli("forward", "--status", "-c", str(forward.config_dir)).stdout.splitlines()
            assert status[0] == "dead webhook down delivered=0 pending=10 dropped=20"
            assert status[1] == "file file up delivered=30 pending=0 dropped=0"
            # The forwarder's own reports are never forwarded.
            assert {r["tag"] for r in read_lines(master.root / "out.jsonl")} == {"test/fwd"}
        finally:
            forward.stop()
    assert "dropped the" in forward.log and "outbox_max_events 10" in forward.log


def test_a_custom_sink_class_gets_batches(master, tmp_path):
    package = tmp_path / "mysinks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "jsonfile.py").write_text(
        "from eventbus.sink import Sink\n"
        "class Lines(Sink):\n"
        "    def __init__(self, path):\n        self.path = path\n"
        "    @classmethod\n"
        "    def from_endpoint_config(cls, cfg):\n        return cls(cfg['target'])\n"
        "    def publish(self, batch):\n"
        "        with open(self.path, 'ab') as out:\n"
        "            out.write(b''.join(o.body + b'\\n' for o in batch))\n")
    import os

    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    target = tmp_path / "custom.jsonl"
    forward = Forwarder(master, [{"name": "mine", "type": "mysinks.jsonfile.Lines", "target": str(target)}])
    forward.start(env=env)
    try:
        fire_many(master, 50)
        forward.wait_delivered("mine", 50)
        assert [r["data"]["n"] for r in read_lines(target)] == list(range(50))
    finally:
        forward.stop()


def test_a_forwarder_started_while_the_master_is_down_delivers_once_it_is_up(master):
    forward = Forwarder(master, [{"name": "file", "type": "file", "path": "out.jsonl"}]).start()
    fire_many(master, 10)
    forward.wait_delivered("file", 10)
    assert forward.stop() == 0
    master.stop()
    forward.start()  # with its cursor kept, it waits for the master instead of failing
    master.start()
    fire_many(master, 10, start=10)
    try:
        wait_for(lambda: len(read_lines(master.root / "out.jsonl")) >= 20, 30, what="20 lines")
        assert [r["data"]["n"] for r in read_lines(master.root / "out.jsonl")] == list(range(20))
    finally:
        assert forward.stop() == 0


def test_log_file_and_secrets_from_a_file_and_the_environment(master, tmp_path):
    """``log_file`` is the forwarder's log (not the key ``log`` read from a file); ``secret_file`` and
    ``secret_env`` are the webhook's ``secret``, which signs every POST and never reaches the log."""
    import hashlib
    import hmac
    import json
    import os

    file_secret, env_secret = "file-secret-7f3a9c", "env-secret-2b8d4e"
    (tmp_path / "hook.secret").write_text(file_secret + "\n")
    with hook_receiver() as hook:
        url = f"http://127.0.0.1:{hook.server_address[1]}"
        forward = Forwarder(master, [
            {"name": "from-file", "type": "webhook", "url": url + "/f", "secret_file": str(tmp_path / "hook.secret")},
            {"name": "from-env", "type": "webhook", "url": url + "/e", "secret_env": "FWD_TEST_HOOK_SECRET"}],
            log_file="forward.log")
        forward.start(env=dict(os.environ, FWD_TEST_HOOK_SECRET=env_secret))
        try:
            fire_many(master, 3)
            forward.wait_delivered("from-file", 3)
            forward.wait_delivered("from-env", 3)
        finally:
            assert forward.stop() == 0
    log = (master.root / "forward.log").read_text()
    assert "eventbus forward ready: 2 brokers" in log and "Traceback" not in forward.log
    for path, secret in (("/f", file_secret), ("/e", env_secret)):
        posts = [(h, b) for p, h, b in hook.received if p == path]
        assert [json.loads(b)["data"]["n"] for _, b in posts] == [0, 1, 2]
        for headers, body in posts:
            signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            assert headers["x-hub-signature"] == f"sha256={signature}"
        assert secret not in log and secret not in forward.log


def test_a_custom_class_that_does_not_subclass_sink_gets_batches(master, tmp_path):
    """SPEC 8 asks only for the four methods; no ``KEYS``, no ``BODY``: it gets every key and the body."""
    (tmp_path / "plainsinks.py").write_text(
        "import json\n"
        "class Lines:\n"
        "    def __init__(self, path):\n        self.path = path\n"
        "    @classmethod\n"
        "    def from_endpoint_config(cls, cfg):\n        return cls(cfg['target'])\n"
        "    def publish(self, batch):\n"
        "        with open(self.path, 'ab') as out:\n"
        "            out.write(b''.join(o.body + b'\\n' for o in batch))\n"
        "    def is_ready(self):\n        return True\n"
        "    def close(self):\n        pass\n")
    import os

    forward = Forwarder(master, [{"name": "plain", "type": "plainsinks.Lines", "target": str(tmp_path / "plain.jsonl")}])
    forward.start(env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    try:
        fire_many(master, 30)
        forward.wait_delivered("plain", 30)
        assert [r["data"]["n"] for r in read_lines(tmp_path / "plain.jsonl")] == list(range(30))
    finally:
        assert forward.stop() == 0
    assert "Traceback" not in forward.log


def test_the_forwarder_answers_control_requests_as_the_master_does(master):
    """Unknown verbs refused in the same words, a malformed request logged once and unanswered, the socket alive."""
    forward = Forwarder(master, [{"name": "out", "type": "file", "path": "out.jsonl"}]).start()
    try:
        reasons = []
        for sock_dir in (master.sock_dir, forward.sock_dir):
            with pytest.raises(DaemonRefusedError) as refused:
                control.request(sock_dir, b"no-such-verb", timeout=5)
            reasons.append(refused.value.reason)
        assert reasons[0] == reasons[1] == "unknown verb b'no-such-verb'"
        context = zmq.Context()
        try:
            dealer = context.socket(zmq.DEALER)
            dealer.connect(f"ipc://{forward.sock_dir}/ctl.ipc")
            dealer.send(b"one frame only")
            wait_for(lambda: "malformed control request" in forward.log, 10, what="the forwarder to log it")
            assert not dealer.poll(0)
            dealer.close(0)
        finally:
            context.term()
        assert control.ping(forward.sock_dir)["node"] == "forward"
    finally:
        assert forward.stop() == 0
    assert "Traceback" not in forward.log
