"""HTTP as a stranger sends it: the gate's request framing, then the whole API in this process.

``http_head``: ``eventbus.netapi.limits.examine`` and ``ChunkedBody`` on any bytes,
fed whole and fed in pieces the way ``eventbus.netapi.connloop`` feeds them. The gate
hands on a request only when it is whole and within the limits; it must
find the same request end whichever way the bytes arrive (else a client
could smuggle a second request past it), and never refuse a request sent
at once that it would take in pieces, or the other way round.

``http_api``: the bytes as one connection's requests, through the gate's
framing, cheroot's request parser (the gated server's connection class) and
the real CherryPy app of ``eventbus.netapi.server.build`` (``/login``, ``/events``
with any ``Last-Event-ID``/``tag``/``token``, ``/hook``, ``/cloudevents``
structured, binary and batch, ``/metrics``, ``/ui``), on a socketpair, with a
real master bus in this process. Every answer must be an HTTP response that
is not a 500, no traceback may be logged, no secret may appear in an
answer, and an event a request fires must carry the hook's tag.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import urllib.parse
from typing import Iterator

import cherrypy
import jwt
import zmq

from bench.procs import free_port, write_config
from eventbus.daemon.bus import Bus
from eventbus.daemon.loop import Loop
from eventbus.cloudevents import channels, eventtypes
from eventbus import config
from eventbus.netapi import auth, limits, login, server
from tests.fuzz import core

MAX_BODY = 8192
PASSWORDS = {"alice": "alice-secret-pw-0123", "bob": "bob-secret-pw-4567"}
JWT_SECRET = "fuzz-jwt-secret-0123456789-abcdefghijklmnop"
TOKEN_KEY = bytes(range(32))
CHANNEL_SECRET = "fuzz-channel-secret-0123456789abcdef"
REQUESTS_PER_INPUT = 4
ADDRESSES = 4  # client addresses an input may come from (each has its own failed-login count)

HTTP_WORDS = (b"GET ", b"POST ", b"OPTIONS ", b"HEAD ", b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", b"\r\n\r\n", b"\r\n",
              b"Host: a\r\n", b"Content-Length: ", b"Transfer-Encoding: chunked\r\n", b"Expect: 100-continue\r\n",
              b"Connection: close\r\n", b"Content-Type: application/json\r\n",
              b"Content-Type: application/x-www-form-urlencoded\r\n", b"Content-Type: application/cloudevents+json\r\n",
              b"Content-Type: application/cloudevents-batch+json\r\n", b"X-Auth-Token: ", b"Authorization: Bearer ",
              b"Last-Event-ID: ", b"Cookie: session_id=", b"Origin: https://a.example\r\n", b"X-Hub-Signature: sha256=",
              b"ce-specversion: 1.0\r\n", b"ce-type: ", b"ce-id: ", b"ce-source: ", b"ce-version: ", b"/login",
              b"/events", b"/hook/", b"/cloudevents/shop", b"/metrics", b"/ui", b"?token=", b"&tag=", b"?tag=",
              b"&last_event_id=", b"%00", b"%2F", b"..", b"0\r\n\r\n", b"ffffffffffffffff\r\n", b";ext=1",
              core.MESSAGE_MARK)


# -- the gate's framing ------------------------------------------------------------------------


def gate_verdict(pieces: list[bytes], max_body: int = MAX_BODY) -> tuple[limits.Verdict, int]:
    """The gate's verdict on a request arriving in ``pieces`` (``Gate._advance``'s steps): (verdict, bytes in)."""
    buffer = bytearray()
    chunks: limits.ChunkedBody | None = None
    need = 0
    verdict = limits.INCOMPLETE
    for piece in pieces:
        buffer += piece
        if need > 0 and len(buffer) < need:
            continue
        if chunks is not None:
            verdict = chunks.scan(buffer)
        else:
            verdict = limits.examine(buffer, max_body)
            chunks = verdict.chunks
        if verdict.status == 0:
            need = verdict.need
            continue
        return verdict, len(buffer)
    return verdict, len(buffer)


def _cuts(data: bytes) -> list[list[bytes]]:
    """Ways the bytes may arrive: whole, in two pieces, in ragged pieces, a byte at a time (short inputs)."""
    digest = hashlib.sha1(data).digest()
    ways = [[data]]
    if len(data) > 1:
        at = 1 + digest[0] * 256 % (len(data) - 1) if len(data) > 2 else 1
        ways.append([data[:at], data[at:]])
        sizes = [1 + b % 13 for b in digest]
        pieces, pos, index = [], 0, 0
        while pos < len(data):
            size = sizes[index % len(sizes)]
            pieces.append(data[pos:pos + size])
            pos += size
            index += 1
        ways.append(pieces)
    if len(data) <= 256:
        ways.append([data[i:i + 1] for i in range(len(data))])
    return ways


def check_head(data: bytes) -> None:
    whole, _ = gate_verdict([data])
    for pieces in _cuts(data)[1:]:
        split, seen = gate_verdict(pieces)
        if split.status == 200 and (whole.status != 200 or split.need != whole.need):
            raise core.Finding(f"the gate hands on a request of {split.need} bytes when it comes in "
                               f"{len(pieces)} pieces, but says {whole.status} (need {whole.need}) to it whole")
        if whole.status == 200 and split.status not in (0, 200) and seen >= whole.need:
            raise core.Finding(f"the gate refuses {split.status} ({split.reason}) a request in {len(pieces)} "
                               f"pieces that it takes whole")
    if whole.status == 200:
        if whole.need > len(data):
            raise core.Finding(f"the gate hands on a request of {whole.need} bytes with {len(data)} in")
        again, _ = gate_verdict([data[:whole.need]])
        if again.status != 200 or again.need != whole.need:
            raise core.Finding(f"the request the gate handed on ({whole.need} bytes) is not whole by itself")


@core.target("http_head", "eventbus.netapi.limits.examine + ChunkedBody: the gate's request framing and limits "
                          "(431, 414, 413, 400) on bytes arriving whole or in pieces",
             max_len=20000, per_input=5.0, words=HTTP_WORDS, seeds=lambda: [s for s in http_seeds()])
def http_head() -> Iterator[core.OneInput]:
    yield check_head


# -- the whole API in this process -------------------------------------------------------------


class InProcessApi:
    """A master bus (on a thread) and the API's app and cheroot server, serving socketpairs."""

    def __init__(self, box: core.Sandbox) -> None:
        root = box.inside
        self.root = root
        conf = root / "conf"
        write_config(conf, "master", root_dir=str(root), sock_dir="m", event_window=100,
                     journal_max_bytes=1 << 20, max_event_size=MAX_BODY, log_level="critical",
                     publish_port=free_port(), ret_port=free_port())
        write_config(conf, "api", root_dir=str(root), master_config="master", port=free_port(),
                     max_event_size=MAX_BODY, jwt_secret=JWT_SECRET, token_expire=10 * 365 * 86400,
                     cors_origin="https://a.example", log_level="critical",
                     external_auth={"file": {"users_file": "users", "alice": ["*"], "bob": ["myco/*"]}})
        users = "".join(f"{name}:{auth.hash_password(pw, n=2, r=1, p=1)}\n" for name, pw in PASSWORDS.items())
        (root / "users").write_text(users)
        key_path = root / server.TOKEN_KEY
        key_path.parent.mkdir(parents=True, exist_ok=True)
        key_path.write_bytes(TOKEN_KEY)
        channels.add(root, "shop")
        channels._write_private(channels._secret_path(root, "shop"),
                                {"secret": CHANNEL_SECRET, "previous": None, "previous_until": 0})
        eventtypes.add(root, "com.example.order", {"type": "object", "properties": {"order": {"type": "object"}}})
        eventtypes.finalize(root, "com.example.order", "1.0")
        self.master = config.load(config.MasterConfig, conf / "master")
        self.settings = config.load(config.ApiConfig, conf / "api")
        self._start_master()
        self.app, global_config, app_config = server.build(self.settings)
        self.app.pump = self.app.streams.pump = None  # streams are written by their request (as under TLS)
        self.app.hub.close()  # an open stream ends after what it resumes: one input, one bounded answer
        cherrypy.config.update({k: v for k, v in global_config.items() if not k.startswith("server.")})
        cherrypy.log.error_log.propagate = True
        cherrypy.log.access_log.propagate = False
        cherrypy.tree.apps.clear()
        cherrypy.tree.mount(self.app, "/", app_config)
        self.app.feed.start()
        self.server = server.GatedServer(cherrypy.server, max_body=max(MAX_BODY, login.LOGIN_BODY_LIMIT),
                                       max_open=64)
        self.secrets = [s.encode() for s in (*PASSWORDS.values(), JWT_SECRET, CHANNEL_SECRET)] + [TOKEN_KEY]

    def _start_master(self) -> None:
        self.loop = Loop()
        self.master.sock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.bus = Bus(self.master, zmq.Context(), self.loop)
        self.fired: list[tuple[str, bytes]] = []
        publish = self.bus._out

        def out(batch: list[tuple[int, bytes]]) -> None:  # what the API fires, noted for the checks
            for _, frame in batch:
                tag, _, data = frame[16:].partition(b"\x00")
                self.fired.append((tag.decode(errors="replace"), data))
            publish(batch)
        self.bus._out = out
        self.thread = threading.Thread(target=self.loop.run, name="fuzz-master", daemon=True)
        self.thread.start()

    def serve(self, data: bytes, address: str) -> bytes:
        """Everything the API answers on one connection that sends ``data`` and then half-closes."""
        ours, theirs = socket.socketpair()
        for sock in (ours, theirs):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        ours.shutdown(socket.SHUT_WR)  # the request is all in the buffer: a read past it ends, never waits
        theirs.settimeout(5.0)
        conn = self.server.ConnectionClass(self.server, theirs)
        conn.remote_addr, conn.remote_port = address, 40000
        buffer = data
        try:
            for _ in range(REQUESTS_PER_INPUT):
                verdict, _ = gate_verdict([buffer])
                if verdict.status != 200:
                    break
                conn.rfile._read_buf, conn.rfile._read_pos = bytes(buffer), 0
                if not conn.communicate() or not conn.rfile.has_data():
                    break
                rfile = conn.rfile
                buffer = rfile._read_buf[rfile._read_pos:]
        finally:
            conn.close()
        ours.setblocking(False)
        answer = bytearray()
        try:
            while chunk := ours.recv(1 << 20):
                answer += chunk
        except BlockingIOError:
            pass
        ours.close()
        return bytes(answer)

    def close(self) -> None:
        self.app.feed.stop()
        self.app.close()
        self.loop.stop()
        self.thread.join(5)
        self.bus.close()
        self.bus.pull_socket.context.destroy(linger=0)


