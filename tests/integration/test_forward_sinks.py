"""Sinks against real services: PostgreSQL (through a proxy we cut), refused credentials, webhooks that fail."""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid

import psycopg
import pytest

from eventbus.event import MasterEvent
from tests.forwardkit import Forwarder, TcpProxy, fire_many, hook_receiver
from tests.helpers import run_cli, wait_for

PG = ("127.0.0.1", 5432)


@pytest.fixture
def pg_schema():
    """A schema of its own in database ``test``, so parallel runs never share table ``events``."""
    name = "fwd_" + uuid.uuid4().hex[:10]
    with psycopg.connect(host=PG[0], port=PG[1], user="postgres", dbname="test", autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {name}")
    yield name
    with psycopg.connect(host=PG[0], port=PG[1], user="postgres", dbname="test", autocommit=True) as db:
        db.execute(f"DROP SCHEMA {name} CASCADE")


def pg_rows(schema: str) -> list[tuple]:
    with psycopg.connect(host=PG[0], port=PG[1], user="postgres", dbname="test") as db:
        try:
            return db.execute(f"SELECT seq, tag, minion_id, time, data FROM {schema}.events ORDER BY seq").fetchall()
        except psycopg.errors.UndefinedTable:
            return []


def pg_url(schema: str, port: int = PG[1]) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/test?options=-csearch_path%3D{schema}"


def test_postgresql_gets_every_event_across_an_outage_without_a_duplicate(master, pg_schema):
    proxy = TcpProxy(PG[1], PG[0]).start()
    forward = Forwarder(master, [{"name": "pg", "type": "sql", "url": pg_url(pg_schema, proxy.port)}])
    with MasterEvent(master.sock_dir, opts=master.settings) as bus:
        bus.subscribe("eventbus/forward/pg/")
        forward.start()
        try:
            fire_many(master, 100)
            forward.wait_delivered("pg", 100)
            proxy.cut()
            fire_many(master, 300, start=100)
            down = bus.get_event(wait=60, tag="eventbus/forward/pg/down")
            assert down is not None and down["error"]
            wait_for(lambda: forward.stats()["pg"]["pending"] == 300, 30, what="300 events waiting in the outbox")
            assert forward.stats()["pg"]["state"] == "down"
            proxy.restore()
            assert bus.get_event(wait=60, tag="eventbus/forward/pg/up") is not None
            forward.wait_delivered("pg", 400)
        finally:
            forward.stop()
            proxy.close()
    rows = pg_rows(pg_schema)
    assert [r[4]["n"] for r in rows] == list(range(400))
    assert rows[0][1] == "test/fwd" and rows[0][2] is None
    with psycopg.connect(host=PG[0], port=PG[1], user="postgres", dbname="test") as db:
        kind = db.execute("SELECT data_type FROM information_schema.columns WHERE table_schema = %s "
                          "AND table_name = 'events' AND column_name = 'data'", (pg_schema,)).fetchone()
    assert kind == ("jsonb",)


def test_kill_9_mid_stream_leaves_no_duplicate_in_postgresql(master, pg_schema):
    forward = Forwarder(master, [{"name": "pg", "type": "sql", "url": pg_url(pg_schema)}]).start()
    firing = threading.Thread(target=fire_many, args=(master, 3000))
    firing.start()
    try:
        forward.wait_delivered("pg", 200)
        forward.daemon.kill()
        firing.join(60)
        forward.start()
        wait_for(lambda: len(pg_rows(pg_schema)) >= 3000, 60, what="3000 rows")
    finally:
        firing.join(60)
        forward.stop()
    assert [r[4]["n"] for r in pg_rows(pg_schema)] == list(range(3000))


def test_refused_credentials_are_a_down_broker_with_the_reason_never_the_password(master):
    password = "Hunter2-Very-Secret-Pw"
    broker = {"name": "pg", "type": "sql", "dialect": "postgresql", "host": "127.0.0.1", "port": 5432,
              "db": "test", "username": "no_such_role_fwd", "password": password}
    forward = Forwarder(master, [broker])
    with MasterEvent(master.sock_dir, opts=master.settings) as bus:
        bus.subscribe("eventbus/forward/pg/")
        forward.start()
        try:
            fire_many(master, 5)
            down = bus.get_event(wait=60, tag="eventbus/forward/pg/down")
            assert down is not None and "no_such_role_fwd" in down["error"], down
            assert password not in json.dumps(down)
            wait_for(lambda: "no_such_role_fwd" in forward.log, 10, what="the reason in the log")
            status = run_cli("forward", "--status", "-c", str(forward.config_dir))
            assert status.stdout.strip() == "pg sql down delivered=0 pending=5 dropped=0"
            assert forward.daemon.alive()
        finally:
            forward.stop()
    assert password not in forward.log
    assert forward.log.count("is down") <= 2, "retried with backoff, logged once per reason"


@pytest.fixture
def hook_server():
    with hook_receiver(failures=3) as server:
        yield server


def test_webhooks_are_signed_retried_until_2xx_and_arrive_once_in_order(master, hook_server):
    secret = "webhook-shared-secret-123"
    url = f"http://127.0.0.1:{hook_server.server_address[1]}"
    brokers = [{"name": "salt", "type": "webhook", "url": url + "/salt", "secret": secret, "retries": 1},
               {"name": "ce", "type": "webhook", "url": url + "/ce", "format": "cloudevents", "mode": "binary",
                "tags": ["test/*"]}]
    forward = Forwarder(master, brokers).start()
    try:
        fire_many(master, 20)
        forward.wait_delivered("salt", 20)
        forward.wait_delivered("ce", 20)
    finally:
        forward.stop()
    salt = [(h, b) for p, h, b in hook_server.received if p == "/salt"]
    assert [json.loads(b)["data"]["n"] for _, b in salt] == list(range(20)), "once each, in order"
    for headers, body in salt:
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-hub-signature"] == expected
    ce = [(h, b) for p, h, b in hook_server.received if p == "/ce"]
    assert [json.loads(b)["n"] for _, b in ce] == list(range(20))
    headers = ce[0][0]
    assert headers["ce-specversion"] == "1.0" and headers["ce-type"] == "test/fwd"
    assert headers["ce-source"] == "/eventbus/master" and int(headers["ce-id"]) > 0
    assert "x-hub-signature" not in headers
    assert secret not in forward.log


def test_an_outbox_past_its_bound_delivers_or_drops_each_event_never_both(master):
    """Webhook down (503), ``outbox_max_events: 5``, 20 events fired, then the webhook answers 200: every
    event is delivered or counted dropped, and the ``dropped`` events, ``--status`` and what arrived agree."""
    with hook_receiver(down=True) as hook, MasterEvent(master.sock_dir, opts=master.settings) as bus:
        bus.subscribe("eventbus/forward/hook/")
        url = f"http://127.0.0.1:{hook.server_address[1]}/hook"
        forward = Forwarder(master, [{"name": "hook", "type": "webhook", "url": url, "retries": 0, "timeout": 5,
                                      "outbox_max_events": 5}]).start()
        try:
            fire_many(master, 1)  # event 0 goes to the webhook, which answers 503
            assert bus.get_event(wait=30, tag="eventbus/forward/hook/down") is not None
            fire_many(master, 19, start=1)
            wait_for(lambda: forward.stats()["hook"]["dropped"] >= 14, 30, what="the bound to drop")
            with hook.lock:
                hook.down = False
            wait_for(lambda: forward.stats()["hook"]["pending"] == 0, 60, what="the outbox to empty")
            stats = forward.stats()["hook"]
            status = run_cli("forward", "--status", "-c", str(forward.config_dir)).stdout.strip()
            lost = 0
            while lost < stats["dropped"]:
                dropped = bus.get_event(wait=30, tag="eventbus/forward/hook/dropped")
                assert dropped is not None, f"only {lost} of {stats['dropped']} drops reported"
                lost += dropped["lost"]
        finally:
            forward.stop()
    received = [json.loads(body)["data"]["n"] for _, _, body in hook.received]
    assert len(received) == len(set(received)) == stats["delivered"], received
    assert stats["delivered"] + stats["dropped"] == 20, (received, stats)
    assert lost == stats["dropped"]
    assert status == f"hook webhook up delivered={stats['delivered']} pending=0 dropped={stats['dropped']}"
    # The oldest waiting were dropped: what arrived is the newest 5, in bus order, after the batch that was
    # being posted when the bound was passed, if one was.
    assert received == sorted(received) and received[-5:] == [15, 16, 17, 18, 19]


def test_an_unreachable_rabbitmq_is_one_down_line_with_the_reason_not_pikas_own_lines(master):
    from tests.helpers import free_port

    broker = {"name": "rabbit", "type": "pika", "url": "127.0.0.1", "port": free_port(), "queues": ["nobody"]}
    forward = Forwarder(master, [broker], log_level="info")
    with MasterEvent(master.sock_dir, opts=master.settings) as bus:
        bus.subscribe("eventbus/forward/rabbit/")
        forward.start()
        try:
            fire_many(master, 3)
            down = bus.get_event(wait=60, tag="eventbus/forward/rabbit/down")
            assert down is not None and "Connection refused" in down["error"], down
            wait_for(lambda: "Connection refused" in forward.log, 10, what="the reason in the log")
        finally:
            forward.stop()
    assert "pika" not in forward.log.replace("(pika)", ""), forward.log[-3000:]
