"""Run the REST API: CherryPy's server and engine, the bus (or fleet) feed, the stream pump, the pool keeper.

Each open request holds a cheroot worker thread, and an ``/events`` stream is a request that lasts: the
``PoolKeeper`` grows the pool as streams open, keeping ``RESERVE`` idle workers, up to ``stream_limit`` +
``RESERVE``. ``GatedServer`` is CherryPy's server with the gate (``eventbus.netapi.connloop``) in place of
cheroot's connection manager, refusing folded header lines. Threads and figures: docs/api.md, How it scales.
"""
from __future__ import annotations

import faulthandler
import logging
import os
import resource
import socket
import threading
import time
from pathlib import Path
from typing import Any

import cherrypy
from cheroot.server import HeaderReader
from cherrypy._cpwsgi_server import CPWSGIServer
from cherrypy.process import plugins

from eventbus import config, systemstatus
from eventbus.config import ApiConfig
from eventbus.errors import ConfigError, EventBusError
from eventbus.reload import Reloader
from eventbus.netapi import auth, errors, connloop, login
from eventbus.netapi.apistatus import StatusFile
from eventbus.netapi.app import Api, cors_hook
from eventbus.netapi.sse.feed import BusFeed
from eventbus.netapi.sse.fleet import FleetFeed
from eventbus.netapi.sse.hub import Hub
from eventbus.netapi.metrics import Metrics
from eventbus.netapi.sse.pump import Pump

log = logging.getLogger(__name__)

INITIAL_THREADS = 16
RESERVE = 16
GROW_STEP = 32
STACK_SIZE = 512 * 1024
TOKEN_KEY = Path("var/cache/eventbus/api/token.key")
STOP_GRACE = 8.0
# Descriptors kept for what is not a client connection (bus sockets, log files, pipes).
FD_SPARE = 128


class PoolKeeper(plugins.SimplePlugin):
    """Grow cheroot's worker pool ahead of the streams so a spare worker is always there."""

    def __init__(self, bus: plugins.wspbus.Bus, maximum: int) -> None:
        super().__init__(bus)
        self.maximum = maximum
        self._wanted = threading.Event()
        self._running = False
        self._grown = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="pool-keeper", daemon=True)
        self._thread.start()

    start.priority = 80  # type: ignore[attr-defined]

    def stop(self) -> None:
        self._running = False
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(5)

    def poke(self) -> None:
        """A stream took a worker: check the reserve."""
        self._wanted.set()

    def _run(self) -> None:
        while self._running:
            self._wanted.wait()
            self._wanted.clear()
            pool = getattr(cherrypy.server.httpserver, "requests", None)
            # cheroot tells no pool size: the pool starts with ``min`` threads and only grows here.
            while self._running and pool is not None and pool.idle < RESERVE and pool.min + self._grown < self.maximum:
                step = min(GROW_STEP, self.maximum - pool.min - self._grown)
                pool.grow(step)
                self._grown += step
                log.debug("grew the worker pool to %d threads", pool.min + self._grown)


class NoFoldHeaderReader(HeaderReader):
    """cheroot's header reader, refusing obsolete line folding (RFC 9112 5.2 allows a 400).

    cheroot would replace a folded header's value by its last line, so a
    ``ce-source`` split over two lines would silently become another source.
    """

    def __call__(self, rfile: Any, hdict: Any = None) -> Any:
        wrapped = _FoldCheck(rfile)
        return super().__call__(wrapped, hdict)


class _FoldCheck:
    def __init__(self, rfile: Any) -> None:
        self.rfile = rfile

    def readline(self, *args: Any) -> bytes:
        line = self.rfile.readline(*args)
        if line[:1] in (b" ", b"\t"):
            raise ValueError("a header line starts with a space or tab (obsolete line folding)")
        return line