def _statuses(answer: bytes) -> list[int]:
    """The status codes of the responses in ``answer`` (bodies skipped by their Content-Length)."""
    found = []
    pos = 0
    while pos < len(answer):
        end = answer.find(b"\r\n\r\n", pos)
        if end < 0 or not answer.startswith(b"HTTP/1.", pos):
            raise core.Finding(f"the API answered bytes that are not an HTTP response: {answer[pos:pos + 120]!r}")
        head = answer[pos:end].decode("latin-1")
        code = int(head.split(" ", 2)[1])
        found.append(code)
        if 100 <= code < 200:
            pos = end + 4
            continue
        length = None
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length is None:
            break  # a stream or a close-delimited body: the last response
        pos = end + 4 + length
    return found


def check_api(api: InProcessApi, data: bytes, watcher: core.Tracebacks, clock: core.Clock) -> None:
    address = f"10.0.0.{1 + hashlib.sha1(data[:64]).digest()[0] % ADDRESSES}"
    with clock.bound("one connection's requests"):
        answer = api.serve(data, address)
    watcher.check()
    for code in _statuses(answer):
        if code == 500:
            raise core.Finding(f"the API answered {code}: {answer[:400]!r}")
    for secret in api.secrets:
        if secret in answer and secret not in data:  # a client's own words echoed back are no leak
            raise core.Finding(f"an answer holds a secret: {answer[:300]!r}")
    fired, api.fired = api.fired, []  # the bus thread numbers them meanwhile: a late one is checked next time
    for tag, _ in fired:
        if not tag.startswith(("salt/netapi/hook", "cloudevents/")):
            raise core.Finding(f"a request fired an event tagged {tag[:100]!r}")


