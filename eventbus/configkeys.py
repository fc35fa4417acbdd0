"""The keys of each config file, declared once: name, type, default, limits and meaning.

Each file's keys are the fields of a frozen dataclass (``MasterConfig``,
``MinionConfig``, ``ApiConfig``; ``forward``'s ``ForwardConfig`` lives in
``eventbus.forwarding.config``), each made by ``key``. ``eventbus.config`` reads
YAML into them; ``eventbus.configdoc`` renders the docs' key tables from
them, so a key, its default and its meaning are written here and nowhere else.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from eventbus.bus.match import MATCH_TYPES
from eventbus.masters import MasterAddress, resolve

if TYPE_CHECKING:
    from eventbus.config import AuthBackend

LOG_LEVELS = ("all", "garbage", "trace", "debug", "info", "warning", "error",
              "critical", "quiet")


def key(default: Any, kind: str, *, doc: str | None = None, detail: str | None = None,
        shown: str | None = None, **rules: Any) -> Any:
    """Declare a config key: its default, how to read it, its limits, and what it means.

    ``doc`` is the meaning the README's key tables show, ``detail`` the longer
    one of the key's own page (docs/*.md; ``doc`` when not given), ``shown``
    the default as a person reads it where the real one is computed at load
    (``root_dir``, a minion's ``id``). ``eventbus.configdoc`` renders the
    docs' tables from these.
    """
    texts = {name: text for name, text in (("doc", doc), ("detail", detail), ("shown", shown)) if text}
    return field(default=default, metadata={"kind": kind, **texts, **rules})


@dataclass(frozen=True)
class CommonConfig:
    """Keys every config file has (the forwarder's too)."""

    node: ClassVar[str] = ""
    source: Path | None = field(default=None, metadata={"kind": "internal"})
    root_dir: Path = key(None, "root", shown="`/` as root, else `~/.eventbus`",
                         doc="every relative path is under it")
    log_level: str = key("warning", "choice", choices=LOG_LEVELS, doc="logging")
    log_file: Path | None = key(None, "path", shown="stderr", doc="logging")

    def cross_check(self) -> tuple[str, Any, str] | None:
        """What is wrong between keys read one by one: ``(key, value, expected)``, or ``None``."""
        return None


@dataclass(frozen=True)
class BaseConfig(CommonConfig):
    """Keys of the files whose daemon or handles carry events themselves (master, minion, api)."""

    max_event_size: int = key(1048576, "int", min=256, max=256 * 1024 * 1024,
                              doc="bytes of a packed event (tag + msgpack data); larger is refused")
    event_match_type: str = key("startswith", "choice", choices=MATCH_TYPES,
                                doc="default tag match of handles made with this config")


@dataclass(frozen=True)
class BusConfig(BaseConfig):
    """Keys of a daemon that runs a local bus (master and minion)."""

    sock_dir: Path = key("var/run/eventbus/bus", "path", doc="IPC sockets (directory made 0700)")
    pki_dir: Path = key("etc/eventbus/pki", "path", doc="keys")
    publish_port: int = key(4505, "port", doc="the master's TCP ports")
    ret_port: int = key(4506, "port", doc="the master's TCP ports")
    # Past its queue the bus drops that subscriber's events (it learns how many from the sequence gap).
    # Under a tight send loop libzmq returns pipe credit to the daemon only about every millisecond,
    # so small queues drop events even for subscribers that keep up.
    subscriber_queue: int = key(10000, "int", min=1000, max=10_000_000,
                                doc="events the daemon queues per listener before dropping that listener's "
                                    "events (min 1000; also the burst a listener can absorb)")
    event_window: int = key(10000, "int", min=0, max=10_000_000,
                            doc="newest events the daemon keeps for readers that resume (REST `Last-Event-ID`)")
    event_window_bytes: int = key(64 * 1024 * 1024, "int", min=0, max=1 << 40,
                                  doc="... and at most this many bytes of them")
    heartbeat_interval: float = key(
        5, "seconds", doc="seconds between heartbeats; a minion silent for 1.5 intervals leaves the present set",
        detail="seconds: a minion pings this often (the lower of both values); the master drops it from the "
               "present set after 1.5 intervals of silence, so a frozen or unplugged minion leaves within two; "
               "a minion rebuilds its connection after 2 intervals without an answer")


@dataclass(frozen=True)
class MasterConfig(BusConfig):
    """The master daemon's config (file ``master``)."""

    node: ClassVar[str] = "master"
    sock_dir: Path = key("var/run/eventbus/master", "path")
    pki_dir: Path = key("etc/eventbus/pki/master", "path")
    id: str = key(None, "id", shown="host name", doc="this master's id, unique in the fleet")
    interface: str = key("127.0.0.1", "str", doc="bind address for minions")
    auto_accept: bool = key(False, "bool", doc="accept new minion keys without an operator")
    presence_events: bool = key(False, "bool", doc="fire presence events")
    loop_interval: float = key(60, "seconds", doc="seconds between presence events")
    cachedir: Path = key("var/cache/eventbus/master", "path", doc="relay de-duplication state",
                         detail="the newest relay seq accepted from each minion (de-duplication across "
                                "master restarts)")
    relay_rate_limit: int = key(
        20000, "int", min=0, max=100_000_000,
        doc="events a second each minion may relay (2 s of it at once); past it the master answers `resend` "
            "and the minion waits; 0: no limit",
        detail="events a second each minion may relay, 2 s' worth at once (a spool's backlog drains at once up "
               "to that); a batch past it is not read: the master answers `resend`, the minion waits and resends "
               "it from its spool; 0: no limit")
    # The journal (docs/journal.md, Config (master)).
    event_journal: bool = key(
        True, "bool", doc="keep every master event on disk, for resume across restarts and catch-up",
        detail="keep the journal")
    journal_dir: Path = key("var/cache/eventbus/master/journal", "path", doc="where",
                            detail="where (under `root_dir`)")
    journal_max_bytes: int = key(1073741824, "int", min=1 << 20, max=1 << 50,
                                 doc="bounds; the oldest segments go first",
                                 detail="the oldest segments go first past this")
    journal_max_age: float = key(604800, "seconds", doc="bounds; the oldest segments go first",
                                 detail="... or when their newest event is older (s)")
    journal_fsync: str = key(
        "batch", "choice", choices=("batch", "always", "never"),
        doc="`batch` (≤ 0.1 s at risk on a machine crash), `always`, `never`; a daemon crash loses nothing a "
            "listener has received",
        detail="`batch`: at most 0.1 s of events at risk on a machine crash; `always`: every batch synced before "
               "it is published; `never`: the OS decides")
    # The reactor (docs/reactor.md): parsed and checked here (eventbus.reactor.rules.Rule values).
    reactor: tuple = key((), "reactor", doc="tag globs to actions, checked at start "
                                            "([docs/reactor.md](docs/reactor.md)); state in `cachedir/reactor/`")
    # The fleet-wide bus (docs/fleet.md, The fleet-wide bus): an eventbus.cluster.settings.ClusterSettings.
    cluster: Any = key(
        None, "cluster", shown="none",
        doc="the fleet-wide bus: `{servers: [nats://...], stream: EVENTBUS, replicas: 1, subject_prefix: eventbus}` "
            "plus `user`, `password`, `token`, `creds` ([docs/fleet.md](docs/fleet.md))",
        detail="join this master's bus to the fleet's NATS JetStream stream: `servers` (a URL or a list, default "
               "`nats://127.0.0.1:4222`), `stream` (`EVENTBUS`, made when missing), `replicas` (1), "
               "`subject_prefix` (`eventbus`), and `user`/`password`, `token` or `creds` (a credentials file); "
               "each secret also as `KEY_file` / `KEY_env`")

    def cross_check(self) -> tuple[str, Any, str] | None:
        if self.cluster is not None and not self.event_journal:
            return "cluster", self.cluster.shown(), ("event_journal: true beside it (a master exports its events "
                                                     "to the fleet from its journal)")
        return None


@dataclass(frozen=True)
class MinionConfig(BusConfig):
    """The minion daemon's config (file ``minion``)."""

    node: ClassVar[str] = "minion"
    sock_dir: Path = key("var/run/eventbus/minion", "path")
    pki_dir: Path = key("etc/eventbus/pki/minion", "path")
    id: str = key(None, "id", shown="host name", doc="the minion's id")
    master: Any = key(
        "127.0.0.1", "masters", doc="master host, or a list of masters ([docs/fleet.md](docs/fleet.md))",
        detail="a host, or a list of masters; an item is `host`, `host:port` (port: that master's `ret_port`) or "
               "a mapping `{host, ret_port, publish_port, pubkey}` (missing ports: the minion's own)")
    master_type: str = key(
        "str", "choice", choices=("str", "failover"),
        doc="`str`: linked to every master of the list at once (hot); `failover`: one at a time, in list order")
    master_alive_interval: float | None = key(
        None, "seconds", shown="`heartbeat_interval`",
        doc="failover: how often (s) the live master is checked; after 1.5 of these intervals of silence the "
            "minion moves to the next master")
    master_failback: bool = key(
        False, "bool", doc="failover: go back to an earlier master of the list once it answers again")
    master_pubkey: str | None = key(
        None, "str", doc="the master's CURVE public key; unset, it is pinned on first contact",
        detail="the master's CURVE public key (Z85, as in the master's `pki_dir/master.key`); unset: pinned on "
               "first contact (several masters: each item's `pubkey`, pinned under `pki_dir/masters/`)")

    def cross_check(self) -> tuple[str, Any, str] | None:
        shown = list(self.master) if isinstance(self.master, tuple) else self.master
        resolved = resolve(self.master, self.ret_port, self.publish_port)
        if isinstance(resolved, str):
            return "master", shown, ("a host, or a list of masters (host, host:port or a mapping {host, ret_port, "
                                     f"publish_port, pubkey}}): {resolved}")
        if self.master_pubkey is not None and len(resolved) > 1:
            return "master_pubkey", self.master_pubkey, (f"one master's key, but 'master' lists {len(resolved)}: "
                                                         "give each master its key as 'pubkey' in its item")
        return None

    @functools.cached_property
    def masters(self) -> tuple[MasterAddress, ...]:
        """The masters ``master`` names, ports filled in (checked at load: this never fails on a loaded config)."""
        resolved = resolve(self.master, self.ret_port, self.publish_port)
        assert not isinstance(resolved, str), resolved
        if self.master_pubkey is not None and len(resolved) == 1 and resolved[0].pubkey is None:
            return (dataclasses.replace(resolved[0], pubkey=self.master_pubkey),)
        return resolved

    @property
    def alive_interval(self) -> float:
        """``master_alive_interval``, or ``heartbeat_interval`` when unset."""
        return self.master_alive_interval or self.heartbeat_interval
    cachedir: Path = key("var/cache/eventbus/minion", "path", doc="the relay spool")
    spool_max_events: int = key(
        1_000_000, "int", min=10, max=100_000_000,
        doc="events kept while the master is away; beyond, the oldest are dropped, counted and logged",
        detail="events kept for the master; beyond, the oldest are dropped, counted and logged")


_HTTPS = {"doc": "HTTPS when both are given",
          "detail": "HTTPS when both are given (paths under `root_dir`); the session cookie is then `Secure`"}


@dataclass(frozen=True)
class ApiConfig(BaseConfig):
    """The REST API's config (file ``api``)."""

    node: ClassVar[str] = "api"
    host: str = key("127.0.0.1", "str", doc="where to listen")
    port: int = key(8000, "port", doc="where to listen")
    ssl_crt: Path | None = key(None, "path", **_HTTPS)
    ssl_key: Path | None = key(None, "path", **_HTTPS)
    master_config: Path = key(
        "master", "confpath", doc="the master config whose bus it serves (relative to the api file)",
        detail="the master config whose bus is served (relative to the api file)")
    external_auth: Mapping[str, AuthBackend] = key(
        None, "eauth", doc="`{file: {users_file: PATH, USER: [TAG GLOBS]}}`",
        detail="`{file: {users_file: PATH, USER: [TAG GLOBS]}}`; only the `file` backend exists")
    token_expire: float = key(
        43200, "seconds", doc="seconds a login token lives; a stream ends with its token",
        detail="seconds a login token is valid; a stream ends when its token expires")
    jwt_secret: str | None = key(
        None, "secret", doc="enables `Authorization: Bearer` HS256 JWTs (roles `admin`, `user`)",
        detail="enables `Authorization: Bearer <JWT>` (HS256, at least 16 characters)")
    webhook_disable_auth: bool = key(False, "bool", doc="`/hook` without credentials")
    events_replay: int = key(
        10000, "int", min=0, max=10_000_000,
        doc="kept for compatibility; resume reaches as far back as the master's journal",
        detail="kept for compatibility; a resume reaches as far back as the master's journal")
    cors_origin: str | None = key(
        None, "str", doc="origins allowed to call the API from pages served elsewhere",
        detail="`*`, or space/comma separated origins allowed to call the API from a page served elsewhere")
    # One more stream is answered 503 so /login and /hook keep threads.
    stream_limit: int = key(
        2000, "int", min=1, max=100_000, doc="concurrent `/events` streams; one more gets 503",
        detail="concurrent `/events` streams; one more is answered 503 (keeps threads for `/login`, `/hook`)")
    stream_queue: int = key(10000, "int", min=100, max=10_000_000,
                            doc="events a stream may fall behind before it is dropped",
                            detail="events a stream may fall behind the bus before it is dropped")
    login_rate: int = key(
        10, "int", min=1, max=1_000_000, doc="failed logins per client address per minute; one more gets 429",
        detail="failed logins per client address per minute; past it, `/login` answers 429 with `Retry-After` "
               "until the minute has passed")
    metrics_public: bool = key(
        False, "bool", doc="`GET /metrics` without a token (else admins only)",
        detail="`GET /metrics` without a token (else only an admin: a login whose perms include `*`, or an "
               "admin JWT); see docs/metrics.md")
