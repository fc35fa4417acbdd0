"""The CherryPy application: ``/login``, ``/events``, ``/hook/<path>``, ``/cloudevents/<channel>``, ``/metrics``,
``/ui`` and ``/``.

Handlers are thin: logins are decided by ``eventbus.netapi.login``, credentials and
filters come from ``eventbus.netapi.auth`` and ``eventbus.netapi.jwtauth``, records from
``eventbus.netapi.sse.stream`` and ``eventbus.netapi.sse.hub``, webhook bodies from ``eventbus.netapi.hooks``. Every refusal is an ``ApiError``
answered as JSON (``eventbus.netapi.errors``).
"""
from __future__ import annotations

import json
import logging
import threading
from importlib import resources
from typing import Any, Callable, Iterator

import cherrypy

from eventbus.refusallog import Complaints
from eventbus.config import ApiConfig
from eventbus.errors import (ApiError, AuthenticationError, EventTooLargeError,
                             InvalidEventError, TooManyRequestsError)
from eventbus.cloudevents.channels import Channels
from eventbus.cloudevents.eventtypes import EventTypes
from eventbus.netapi import auth, hooks, jwtauth
from eventbus.netapi.cloudevents.ingest import Ingest, Refusal
from eventbus.netapi.cloudevents.reports import ErrorReporter
from eventbus.netapi.auth import Backend, Principal, TokenSigner
from eventbus.netapi.sse.feed import BusFeed
from eventbus.netapi.sse.fleet import FleetFeed
from eventbus.netapi.sse.events import EventStreams
from eventbus.netapi.sse.hub import Hub
from eventbus.netapi.login import LOGIN_BODY_LIMIT, Logins, Session
from eventbus.netapi.metrics import CONTENT_TYPE, Metrics, api_families, samples
from eventbus.netapi.publisher import Publisher
from eventbus.netapi.sse.pump import Pump, raw_socket
from eventbus.netapi.sse.stream import parse_last_event_id

log = logging.getLogger(__name__)


def _json(value: Any) -> bytes:
    cherrypy.serving.response.headers["Content-Type"] = "application/json"
    return json.dumps(value).encode("utf-8")


def _allow(*methods: str) -> None:
    """405 (with ``Allow``) unless the request uses one of ``methods``."""
    if cherrypy.serving.request.method not in methods:
        cherrypy.serving.response.headers["Allow"] = ", ".join(methods)
        raise cherrypy.HTTPError(405)


def _no_subpath(path: tuple[str, ...]) -> None:
    """404 for ``/route/more/segments`` on a route that has none."""
    if path:
        raise cherrypy.NotFound()


def _single(**params: Any) -> None:
    """400 for a query parameter given more than once (CherryPy hands the route a list of its values)."""
    for name, value in params.items():
        if value is not None and not isinstance(value, str):
            raise cherrypy.HTTPError(400, f"the query parameter {name!r} is given more than once")


def _refuse(exc: ApiError) -> cherrypy.HTTPError:
    return cherrypy.HTTPError(exc.status, exc.reason)


# Where /ui?token= puts the token's login record for the page's script (netapi/static/ui.html).
UI_SESSION = '<script id="session" type="application/json">{}</script>'
UI_SESSION_SLOT = UI_SESSION.format("null").encode()


