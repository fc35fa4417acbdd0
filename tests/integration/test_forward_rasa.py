"""Rasa ``event_broker`` blocks pasted as they are into a ``forward`` file, against real brokers.

Each block has the shape of the example in Rasa's "Event Brokers" docs
(endpoints.yml), with this machine's values: SQLite, PostgreSQL
(127.0.0.1:5432, user postgres, trust) and RabbitMQ (127.0.0.1, guest).
"""
from __future__ import annotations

import json
import sqlite3
import uuid

import psycopg

from tests.brokers import rabbit_delete, rabbit_drain
from tests.forwardkit import Forwarder, fire_many


def deliver_one(master, pasted: str, name: str) -> None:
    forward = Forwarder(master, None, pasted=pasted).start()
    try:
        fire_many(master, 1, tag="rasa/pasted")
        forward.wait_delivered(name, 1)
    finally:
        assert forward.stop() == 0
    assert "Traceback" not in forward.log


def test_a_pasted_sql_sqlite_block_delivers(master):
    deliver_one(master, "event_broker:\n  type: SQL\n  dialect: sqlite\n  db: events.db\n", "sql")
    with sqlite3.connect(master.root / "events.db") as db:
        rows = db.execute("SELECT tag, data FROM events").fetchall()
    assert [(tag, json.loads(data)["n"]) for tag, data in rows] == [("rasa/pasted", 0)]


def test_a_pasted_sql_postgresql_block_delivers(master):
    database = "fwd_rasa_" + uuid.uuid4().hex[:10]
    with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test", autocommit=True) as db:
        db.execute(f"CREATE DATABASE {database}")
    try:
        deliver_one(master, f"""event_broker:
  type: SQL
  url: 127.0.0.1
  port: 5432
  dialect: postgresql
  username: postgres
  password: not-needed-under-trust
  db: {database}
""", "sql")
        with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname=database) as db:
            rows = db.execute("SELECT tag, data FROM events").fetchall()
        assert [(tag, data["n"]) for tag, data in rows] == [("rasa/pasted", 0)]
    finally:
        with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test", autocommit=True) as db:
            db.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def test_a_pasted_pika_block_delivers(master):
    suffix = uuid.uuid4().hex[:10]
    queue, exchange = f"fwd-rasa-{suffix}", f"fwd-rasa-{suffix}"
    try:
        deliver_one(master, f"""event_broker:
  type: pika
  url: 127.0.0.1
  username: guest
  password: guest
  queues:
    - {queue}
  #   you may supply more than one queue to publish to
  exchange_name: {exchange}
""", "pika")
        got = rabbit_drain(queue, 1)
        assert [(json.loads(m.body)["tag"], json.loads(m.body)["data"]["n"]) for m in got] == [("rasa/pasted", 0)]
    finally:
        rabbit_delete(exchange, [queue])