class GatedServer(CPWSGIServer):
    """CherryPy's WSGI server with the gate as its connection manager."""

    def __init__(self, server_adapter: Any, max_body: int, max_open: int) -> None:
        super().__init__(server_adapter)
        self.gate_max_body = max_body
        self.gate_max_open = max_open
        self.gate: connloop.Gate | None = None
        base = self.ConnectionClass

        class NoFoldRequest(base.RequestHandlerClass):  # type: ignore[misc, name-defined]
            header_reader = NoFoldHeaderReader()

        class CountedConnection(base):  # type: ignore[misc, valid-type]
            """A connection that tells the gate when it closes, once."""

            counted = True
            RequestHandlerClass = NoFoldRequest

            def close(conn) -> None:  # noqa: N805  (``self`` is the server in this scope)
                if conn.counted:
                    conn.counted = False
                    if self.gate is not None:
                        self.gate.closed(conn)
                super().close()

        self.ConnectionClass = CountedConnection

    def prepare(self) -> None:
        super().prepare()
        # No public hook installs a connection manager: a private attribute, which
        # tests/unit/test_cheroot_contract.py checks on the cheroot setup.cfg pins.
        stock = self._connections
        self._connections = self.gate = connloop.Gate(self, self.gate_max_body, self.gate_max_open)
        stock.close()


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise EventBusError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _ssl_options(settings: ApiConfig) -> dict:
    if (settings.ssl_crt is None) != (settings.ssl_key is None):
        raise ConfigError(f"{settings.source}: ssl_crt and ssl_key must be given together", key="ssl_crt")
    if settings.ssl_crt is None:
        return {}
    for key, path in (("ssl_crt", settings.ssl_crt), ("ssl_key", settings.ssl_key)):
        if not Path(path).is_file():
            raise ConfigError(f"{settings.source}: key {key!r}: no such file {str(path)!r}", key=key)
    return {"server.ssl_module": "builtin", "server.ssl_certificate": str(settings.ssl_crt),
            "server.ssl_private_key": str(settings.ssl_key)}


def build(settings: ApiConfig) -> tuple[Api, dict, dict]:
    """The application and its global and app configs (no threads started)."""
    master = config.load(config.MasterConfig, settings.master_config)
    backends = auth.read_external_auth(settings.external_auth, settings.root_dir, str(settings.source))
    signer = auth.TokenSigner.from_key_file(settings.root_dir / TOKEN_KEY)
    auth.prepare()
    hub = Hub(settings.stream_queue)
    # With ``cluster``, /events streams the fleet's events from the stream, with stream seqs as ids (SPEC 12).
    feed: BusFeed | FleetFeed
    if master.cluster is not None:
        feed = FleetFeed(cherrypy.engine, master, hub, settings.stream_queue)
    else:
        feed = BusFeed(cherrypy.engine, master, hub)
    keeper = PoolKeeper(cherrypy.engine, settings.stream_limit + RESERVE)
    pump = Pump(cherrypy.engine, hub)
    feed.subscribe()
    keeper.subscribe()
    pump.subscribe()
    cherrypy.tools.eventbus_unpad = cherrypy.Tool("before_finalize", errors.unpad)
    cherrypy.tools.eventbus_unpad_500 = cherrypy.Tool("after_error_response", errors.unpad)
    metrics = Metrics(master, lambda: hub.streams)
    app = Api(settings, backends, signer, hub, feed, pump, on_stream=keeper.poke, metrics=metrics)
    cherrypy.engine.subscribe("stop", app.close)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"{'https' if settings.ssl_crt else 'http'}://{host}:{settings.port}"
    StatusFile(cherrypy.engine, systemstatus.api_status_path(settings), url, app.own_figures).subscribe()
    global_config = {
        "environment": "production",
        "engine.autoreload.on": False,
        "log.screen": False,
        "server.socket_host": settings.host,
        "server.socket_port": settings.port,
        "server.thread_pool": INITIAL_THREADS,
        "server.thread_pool_max": settings.stream_limit + RESERVE,
        "server.socket_queue_size": 1024,
        "server.socket_timeout": 10,
        "server.shutdown_timeout": 3,
        "server.max_request_body_size": 0,
        **_ssl_options(settings),
    }
    app_config = {"/": {
        "request.process_request_body": False,
        "request.show_tracebacks": False,
        "request.show_mismatched_params": False,
        "tools.encode.on": False,
        "tools.gzip.on": False,
        "tools.trailing_slash.on": False,
        "error_page.default": errors.error_page,
        "tools.eventbus_unpad.on": True,
        "tools.eventbus_unpad_500.on": True,
    }}
    if settings.cors_origin:
        origins = tuple(o for o in settings.cors_origin.replace(",", " ").split() if o)
        cherrypy.tools.eventbus_cors = cherrypy.Tool("before_handler", cors_hook(origins), priority=10)
        app_config["/"]["tools.eventbus_cors.on"] = True
    return app, global_config, app_config


