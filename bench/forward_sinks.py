"""The sinks' side of ``bench.forward``: bare writers of the same records with the same guarantee, and
readers of what has arrived at a sink (for latency).

Each ``ref_*`` writes ``events`` (``records(n)``) under ``root`` the way a
careful hand-written client would, and returns the seconds it took; each
``*Arrivals`` returns the data of events that reached the sink since its last
call.
"""
from __future__ import annotations

import http.client
import json
import os
import sqlite3
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PAD = "x" * 60
BATCH = 1000
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}


def records(count: int) -> list[tuple[int, str, dict]]:
    """The events a reference writes: what the forwarder gets from the bus (seq, tag, data with _stamp)."""
    stamp = "2026-11-26T00:00:00.000000"
    return [(1_000_000 + n, "bench/fwd", {"n": n, "pad": PAD, "_stamp": stamp}) for n in range(count)]


# -- bare references: the same records, the same guarantee ------------------------------------------


def ref_file(root: Path, events: list) -> float:
    from eventbus.forwarding.formats import salt_record

    started = time.perf_counter()
    with open(root / "ref.jsonl", "ab", buffering=0) as out:
        for first in range(0, len(events), BATCH):
            out.write(b"".join(salt_record(s, t, d) + b"\n" for s, t, d in events[first:first + BATCH]))
            os.fsync(out.fileno())
    return time.perf_counter() - started


def ref_sqlite(root: Path, events: list) -> float:
    from eventbus.forwarding.formats import event_time, json_text, minion_id, rfc3339

    db = sqlite3.connect(root / "ref.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, tag TEXT, minion_id TEXT, time TEXT, data JSON)")
    started = time.perf_counter()
    for first in range(0, len(events), BATCH):
        # json_text: the same JSON encoder (orjson) the sql sink uses, so the reference is not slowed by a worse one
        rows = [(s, t, minion_id(d), rfc3339(event_time(d)), json_text(d)) for s, t, d in events[first:first + BATCH]]
        db.execute("BEGIN")
        db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?)", rows)
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed


def ref_postgresql(root: Path, events: list) -> float:
    import psycopg
    from psycopg.types.json import Jsonb

    from eventbus.forwarding.formats import event_time, minion_id, rfc3339

    schema = "benchref_" + uuid.uuid4().hex[:8]
    with psycopg.connect(**PG, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
        db.execute(f"CREATE TABLE {schema}.events (seq BIGINT PRIMARY KEY, tag TEXT, minion_id TEXT, time TEXT, "
                   "data JSONB)")
        try:
            started = time.perf_counter()
            for first in range(0, len(events), BATCH):
                rows = [(s, t, minion_id(d), rfc3339(event_time(d)), Jsonb(d)) for s, t, d in events[first:first + BATCH]]
                with db.transaction(), db.cursor() as cursor:
                    cursor.executemany(f"INSERT INTO {schema}.events VALUES (%s, %s, %s, %s, %s) "
                                       "ON CONFLICT (seq) DO NOTHING", rows)
            return time.perf_counter() - started
        finally:
            db.execute(f"DROP SCHEMA {schema} CASCADE")


class _Hook(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.arrivals.append((time.time(), body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class HookServer:
    """A bare HTTP server answering 200 to every POST, noting when each body arrived."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
        self.server.arrivals = []  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def arrivals(self) -> list:
        return self.server.arrivals  # type: ignore[attr-defined]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ref_webhook(root: Path, events: list) -> float:
    from eventbus.forwarding.formats import salt_record

    hook = HookServer()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", hook.port)
        started = time.perf_counter()
        for seq, tag, data in events:
            connection.request("POST", "/ref", salt_record(seq, tag, data), {"Content-Type": "application/json"})
            answer = connection.getresponse()
            answer.read()
            assert 200 <= answer.status < 300
        elapsed = time.perf_counter() - started
        connection.close()
        return elapsed
    finally:
        hook.close()


# -- arrivals at a sink (for latency): new events' data since the last call ----------------------------


class FileArrivals:
    def __init__(self, root: Path, _context: dict) -> None:
        self.path = root / "out.jsonl"
        self.offset = 0

    def __call__(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as stream:
            stream.seek(self.offset)
            chunk = stream.read()
        cut = chunk.rfind(b"\n") + 1
        self.offset += cut
        return [json.loads(line)["data"] for line in chunk[:cut].splitlines()]


class SqliteArrivals:
    def __init__(self, root: Path, _context: dict) -> None:
        self.path = root / "out.db"
        self.last = 0

    def __call__(self) -> list[dict]:
        if not self.path.exists():
            return []
        db = sqlite3.connect(self.path)
        try:
            rows = db.execute("SELECT seq, data FROM events WHERE seq > ? ORDER BY seq", (self.last,)).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            db.close()
        if rows:
            self.last = rows[-1][0]
        return [json.loads(data) for _, data in rows]


class PostgresArrivals:
    def __init__(self, _root: Path, context: dict) -> None:
        import psycopg

        self.db = psycopg.connect(**PG, autocommit=True)
        self.schema = context["schema"]
        self.last = 0

    def __call__(self) -> list[dict]:
        import psycopg

        try:
            rows = self.db.execute(f"SELECT seq, data FROM {self.schema}.events WHERE seq > %s ORDER BY seq",
                                   (self.last,)).fetchall()
        except psycopg.errors.UndefinedTable:
            return []
        if rows:
            self.last = rows[-1][0]
        return [data for _, data in rows]


class WebhookArrivals:
    """Arrival times come from the server itself, so they are exact."""

    timed = True

    def __init__(self, _root: Path, context: dict) -> None:
        self.hook: HookServer = context["hook"]
        self.taken = 0

    def __call__(self) -> list[tuple[float, dict]]:
        arrivals = self.hook.arrivals[self.taken:]
        self.taken += len(arrivals)
        return [(when, json.loads(body)["data"]) for when, body in arrivals]
