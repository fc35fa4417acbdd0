"""The REST API under hostile clients (issue 13): slowloris, connection floods, login guessing, huge heads.

Every test drives a real ``eventbus api`` over real sockets. Time bounds
are generous (a loaded 2-core machine) yet fail on the API before the gate:
there, 50 half-sent heads made ``/login`` time out after 10 s.
"""
from __future__ import annotations

import concurrent.futures
import http.client
import json
import socket
import subprocess
import time
from contextlib import ExitStack

import pytest
import requests

from tests.apinode import PASSWORDS, ApiEnv, running_api
from tests.sse import SSEReader
from tests.helpers import wait_for

FAST = 3.0  # seconds a login may take here at worst (scrypt is ~60 ms; the old API: 9 s, then timeouts)
HALF_HEAD = b"GET /events HTTP/1.1\r\nHost: x\r\n"


def connect(env: ApiEnv, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", env.port), timeout=15, source_address=(source, 0))
    return sock


def answer_of(sock: socket.socket, limit: float = 15.0) -> tuple[int, dict, bytes]:
    """Status, headers and body of the one answer on ``sock`` (read until the server closes)."""
    sock.settimeout(limit)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), data[:200]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def timed_login(env: ApiEnv, source: str = "127.0.0.1", password: str | None = None,
                user: str = "alice") -> tuple[int, float, dict]:
    """(status, seconds, headers) of one /login sent from ``source``."""
    conn = http.client.HTTPConnection("127.0.0.1", env.port, timeout=15, source_address=(source, 0))
    body = json.dumps({"username": user, "password": password or PASSWORDS[user], "eauth": "file"})
    start = time.monotonic()
    try:
        conn.request("POST", "/login", body=body, headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        return answer.status, time.monotonic() - start, {k.lower(): v for k, v in answer.getheaders()}
    finally:
        conn.close()


def test_half_open_connections_and_slow_bodies_do_not_delay_login_hook_or_streams():
    with running_api() as env, ExitStack() as held:
        token = env.login()
        for index in range(120):  # the old API timed out /login with 50
            sock = held.enter_context(connect(env, "127.0.0.8"))
            if index % 4 == 0:
                sock.sendall(HALF_HEAD)
            elif index % 4 == 1:
                sock.sendall(b"POST /hook/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{\"a\": ")
            elif index % 4 == 2:
                sock.sendall(b"POST /hook/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"6\r\n{\"a\": \r\n")
            # else: connected, sent nothing
        for _ in range(5):
            status, seconds, _ = timed_login(env)
            assert status == 200 and seconds < FAST, seconds
        start = time.monotonic()
        hooked = requests.post(env.url("/hook/fine"), json={"ok": 1}, headers={"X-Auth-Token": token}, timeout=15)
        assert hooked.status_code == 200 and time.monotonic() - start < FAST
        stream = SSEReader(env, params={"token": token, "tag": "hostile/*"}, timeout=15)
        held.callback(stream.close)
        assert stream.response.status_code == 200
        env.fire({"n": 1}, "hostile/one")
        record = stream.next_record()
        assert record is not None and record["tag"] == "hostile/one" and record["data"]["data"]["n"] == 1


def test_failed_logins_beyond_login_rate_get_429_with_retry_after_and_other_addresses_still_log_in():
    with running_api(login_rate=3) as env:
        for _ in range(3):
            assert timed_login(env, password="wrong-password-1")[0] == 401
        status, _, headers = timed_login(env, password="wrong-password-2")
        assert status == 429 and 1 <= int(headers["retry-after"]) <= 60
        assert timed_login(env)[0] == 429  # even the right password: the address is locked out for the minute
        with concurrent.futures.ThreadPoolExecutor(40) as pool:  # a flood from the locked-out address
            flood = [pool.submit(timed_login, env, "127.0.0.1", "wrong-password-3") for _ in range(200)]
            status, seconds, _ = timed_login(env, source="127.0.0.2")
            assert status == 200 and seconds < FAST, seconds
            assert {f.result()[0] for f in flood} == {429}
        log = wait_for(lambda: "failed logins in a minute" in env.api.log and env.api.log, what="the 429 log line")
        assert log.count("failed logins in a minute") == 1  # once per address per minute, not per request
        assert "wrong-password" not in log


def test_concurrent_wrong_logins_cost_at_most_login_rate_password_checks():
    with running_api(login_rate=5) as env:
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            flood = [pool.submit(timed_login, env, "127.0.0.3", f"guess-{n}") for n in range(100)]
            status, seconds, _ = timed_login(env, source="127.0.0.4")
            assert status == 200 and seconds < FAST, seconds
            statuses = [f.result()[0] for f in flood]
        assert set(statuses) <= {401, 429}
        assert statuses.count(401) <= 5  # the rest were refused before any scrypt ran
        unknown = timed_login(env, source="127.0.0.5", user="mallory", password="x")
        assert unknown[0] == 401


def test_oversized_heads_too_many_headers_and_long_urls_are_refused():
    with running_api() as env:
        sock = connect(env)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        status, headers, body = answer_of(sock)
        assert status == 431 and "16384" in json.loads(body)["return"]
        sock = connect(env)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17_000)  # no end of head yet
        assert answer_of(sock)[0] == 431
        sock = connect(env)
        sock.sendall(b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: 1\r\n" % n for n in range(150)) + b"\r\n")
        status, _, body = answer_of(sock)
        assert status == 431 and "header lines" in json.loads(body)["return"]
        sock = connect(env)
        sock.sendall(b"GET /?q=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer_of(sock)[0] == 414
        assert requests.get(env.url("/"), timeout=10).status_code == 200  # and the API is fine
        assert "answered 431" in env.api.log


def test_a_body_over_max_event_size_gets_413_before_it_is_sent():
    with running_api(webhook_disable_auth=True) as env:
        sock = connect(env)
        sock.sendall(b"POST /hook/big HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 50000000\r\n\r\n" + b"[" + b"1," * 1000)
        status, headers, body = answer_of(sock)  # answered with 49.99 MB still unsent
        assert status == 413 and "max_event_size" not in body.decode() and "1048576" in body.decode()
        assert headers["connection"] == "close"
        big = requests.post(env.url("/hook/big"), data=b"x" * 2_000_000, timeout=15)  # a client that sends it all
        assert big.status_code == 413
        sock = connect(env)
        sock.sendall(b"POST /hook/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"100000\r\n" + b"a" * 1000)  # one chunk of 1 MiB announced, over the limit with the next
        sock.sendall(b"a" * (0x100000 - 1000) + b"\r\n10\r\n")
        status, _, body = answer_of(sock)
        assert status == 413


def test_chunked_bodies_are_delivered_whole():
    with running_api(webhook_disable_auth=True) as env:
        def pieces():
            yield b'{"n": '
            yield b'42, "pad": "' + b"p" * 100_000 + b'"}'
        hooked = requests.post(env.url("/hook/chunked"), data=pieces(), headers={"Content-Type": "application/json"},
                               timeout=15)
        assert hooked.status_code == 200 and hooked.json() == {"success": True}


def test_idle_keep_alive_and_unfinished_requests_are_closed_soon():
    with running_api() as env:
        idle = connect(env)
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        idle.settimeout(15)
        first = idle.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        unfinished = connect(env)
        unfinished.sendall(HALF_HEAD)
        start = time.monotonic()
        rest = b""
        while True:
            chunk = idle.recv(65536)
            if not chunk:
                break
            rest += chunk
        idle_closed = time.monotonic() - start
        assert b"HTTP/1.1" not in rest and idle_closed < 12, idle_closed  # closed, with no second answer
        status, _, body = answer_of(unfinished, limit=20)
        assert status == 408 and time.monotonic() - start < 20


def test_one_address_cannot_hold_every_connection():
    with running_api() as env, ExitStack() as held:
        refused = None
        for _ in range(200):
            sock = held.enter_context(connect(env, "127.0.0.6"))
            sock.sendall(HALF_HEAD)
            sock.settimeout(0.05)
            try:
                data = sock.recv(4096)
            except socket.timeout:
                continue
            refused = data
            break
        assert refused is not None and refused.startswith(b"HTTP/1.1 503"), refused
        assert b"Retry-After: 5" in refused
        status, seconds, _ = timed_login(env, source="127.0.0.7")
        assert status == 200 and seconds < FAST


def test_tls_clients_that_never_say_hello_do_not_block_https_logins():
    env = ApiEnv(ssl_crt="api.crt", ssl_key="api.key")
    try:
        made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                               "-keyout", str(env.root / "api.key"), "-out", str(env.root / "api.crt"),
                               "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                              capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
        for name, password in PASSWORDS.items():
            env.add_user(name, password)
        env.start_master()
        env.start_api()
        with ExitStack() as held:
            for _ in range(30):  # stock cheroot shook hands in its accept thread: one of these stalled all
                held.enter_context(connect(env))
            start = time.monotonic()
            answer = requests.post(env.url("/login"), json={"username": "alice", "password": PASSWORDS["alice"],
                                                            "eauth": "file"}, verify=env.verify, timeout=15)
            assert answer.status_code == 200 and time.monotonic() - start < FAST
            sock = held.enter_context(connect(env))
            import ssl

            context = ssl.create_default_context(cafile=str(env.root / "api.crt"))
            tls = held.enter_context(context.wrap_socket(sock, server_hostname="127.0.0.1"))
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
            assert answer_of(tls)[0] == 431
            # Silent handshakes count against their address's cap: the 129th is closed at once.
            for _ in range(128):
                held.enter_context(connect(env, "127.0.0.9"))
            extra = held.enter_context(connect(env, "127.0.0.9"))
            extra.settimeout(4)  # the first 128 are only dropped after 5 s without a hello
            assert extra.recv(100) == b""
    finally:
        env.stop_api()
        env.master.stop()
        env.cleanup()


@pytest.mark.parametrize("pipelined", [2, 5])
def test_pipelined_requests_are_all_answered(pipelined):
    with running_api() as env:
        sock = connect(env)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * (pipelined - 1) +
                     b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        sock.settimeout(15)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data.count(b"HTTP/1.1 200 OK") == pipelined


def test_a_client_that_expects_100_continue_gets_it_and_its_body_is_taken():
    with running_api(webhook_disable_auth=True) as env:
        sock = connect(env)
        body = b'{"n": 7}'
        sock.sendall(b"POST /hook/cont HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        sock.settimeout(15)
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue")  # from the gate, before any body byte
        sock.sendall(body)
        data = b""
        while b'"success": true' not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        assert b"HTTP/1.1 200 OK" in data and b'"success": true' in data
