"""The one outbound HTTP client (reactor ``post``, webhooks, CloudEvents reports and ``send``) against a real server."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from eventbus import httppost
from eventbus.errors import EventBusError, HttpConnectionError, InvalidArgumentError
from bench.procs import free_port


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless told otherwise

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server = self.server
        with server.lock:
            server.received.append((self.client_address[1], self.path, body, self.headers.get("X-Token")))
        if self.path == "/slow":
            server.release.wait(30)
        answer = b'{"got": %d}' % len(body)
        try:
            self.send_response(500 if self.path == "/fail" else 200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        except ConnectionError:  # a client that gave up on /slow has closed: nothing to answer
            self.close_connection = True
            return
        # ``/drop`` says nothing of closing, then closes: the client finds out on its next request.
        self.close_connection = self.path == "/drop"

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.received, httpd.lock, httpd.release = [], threading.Lock(), threading.Event()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


def test_posts_to_one_host_share_one_connection_and_return_status_and_body(server):
    poster = httppost.Poster()
    try:
        answers = [poster.post(f"{server.url}/ok/{n}?q=1", b"x" * n, {"X-Token": "t"}, 5) for n in range(1, 4)]
        failed = poster.post(server.url + "/fail", b"{}", {}, 5)
    finally:
        poster.close()
    assert [(a.status, a.ok, a.body) for a in answers] == [(200, True, b'{"got": %d}' % n) for n in range(1, 4)]
    assert (failed.status, failed.ok) == (500, False)
    assert failed.problem == f"{server.url}/fail answered 500 Internal Server Error"
    assert [path for _port, path, _body, _token in server.received] == ["/ok/1?q=1", "/ok/2?q=1", "/ok/3?q=1",
                                                                        "/fail"]
    assert {token for *_rest, token in server.received[:3]} == {"t"}
    assert len({port for port, *_rest in server.received}) == 1, "one kept-alive connection"


def test_a_connection_the_server_dropped_while_idle_is_made_again_and_the_post_sent_once(server):
    poster = httppost.Poster()
    try:
        assert poster.post(server.url + "/drop", b"1", {}, 5).ok
        assert poster.post(server.url + "/ok", b"2", {}, 5).ok
    finally:
        poster.close()
    assert [body for _port, _path, body, _token in server.received] == [b"1", b"2"]
    assert len({port for port, *_rest in server.received}) == 2


def test_no_answer_is_one_error_naming_the_url_and_a_timeout_is_not_sent_again(server):
    dead = f"http://127.0.0.1:{free_port()}/x"
    with pytest.raises(HttpConnectionError) as refused:
        httppost.post(dead, b"{}", {}, 5)
    assert refused.value.url == dead and dead in str(refused.value)
    assert isinstance(refused.value, EventBusError) and isinstance(refused.value, ConnectionError)
    with pytest.raises(HttpConnectionError, match="timed out"):
        httppost.post(server.url + "/slow", b"once", {}, 0.5)
    assert [body for *_rest, body, _token in server.received] == [b"once"]
    for url in ("ftp://127.0.0.1/x", "http://", "http://127.0.0.1:99999/"):
        with pytest.raises(InvalidArgumentError):
            httppost.post(url, b"", {}, 1)
    with pytest.raises(InvalidArgumentError, match="header"):
        httppost.post(server.url + "/ok", b"", {"X-Token": "a\r\nInjected: yes"}, 1)