def _script_json(value: Any) -> str:
    """``value`` as JSON that cannot end the ``<script>`` element it is put in."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class Api:
    """The REST API's routes."""

    def __init__(self, settings: ApiConfig, backends: dict[str, Backend], signer: TokenSigner,
                 hub: Hub, feed: BusFeed | FleetFeed, pump: Pump | None = None,
                 on_stream: Callable[[], None] = lambda: None, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.backends = backends
        self.signer = signer
        self.hub = hub
        self.feed = feed
        self.publisher = Publisher(feed.master)
        self.pump = pump
        self.on_stream = on_stream
        self.collector = metrics
        self.complaints = Complaints(log)
        self.logins = Logins(settings, backends, signer, self.complaints)
        self.streams = EventStreams(hub, feed, pump, self.complaints)
        self.secure = settings.ssl_crt is not None
        self._ui_page = resources.files("eventbus.netapi").joinpath("static/ui.html").read_bytes()
        self.ingest = Ingest(Channels(settings.root_dir), EventTypes(settings.root_dir), settings.max_event_size)
        self.error_reporter = ErrorReporter()
        if metrics is not None:
            # /metrics' eventbus_cloudevents_* come from the ingest's own counts.
            metrics.ingest_counts = self.cloudevents_counts
        self._requests = 0
        self._requests_lock = threading.Lock()
        # CherryPy merges a handler object's _cp_config into each request's: every request is counted.
        self._cp_config = {"hooks.on_start_resource": self._count_request}

    def close(self) -> None:
        """Engine stop (it waits for every thread): let the password-check threads end, close the publisher."""
        self.logins.close()
        self.publisher.close()
        self.error_reporter.close()
        if self.collector is not None:
            self.collector.close()

    def cloudevents_counts(self) -> dict:
        """``{"accepted": {type: n}, "refused": {(status, code): n}}`` of ``/cloudevents`` since start (for metrics)."""
        return self.ingest.counts()

    def own_figures(self) -> dict:
        """The API's own figures, for ``eventbus status`` (``eventbus.netapi.apistatus``): requests answered, and the
        samples of its own metrics (streams, CloudEvents counts) as ``/metrics`` has them."""
        own = api_families(self.hub.streams, self.cloudevents_counts())
        return {"requests": self._requests, "samples": samples(own)}

    def _count_request(self) -> None:
        with self._requests_lock:
            self._requests += 1

    # -- credentials ------------------------------------------------------------------------

    def authenticate(self, query_token: str | None = None) -> Principal:
        """Who is calling: a Bearer JWT, or a login token from header, query or cookie; else 401."""
        request = cherrypy.serving.request
        authorization = request.headers.get("Authorization", "")
        try:
            if authorization:
                scheme, _, credential = authorization.partition(" ")
                if scheme.lower() != "bearer" or not credential.strip():
                    raise AuthenticationError("the Authorization header must be 'Bearer <JWT>'")
                if self.settings.jwt_secret is None:
                    raise AuthenticationError("JWT authentication is not enabled (no jwt_secret)")
                return jwtauth.principal(credential.strip(), self.settings.jwt_secret)
            token = request.headers.get("X-Auth-Token") or query_token
            if not token and "session_id" in request.cookie:
                token = request.cookie["session_id"].value
            if not token:
                raise AuthenticationError("no credentials: send a token (X-Auth-Token, ?token= or the "
                                          "session_id cookie) or an Authorization: Bearer JWT")
            return self._login_principal(token)
        except AuthenticationError as exc:
            self.complaints.refuse("auth", f"refused {request.method} {request.path_info} from "
                                           f"{request.remote.ip}: {exc.reason}")
            raise _refuse(exc) from None

    def _login_principal(self, token: str) -> Principal:
        user, eauth, start, expire = self.signer.check(token)
        backend = self.backends.get(eauth)
        if backend is None or user not in backend.perms:
            raise AuthenticationError(f"user {user!r} may no longer use the API")
        perms = backend.perms[user]
        return Principal(user, eauth, start, expire, perms, auth.tag_filter(perms), ("globs", *perms))

    # -- routes -----------------------------------------------------------------------------

    @cherrypy.expose
    def index(self, *path: str, **_params: Any) -> bytes:
        _no_subpath(path)
        _allow("GET", "HEAD")
        return _json({"return": "eventbus REST API",
                      "routes": ["POST /login", "GET /events", "POST /hook/<path>", "POST /cloudevents/<channel>",
                                 "GET /ui", "GET /metrics"]})

    @cherrypy.expose
    def login(self, *path: str, **_params: Any) -> bytes:
        """``POST /login``: check a password (``eventbus.netapi.login``), answer Salt's token record and set ``session_id``."""
        _no_subpath(path)
        _allow("POST")
        request = cherrypy.serving.request
        try:
            session = self.logins.attempt(request.remote.ip, self._read_body(LOGIN_BODY_LIMIT),
                                          request.headers.get("Content-Type"))
        except TooManyRequestsError as exc:
            # CherryPy drops Retry-After from error answers; errors.error_page puts it back from here.
            request.retry_after = exc.retry_after  # type: ignore[attr-defined]
            raise _refuse(exc) from None
        except ApiError as exc:
            raise _refuse(exc) from None
        cookie = cherrypy.serving.response.cookie
        cookie["session_id"] = session.token
        cookie["session_id"]["path"] = "/"
        cookie["session_id"]["httponly"] = True
        cookie["session_id"]["samesite"] = "Strict"
        cookie["session_id"]["max-age"] = int(self.settings.token_expire)
        if self.secure:
            cookie["session_id"]["secure"] = True
        cherrypy.serving.response.headers["X-Auth-Token"] = session.token
        return _json({"return": [session.record()]})

    @cherrypy.expose
    def events(self, *path: str, token: str | None = None, tag: str | None = None,
               last_event_id: str | None = None, **_params: Any) -> Iterator[bytes]:
        """``GET /events``: the master bus as Server-Sent Events, resumable by ``Last-Event-ID``."""
        _no_subpath(path)
        _allow("GET")
        _single(token=token, tag=tag, last_event_id=last_event_id)
        principal = self.authenticate(token)
        request = cherrypy.serving.request
        try:
            last_seen = parse_last_event_id(request.headers.get("Last-Event-ID") or last_event_id)
        except ValueError as exc:
            raise cherrypy.HTTPError(400, str(exc)) from None
        accepts = principal.accepts
        view_key = (principal.view, tag or "")
        if tag:
            accepts = auth.both(accepts, auth.tag_filter((tag,)))
        if self.hub.streams >= self.settings.stream_limit:
            raise cherrypy.HTTPError(503, f"too many streams (stream_limit {self.settings.stream_limit}); "
                                          "retry later")
        headers = cherrypy.serving.response.headers
        headers["Content-Type"] = "text/event-stream"
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
        headers["Connection"] = "close"  # a stream that ends (expiry, drop) ends its connection too
        self.on_stream()
        log.debug("stream opened for %s from %s", principal.user, request.remote.ip)
        sock = raw_socket(request.rfile) if self.pump is not None else None
        return self.streams.serve(principal, view_key, accepts, last_seen, request.remote.ip, sock)

    events._cp_config = {"response.stream": True}  # type: ignore[attr-defined]

    @cherrypy.expose
    def hook(self, *path: str, **_params: Any) -> bytes:
        """``POST /hook/<path>``: fire ``salt/netapi/hook/<path>`` with the parsed body and headers."""
        _allow("POST")
        if not self.settings.webhook_disable_auth:
            self.authenticate(_params.get("token") if isinstance(_params.get("token"), str) else None)
        request = cherrypy.serving.request
        try:
            raw = self._read_body(self.settings.max_event_size)
            data = {"body": hooks.parse_body(raw, request.headers.get("Content-Type")),
                    "headers": hooks.public_headers(request.headers)}
            tag = hooks.hook_tag(path)
            fired = self.publisher.fire(data, tag)
        except InvalidEventError as exc:
            raise cherrypy.HTTPError(413 if isinstance(exc, EventTooLargeError) else 400, str(exc)) from None
        except ApiError as exc:
            raise _refuse(exc) from None
        if not fired:
            raise cherrypy.HTTPError(503, "the master bus is not reachable; the hook was not delivered")
        return _json({"success": True})

    @cherrypy.expose
    def cloudevents(self, *path: str, **_params: Any) -> bytes:
        """``POST /cloudevents/<channel>``: signed CloudEvents in (``eventbus.netapi.cloudevents.ingest``), fired as ``cloudevents/<type>``."""
        _allow("POST")
        request = cherrypy.serving.request
        ingest = self.ingest
        channel = None
        try:
            if len(path) != 1:
                raise Refusal(404, None, "no channel in the URL: POST /cloudevents/<channel>")
            channel = ingest.channel(path[0])
            too_large = False
            try:
                raw = self._read_body(self.settings.max_event_size)
            except ApiError as exc:
                if exc.status != 413:
                    raise Refusal(exc.status, "InvalidParameter", exc.reason) from None
                raw, too_large = b"", True
            if too_large:
                raise Refusal(413, "PayloadTooLarge",
                              f"the request body is over the limit of {self.settings.max_event_size} bytes")
            result = ingest.check(channel, raw, request.headers)
        except Refusal as refusal:
            ingest.refused(refusal.code, refusal.status)
            if refusal.code is not None and channel is not None:
                self.error_reporter.report(channel, refusal.code, refusal.reason)
            if refusal.status == 404:
                request.keep_reason = True  # type: ignore[attr-defined]
            raise cherrypy.HTTPError(refusal.status, refusal.reason) from None
        try:
            fired = self.publisher.fire_all(result.events)
        except InvalidEventError as exc:
            raise cherrypy.HTTPError(413 if isinstance(exc, EventTooLargeError) else 400, str(exc)) from None
        if fired < len(result.events):
            # Those fired are on the bus: remember them, so the sender's retry fires only the rest.
            result.keys = result.keys[:fired]
            result.events = result.events[:fired]
            ingest.remember(result)
            raise cherrypy.HTTPError(503, f"the master bus is not reachable; {fired} of {len(result.accepted)} "
                                          "events were fired, retry the request (those are answered as duplicates)")
        ingest.remember(result)
        return _json({"success": True, "accepted": result.accepted, "duplicates": result.duplicates})

    @cherrypy.expose
    def ui(self, *path: str, token: str | None = None, **_params: Any) -> bytes:
        """``GET /ui``: the live view page; ``?token=`` (the address ``make run`` prints) logs it in."""
        _no_subpath(path)
        _allow("GET", "HEAD")
        headers = cherrypy.serving.response.headers
        headers["Content-Type"] = "text/html; charset=utf-8"
        if token is None:
            return self._ui_page
        # The page then holds the token: keep it out of caches and of Referer headers.
        headers["Cache-Control"] = "no-store"
        headers["Referrer-Policy"] = "no-referrer"
        session = self._ui_session(token if isinstance(token, str) else "")
        return self._ui_page.replace(UI_SESSION_SLOT, UI_SESSION.format(_script_json(session)).encode())

    def _ui_session(self, token: str) -> dict:
        """The login record of ``token`` for the page (as ``POST /login`` answers it), or ``{"error": why}``."""
        request = cherrypy.serving.request
        try:
            principal = self._login_principal(token)
        except AuthenticationError as exc:
            self.complaints.refuse("auth", f"refused GET /ui?token= from {request.remote.ip}: {exc.reason}")
            return {"error": exc.reason}
        return Session(token, principal.start, principal.expire, principal.user, principal.eauth,
                       principal.perms).record()

    @cherrypy.expose
    def metrics(self, *path: str, token: str | None = None, **_params: Any) -> bytes:
        """``GET /metrics``: Prometheus' text format, for an admin or anyone with ``metrics_public``."""
        _no_subpath(path)
        _allow("GET", "HEAD")
        if self.collector is None:
            raise cherrypy.NotFound()
        if not self.settings.metrics_public:
            principal = self.authenticate(token)
            if "*" not in principal.perms:
                request = cherrypy.serving.request
                self.complaints.refuse("metrics", f"refused GET /metrics to {principal.user} from "
                                                  f"{request.remote.ip}: not an admin")
                raise cherrypy.HTTPError(403, f"user {principal.user!r} may not read the metrics: "
                                              "an admin (perms '*' or an admin JWT) may")
        body = self.collector.render()
        cherrypy.serving.response.headers["Content-Type"] = CONTENT_TYPE
        cherrypy.serving.response.headers["Cache-Control"] = "no-store"
        return body

    # -- helpers ----------------------------------------------------------------------------

    def _read_body(self, limit: int) -> bytes:
        """The raw request body, at most ``limit`` bytes, else 413 (checked before reading when possible)."""
        request = cherrypy.serving.request
        length = request.headers.get("Content-Length")
        if length is not None:
            if not length.isdigit():
                raise ApiError(400, "the Content-Length header is not a number")
            if int(length) > limit:
                request.close_connection = True  # type: ignore[attr-defined]
                raise ApiError(413, f"the request body is {length} bytes, over the limit of {limit} bytes")
        raw = request.rfile.read(limit + 1)
        if len(raw) > limit:
            raise ApiError(413, f"the request body is over the limit of {limit} bytes")
        return raw


def cors_hook(origins: tuple[str, ...]) -> Callable[[], None]:
    """A ``before_handler`` hook adding CORS headers for ``origins`` and answering preflights."""
    def cors() -> None:
        request, response = cherrypy.serving.request, cherrypy.serving.response
        origin = request.headers.get("Origin")
        if origin is None or ("*" not in origins and origin not in origins):
            return
        response.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
        if "*" not in origins:
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Expose-Headers"] = "X-Auth-Token"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = ("Content-Type, X-Auth-Token, Authorization, "
                                                                "Last-Event-ID")
            response.headers["Access-Control-Max-Age"] = "600"
            response.status = 204
            response.body = b""
            request.handler = None
    return cors