def _watchdog() -> None:
    """End the process if a clean stop hangs (cheroot joins its workers without a time limit)."""
    time.sleep(STOP_GRACE)
    log.error("stopping took over %g s; exiting now. Thread stacks follow.", STOP_GRACE)
    faulthandler.dump_traceback(all_threads=True)
    os._exit(1)


class Stopper:
    """SIGTERM/SIGINT: exit the engine cleanly, with a watchdog; a signal during start-up waits for it to end.

    (``engine.exit()`` while the engine is starting ends the process with
    status 70 at once, skipping every plugin's stop.)
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.asked = threading.Event()

    def __call__(self) -> None:
        if not self.asked.is_set():
            self.asked.set()
            threading.Thread(target=_watchdog, name="stop-watchdog", daemon=True).start()
        if self.engine.state == self.engine.states.STARTED:
            self.engine.exit()

    def started(self) -> None:
        """The engine is up: if a signal came meanwhile, stop now."""
        if self.asked.is_set():
            self.engine.exit()


def _raise_fd_limit() -> None:
    """Each stream holds a socket: allow as many open files as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(settings: ApiConfig) -> None:
    """Run the API in the foreground until SIGTERM or SIGINT (SIGHUP: see ``eventbus.reload``)."""
    app, global_config, app_config = build(settings)
    _raise_fd_limit()
    _check_port(settings.host, settings.port)
    threading.stack_size(STACK_SIZE)
    cherrypy.config.update(global_config)
    # Requests reach a worker only when whole: slow clients cost no thread (eventbus.netapi.connloop).
    cherrypy.server.httpserver = GatedServer(
        cherrypy.server, max_body=max(settings.max_event_size, login.LOGIN_BODY_LIMIT),
        max_open=min(settings.stream_limit + connloop.MAX_PENDING + RESERVE,
                     resource.getrlimit(resource.RLIMIT_NOFILE)[0] - FD_SPARE))
    # CherryPy's own records go to our log handlers; the access log stays off (URLs carry tokens).
    cherrypy.log.error_log.propagate = True
    cherrypy.log.error_log.setLevel(logging.getLogger().level)
    cherrypy.log.access_log.propagate = False
    cherrypy.tree.mount(app, "/", app_config)
    engine = cherrypy.engine
    stopper = Stopper(engine)
    # CherryPy's own SignalHandler installs (and on exit restores) the handlers. Its SIGHUP default
    # restarts or ends the process; ours only notes the signal, and the main thread (``main`` channel,
    # every 0.1 s) re-reads the config file and logs what changed.
    reloader = Reloader(settings, lambda path: config.load(ApiConfig, path))
    engine.signal_handler.handlers = {"SIGTERM": stopper, "SIGINT": stopper, "SIGHUP": reloader.ask}
    engine.signal_handler.subscribe()
    engine.subscribe("main", reloader.reload_if_asked)
    engine.start()
    scheme = "https" if settings.ssl_crt else "http"
    log.info("REST API ready on %s://%s:%d", scheme, settings.host, settings.port)
    stopper.started()
    engine.block()