@core.target("http_api", "eventbus.netapi.connloop framing + cheroot + the CherryPy app (login, events, hook, cloudevents, "
                         "metrics, ui) in-process on a socketpair, with a real master bus",
             max_len=16384, per_input=10.0, words=HTTP_WORDS, seeds=lambda: http_seeds())
def http_api() -> Iterator[core.OneInput]:
    box = core.Sandbox(core.sandbox_root("http_api"))
    clock = core.Clock(8.0)
    with core.quiet_logs() as watcher:
        api = InProcessApi(box)
        try:
            yield lambda data: check_api(api, data, watcher, clock)
        finally:
            api.close()
            box.remove()


# -- seeds --------------------------------------------------------------------------------------


def _request(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: api"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _chunked(method: str, path: str, body: bytes, headers: dict | None = None) -> bytes:
    head = _request(method, path, b"", {**(headers or {}), "Transfer-Encoding": "chunked"})
    head = head.replace(b"Content-Length: 0\r\n", b"")
    half = len(body) // 2
    return head + b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in (body[:half], body[half:]) if p) + b"0\r\n\r\n"


# Seeds are the same bytes every time they are made: fixed times (tokens valid until 2100) and ids.
ISSUED, LASTING = 1_780_000_000, 4_102_444_800


def _token(user: str) -> str:
    """A login token as ``auth.TokenSigner.issue`` makes it, with fixed times and id."""
    claims = {"sub": user, "eauth": "file", "iat": ISSUED, "exp": LASTING, "jti": "f0f0f0f0"}
    return jwt.encode(claims, TOKEN_KEY, algorithm=auth.TOKEN_ALGORITHM)


