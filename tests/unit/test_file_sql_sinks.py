"""The file and SQLite sinks on their own: rotation, a redelivered batch written once, the table's columns."""
from __future__ import annotations

import json
import sqlite3

from eventbus.daemon.forward.sinks.file import FileSink
from eventbus.daemon.forward.sinks.sql import SqlSink
from eventbus.daemon.forward import registry
from eventbus.forwarding import config as forwardconf, formats

STAMP = "2026-11-21T09:19:17.751376"


def batch(first: int, last: int, fmt: str = "salt") -> list:
    return [formats.outgoing(seq, "t/x", {"n": seq, "_stamp": STAMP}, fmt) for seq in range(first, last + 1)]


def test_the_file_rotates_by_size_and_keeps_its_backups(tmp_path):
    sink = FileSink.from_endpoint_config({"path": "out.jsonl", "max_bytes": 1000, "backups": 2,
                                          "root_dir": str(tmp_path)})
    for first in range(1, 200, 10):
        sink.publish(batch(first, first + 9))
    sink.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["out.jsonl", "out.jsonl.1", "out.jsonl.2"]
    newest = [json.loads(line)["seq"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    older = [json.loads(line)["seq"] for line in (tmp_path / "out.jsonl.1").read_text().splitlines()]
    assert older + newest == list(range(older[0], 201)), "consecutive across the rotation"
    assert (tmp_path / "out.jsonl.1").stat().st_size >= 1000


def test_a_batch_delivered_again_after_a_restart_is_not_written_twice(tmp_path):
    config = {"path": str(tmp_path / "out.jsonl")}
    first = FileSink.from_endpoint_config(config)
    first.publish(batch(1, 5))
    first.close()  # as if killed after writing but before the outbox heard of it
    again = FileSink.from_endpoint_config(config)
    again.publish(batch(1, 8))
    again.close()
    assert [json.loads(line)["seq"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == list(range(1, 9))


def test_sqlite_rows_have_the_spec_columns_and_a_redelivery_inserts_nothing(tmp_path):
    sink = SqlSink.from_endpoint_config({"dialect": "sqlite", "db": "ev.db", "root_dir": str(tmp_path)})
    relayed = formats.outgoing(9, "myco/hello", {"cmd": "_minion_event", "id": "web1", "_stamp": STAMP})
    sink.publish(batch(1, 3) + [relayed])
    sink.publish(batch(2, 3) + [relayed])
    sink.close()
    with sqlite3.connect(tmp_path / "ev.db") as db:
        rows = db.execute("SELECT seq, tag, minion_id, time, data FROM events ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == [1, 2, 3, 9]
    assert rows[0][1:4] == ("t/x", None, "2026-11-21T09:19:17.751376Z")
    assert json.loads(rows[0][4]) == {"n": 1, "_stamp": STAMP}
    assert rows[3][2] == "web1"


def test_sqlite_keeps_any_bus_value_as_json_text_that_reads_back(tmp_path):
    sink = SqlSink.from_endpoint_config({"dialect": "sqlite", "db": "ev.db", "root_dir": str(tmp_path)})
    data = {"big": 2 ** 70, "name": "Zoë", "raw": b"\x01", "_stamp": STAMP}
    sink.publish([formats.outgoing(1, "t/é", data)])
    sink.close()
    with sqlite3.connect(tmp_path / "ev.db") as db:
        tag, text = db.execute("SELECT tag, data FROM events").fetchone()
    assert tag == "t/é"
    assert json.loads(text) == {"big": 2 ** 70, "name": "Zoë", "raw": str(b"\x01"), "_stamp": STAMP}


def test_default_files_follow_the_usual_layout_under_root_dir(tmp_path):
    """With root_dir / these are /var/log/eventbus/... and /var/lib/eventbus/..., never files at the root."""
    (tmp_path / "forward").write_text("root_dir: root\nbrokers:\n  - {name: f, type: file}\n"
                                      "  - {name: d, type: sql, dialect: sqlite}\n")
    settings = forwardconf.load(tmp_path / "forward")
    for broker in settings.brokers:
        sink = registry.sink_class(broker.type, broker.name).from_endpoint_config(dict(broker.options))
        sink.publish(batch(1, 2))
        sink.close()
    root = tmp_path / "root"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "var/lib/eventbus/forward/events.db", "var/log/eventbus/forwarded_events.log"]


def test_a_tilde_user_of_no_user_is_a_path_under_root_dir_for_file_and_sqlite_alike(tmp_path):
    """F15: ``~nobody-here/...`` (no such user) stays as written, under root_dir, in both file brokers; a
    SQLite ``db`` like that was a RuntimeError from pathlib that ended the broker's start."""
    (tmp_path / "forward").write_text("root_dir: root\nbrokers:\n  - {name: f, type: file, path: ~no-such-user-here/f.log}\n"
                                      "  - {name: d, type: sql, dialect: sqlite, db: ~no-such-user-here/e.db}\n")
    for broker in forwardconf.load(tmp_path / "forward").brokers:
        sink = registry.sink_class(broker.type, broker.name).from_endpoint_config(dict(broker.options))
        sink.publish(batch(1, 2))
        sink.close()
    assert sorted(p.name for p in (tmp_path / "root" / "~no-such-user-here").iterdir()) == ["e.db", "f.log"]
