"""eventbus.netapi.limits: request-head verdicts, the failed-login guard and once-a-minute logging, without sockets."""
from __future__ import annotations

from eventbus.netapi.limits import LoginGuard, OncePerInterval, examine


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_request_is_complete_when_its_head_and_body_are_in():
    assert examine(b"GET / HTTP/1.1\r\nHost: x\r\n", 100).status == 0
    done = examine(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 100)
    assert done.status == 200
    head = b"POST /hook/a HTTP/1.1\r\nContent-Length: 10\r\n\r\n"
    partial = examine(head + b"12345", 100)
    assert partial.status == 0 and partial.need == len(head) + 10
    assert examine(head + b"1234567890", 100).status == 200
    assert examine(b"\r\n" + head + b"1234567890", 100).status == 200  # a stray blank line first is allowed


def test_limits_are_answered_with_their_status():
    assert examine(b"GET / HTTP/1.1\r\nX: " + b"a" * 17000 + b"\r\n\r\n", 100).status == 431
    assert examine(b"GET / HTTP/1.1\r\nX: " + b"a" * 17000, 100).status == 431  # before the head even ends
    many = b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 101
    assert examine(many + b"\r\n", 100).status == 431 and examine(many, 100).status == 431
    assert examine(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 100).status == 414
    assert examine(b"GET /" + b"a" * 9000, 100).status == 414
    big = examine(b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 100)
    assert big.status == 413 and "101" in big.reason
    assert examine(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 100).status == 400
    assert examine(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 100).status == 400


def test_the_login_guard_counts_failures_and_checks_in_progress_per_address():
    clock = Clock()
    guard = LoginGuard(3, concurrent=3, clock=clock)
    for _ in range(3):
        assert guard.begin("a") == 0.0
    assert guard.begin("a") == 1.0  # three checks running: a fourth waits for their outcome
    assert guard.begin("b") == 0.0  # another address is not affected
    for _ in range(3):
        guard.end("a", success=False)
    assert guard.begin("a") == 60.0
    clock.now += 59.5
    assert 0 < guard.begin("a") <= 1.0
    clock.now += 1.0
    assert guard.begin("a") == 0.0  # the minute has passed
    guard.end("a", success=True)
    assert guard.begin("a") == 0.0


def test_one_address_runs_at_most_concurrent_checks_at_once():
    guard = LoginGuard(10, concurrent=2, clock=Clock())
    assert guard.begin("a") == 0.0 and guard.begin("a") == 0.0
    assert guard.begin("a") == 1.0
    guard.end("a", success=False)
    assert guard.begin("a") == 0.0  # one failure so far, one check running: a second may start


def test_once_per_interval_counts_what_it_held_back():
    clock = Clock()
    once = OncePerInterval(60, clock=clock)
    assert once.check(("429", "a")) == 0
    assert once.check(("429", "a")) is None and once.check(("429", "a")) is None
    assert once.check(("429", "b")) == 0
    clock.now += 61
    assert once.check(("429", "a")) == 2


def test_login_rate_is_a_checked_api_key(tmp_path):
    import pytest

    from eventbus import config
    from eventbus.errors import ConfigError

    path = tmp_path / "api"
    path.write_text("{}\n")
    assert config.load(config.ApiConfig, path).login_rate == 10
    path.write_text("login_rate: 0\n")
    with pytest.raises(ConfigError, match="login_rate"):
        config.load(config.ApiConfig, path)


def test_expect_100_continue_is_noticed_while_the_body_is_missing():
    head = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    waiting = examine(head, 100)
    assert waiting.status == 0 and waiting.expect_continue
    assert examine(head + b"12345", 100).status == 200


def test_a_chunked_body_is_followed_to_its_last_chunk_a_piece_at_a_time():
    head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    whole = head + b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    assert examine(whole, 100) == examine(whole, 100) and examine(whole, 100).status == 200
    assert examine(whole, 100).need == len(whole)
    first = examine(whole[:len(head) + 3], 100)
    assert first.status == 0 and first.chunks is not None
    scanner, verdicts = first.chunks, []
    for end in range(len(head) + 4, len(whole) + 1):  # one more byte at a time, the same scanner
        verdicts.append(scanner.scan(whole[:end]).status)
    assert verdicts[-1] == 200 and set(verdicts[:-1]) == {0}
    assert scanner.total == 11


def test_a_chunked_body_over_the_limit_or_malformed_is_refused():
    head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert examine(head + b"40\r\n", 63).status == 413  # refused from the size line, before the chunk
    assert examine(head + b"20\r\n" + b"a" * 32 + b"\r\n20\r\n", 63).status == 413
    assert examine(head + b"zz\r\n", 100).status == 400
    assert examine(head + b"-1\r\n", 100).status == 400
    assert examine(head + b"3\r\nabcXY", 100).status == 400
    assert examine(head + b"1" * 2000, 100).status == 400
    assert examine(head + b"0\r\nX: " + b"a" * 17000, 100).status == 431