def _sign(body: bytes) -> str:
    return "sha256=" + hmac.new(CHANNEL_SECRET.encode(), body, hashlib.sha256).hexdigest()


def http_seeds() -> list[bytes]:
    """Requests the API tests and a browser send: logins, streams, hooks, CloudEvents, metrics, the page."""
    alice, bob = _token("alice"), _token("bob")
    admin_jwt = jwt.encode({"user": {"username": "ops", "role": "admin"}, "exp": LASTING}, JWT_SECRET,
                           algorithm="HS256")
    user_jwt = jwt.encode({"user": {"username": "m1", "role": "user"}, "exp": LASTING}, JWT_SECRET, algorithm="HS256")
    login_json = json.dumps({"username": "alice", "password": PASSWORDS["alice"], "eauth": "file"}).encode()
    login_form = urllib.parse.urlencode({"username": "bob", "password": "wrong", "eauth": "file"}).encode()
    event = {"specversion": "1.0", "id": "e1", "source": "/shop", "type": "com.example.order", "version": "1.0",
             "data": {"order": {"qty": 2}}}
    structured = json.dumps(event).encode()
    batch = json.dumps([event, {**event, "id": "e2"}]).encode()
    binary = json.dumps(event["data"]).encode()
    ce_headers = {"ce-specversion": "1.0", "ce-id": "b1", "ce-source": "/shop", "ce-type": "com.example.order",
                  "ce-version": "1.0", "Content-Type": "application/json"}
    hook = json.dumps({"a": [1, 2], "b": {"c": None}}).encode()
    seeds = [
        _request("POST", "/login", login_json, {"Content-Type": "application/json"}),
        _request("POST", "/login", login_form, {"Content-Type": "application/x-www-form-urlencoded"}),
        _request("GET", "/events", headers={"X-Auth-Token": alice, "Last-Event-ID": "1"}),
        _request("GET", f"/events?token={bob}&tag=myco/*&last_event_id=5"),
        _request("GET", "/events?tag=salt/", headers={"Authorization": f"Bearer {admin_jwt}"}),
        _request("GET", "/events", headers={"Cookie": f"session_id={alice}"}),
        _request("GET", "/events", headers={"Authorization": f"Bearer {user_jwt}", "Last-Event-ID": "0"}),
        _request("POST", "/hook/ci/build", hook, {"Content-Type": "application/json", "X-Auth-Token": alice}),
        _request("POST", f"/hook/x?token={alice}", b"a=1&b=2", {"Content-Type": "application/x-www-form-urlencoded"}),
        _chunked("POST", "/hook/chunked", hook, {"Content-Type": "application/json", "X-Auth-Token": bob,
                                                 "Expect": "100-continue"}),
        _request("POST", "/cloudevents/shop", structured, {"Content-Type": "application/cloudevents+json",
                                                           "X-Hub-Signature": _sign(structured)}),
        _request("POST", "/cloudevents/shop", batch, {"Content-Type": "application/cloudevents-batch+json",
                                                      "X-Hub-Signature": _sign(batch)}),
        _request("POST", "/cloudevents/shop", binary, {**ce_headers, "X-Hub-Signature": _sign(binary)}),
        _request("POST", "/cloudevents/nosuch", b"{}", {"Content-Type": "application/cloudevents+json"}),
        _request("GET", "/metrics", headers={"X-Auth-Token": alice}),
        _request("GET", f"/metrics?token={bob}"),
        _request("GET", f"/ui?token={alice}"),
        _request("GET", "/"),
        _request("OPTIONS", "/events", headers={"Origin": "https://a.example",
                                                "Access-Control-Request-Method": "GET"}),
        _request("GET", "/", headers={"Connection": "keep-alive"}) + _request("GET", "/nosuch"),
    ]
    return seeds

