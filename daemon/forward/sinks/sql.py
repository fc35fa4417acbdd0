"""``type: sql``: rows in table ``events`` of SQLite or PostgreSQL (SQLAlchemy 2, psycopg 3).

One transaction per batch; ``seq`` is unique and inserts skip seqs already
there, so a batch delivered again after a crash or an outage inserts nothing.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg  # noqa: F401  the driver of the postgresql+psycopg URLs below; missing it fails here, clearly
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import SQLAlchemyError

from eventbus.daemon.forward.sinks import brokerkeys
from eventbus.forwarding import brokertypes
from eventbus.forwarding.brokertypes import BUILTIN
from eventbus.errors import SinkError
from eventbus.forwarding.formats import json_text
from eventbus.sink import Outgoing, Sink

metadata = sa.MetaData()
EVENTS = sa.Table(
    "events", metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),  # primary key: unique
    sa.Column("tag", sa.Text, nullable=False),
    sa.Column("minion_id", sa.Text, nullable=True),
    sa.Column("time", sa.Text, nullable=False),
    sa.Column("data", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
)
DIALECTS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}
INSERT_SQL = {
    "sqlite": "INSERT INTO events (seq, tag, minion_id, time, data) VALUES (?, ?, ?, ?, ?) "
              "ON CONFLICT (seq) DO NOTHING",
    "postgresql": "INSERT INTO events (seq, tag, minion_id, time, data) VALUES (%s, %s, %s, %s, %s::jsonb) "
                  "ON CONFLICT (seq) DO NOTHING",
}


def _query(options: dict) -> dict[str, str]:
    """``query``: options for the dialect and driver, as in the URL's query string (Rasa's SQL key)."""
    query = options.get("query") or {}
    if not isinstance(query, dict) or not all(isinstance(v, (str, int)) for v in query.values()):
        raise SinkError(f"key 'query' has value {query!r}; expected a mapping of option names to values")
    return {str(k): str(v) for k, v in query.items()}


def engine_url(options: dict) -> sa.URL:
    """The SQLAlchemy URL of a broker block: ``url`` as given (an SQLAlchemy URL), or built from
    dialect/db/host/...; a ``url`` without ``://`` is the database host, as in Rasa's SQL broker."""
    url_value = options.get("url")
    if url_value and "://" in str(url_value):
        try:
            url = sa.make_url(url_value)
        except (SQLAlchemyError, ValueError):
            raise SinkError("key 'url' is not an SQLAlchemy URL (dialect://user:password@host:port/db)") from None
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        return url.update_query_dict(_query(options)) if options.get("query") else url
    host = options.get("host")
    if url_value:
        if host and host != url_value:
            raise SinkError(f"keys 'url' ({url_value!r}, a host without '://') and 'host' ({host!r}) "
                            f"both name the database host; keep one")
        host = url_value
    dialect = options["dialect"]
    if dialect not in DIALECTS:
        raise SinkError(f"key 'dialect' has value {dialect!r}; expected sqlite or postgresql")
    if dialect == "sqlite":
        db = Path(brokerkeys.path({**options, "db": options.get("db") or brokertypes.SQLITE_DB}, "db") or "")
        db.parent.mkdir(parents=True, exist_ok=True)
        return sa.URL.create("sqlite", database=str(db), query=_query(options))
    return sa.URL.create(DIALECTS[dialect], username=brokerkeys.text(options, "username"),
                         password=brokerkeys.text(options, "password", secret=True), host=host or "127.0.0.1",
                         port=None if options.get("port") is None else brokerkeys.integer(options, "port", 5432),
                         database=brokerkeys.text(options, "db"),
                         query=_query(options))


class SqlSink(Sink):
    KEYS = BUILTIN["sql"]
    BODY = False  # rows of the fields; the record's JSON would be encoded for nothing

    def __init__(self, url: sa.URL) -> None:
        self.url = url
        self.engine: sa.Engine | None = None
        self._insert: Any = None

    @classmethod
    def from_endpoint_config(cls, cfg: dict) -> "SqlSink":
        return cls(engine_url(cls.options(cfg)))

    def _connect(self) -> sa.Engine:
        if self.engine is None:
            # default=str: bus data may hold bytes (msgpack bin), which JSON cannot; keep them readable.
            engine = sa.create_engine(self.url, pool_pre_ping=True,
                                      json_serializer=lambda value: json.dumps(value, default=str))
            if engine.dialect.name == "sqlite":
                sa.event.listen(engine, "connect", _sqlite_pragmas)
            try:
                metadata.create_all(engine)
            except SQLAlchemyError as exc:
                engine.dispose()
                raise SinkError(_reason(exc)) from None
            # One plain statement handed to the driver's executemany (psycopg 3 pipelines it): SQLAlchemy's
            # per-row parameter processing cost more than the inserts themselves (20,000 rows/s on SQLite).
            self._insert = INSERT_SQL[engine.dialect.name]
            self.engine = engine
        return self.engine

    def publish(self, batch: list[Outgoing]) -> None:
        engine = self._connect()
        rows = [(o.seq, o.tag, o.minion_id, o.time, json_text(o.data)) for o in batch]
        try:
            with engine.begin() as connection:
                connection.exec_driver_sql(self._insert, rows)
        except SQLAlchemyError as exc:
            raise SinkError(_reason(exc)) from None

    def is_ready(self) -> bool:
        return self.engine is not None

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's own words, without SQLAlchemy's statement and parameter dump."""
    original = getattr(exc, "orig", None)
    text = str(original if original is not None else exc).strip().splitlines()
    return " ".join(line.strip() for line in text[:2]) or type(exc).__name__
