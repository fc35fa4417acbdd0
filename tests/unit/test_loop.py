"""The daemon's loop over real zmq sockets: every message is handled, whichever operation took a socket's signal."""
from __future__ import annotations

import os
import time

import pytest
import zmq

from eventbus.daemon.loop import Loop


@pytest.fixture
def pair(zmq_context):
    """Two connected PAIR sockets (inproc): ``ours`` is read by the loop, ``peer`` plays the other side."""
    ours, peer = zmq_context.socket(zmq.PAIR), zmq_context.socket(zmq.PAIR)
    ours.bind("inproc://loop-test")
    peer.connect("inproc://loop-test")
    yield ours, peer
    ours.close(0)
    peer.close(0)


def draining(sock: zmq.Socket, got: list[bytes]):
    """An own reader's callback: read ``sock`` into ``got`` until it is empty."""
    def read_all() -> None:
        while True:
            try:
                got.append(sock.recv(zmq.NOBLOCK))
            except zmq.Again:
                return
    return read_all


def run_until(loop: Loop, done, limit: float = 5.0) -> float:
    """Run the loop until ``done()``; fail after ``limit`` seconds. The seconds it took."""
    started = time.monotonic()

    def check() -> None:
        if done() or time.monotonic() - started > limit:
            loop.stop()
        else:
            loop.call_later(0.005, check)
    loop.call_later(0, check)
    loop.run()
    assert done(), f"not done after {limit} s"
    return time.monotonic() - started


def test_an_own_reader_that_stops_at_its_batch_is_called_again_without_a_new_signal(pair):
    ours, peer = pair
    got: list[bytes] = []

    def read_ten() -> bool:
        for _ in range(10):
            try:
                got.append(ours.recv(zmq.NOBLOCK))
            except zmq.Again:
                return False
        return True  # ten read: more may wait

    loop = Loop()
    loop.add_reader(ours, read_ten, own=True)
    for n in range(1000):
        peer.send(b"%d" % n)
    run_until(loop, lambda: len(got) == 1000)
    assert got == [b"%d" % n for n in range(1000)]


def test_an_own_socket_used_elsewhere_and_touched_still_has_its_message_read(pair):
    """A send on the socket takes its signal of a message that just arrived; ``touched`` makes the loop look."""
    ours, peer = pair
    got: list[bytes] = []

    loop = Loop()
    loop.add_reader(ours, draining(ours, got), own=True)

    def send_from_a_timer() -> None:
        peer.send(b"hello")
        time.sleep(0.05)  # the message is queued for ``ours``, its signal pending
        ours.send(b"ping")  # processes the socket's commands: the signal is taken
        loop.touched(ours)

    loop.call_later(0.01, send_from_a_timer)
    run_until(loop, lambda: got == [b"hello"], limit=3.0)
    assert peer.recv() == b"ping"


def test_an_own_socket_with_messages_queued_before_it_was_added_is_read(pair):
    """The socket's signal was taken before the loop knew it (a monitor socket's first events): asked once."""
    ours, peer = pair
    peer.send(b"early")
    time.sleep(0.05)
    assert ours.getsockopt(zmq.EVENTS) & zmq.POLLIN  # processes the socket's commands: the signal is taken
    got: list[bytes] = []

    loop = Loop()
    loop.add_reader(ours, draining(ours, got), own=True)
    run_until(loop, lambda: got == [b"early"], limit=3.0)


def test_a_shared_socket_used_anywhere_needs_no_touch(pair):
    ours, peer = pair
    got: list[bytes] = []
    loop = Loop()
    loop.add_reader(ours, lambda: got.append(ours.recv(zmq.NOBLOCK)))

    def send_from_a_timer() -> None:
        peer.send(b"hello")
        time.sleep(0.05)
        ours.send(b"ping")  # no touched(): a shared socket is asked on every turn

    loop.call_later(0.01, send_from_a_timer)
    run_until(loop, lambda: got == [b"hello"], limit=3.0)


def test_a_plain_fd_wakes_the_loop_at_once(tmp_path):
    read_end, write_end = os.pipe()
    got: list[bytes] = []
    loop = Loop()
    loop.add_reader(read_end, lambda: got.append(os.read(read_end, 100)))
    loop.call_later(0.01, lambda: os.write(write_end, b"x"))
    took = run_until(loop, lambda: got == [b"x"])
    assert took < 1.0, "woken by the fd, not by the loop's longest sleep"
    loop.remove_reader(read_end)
    os.close(read_end)
    os.close(write_end)


def test_timers_run_in_order_and_every_repeats():
    loop = Loop()
    seen: list[str] = []
    loop.call_later(0.03, lambda: seen.append("late"))
    loop.call_later(0.01, lambda: seen.append("early"))
    loop.call_every(0.005, lambda: seen.append("tick"))
    run_until(loop, lambda: "late" in seen)
    assert seen.index("early") < seen.index("late")
    assert seen.count("tick") >= 3


def test_a_lazily_touched_socket_has_its_message_read_even_when_the_loop_goes_quiet(pair):
    """A send took the signal of a message that just arrived; the touch was lazy and nothing else happens."""
    ours, peer = pair
    got: list[bytes] = []
    loop = Loop()
    loop.add_reader(ours, draining(ours, got), own=True)
    touch = loop.toucher(ours)

    def send_from_a_timer() -> None:
        touch()  # a first use: looked at on this turn already
        peer.send(b"hello")
        time.sleep(0.05)  # the message is queued for ``ours``, its signal pending
        ours.send(b"ping")  # processes the socket's commands: the signal is taken
        touch()  # within LAZY_LOOK of the look above: this one waits

    loop.call_later(0.01, send_from_a_timer)
    took = run_until(loop, lambda: got == [b"hello"], limit=3.0)
    assert took < 0.5, "asked within LAZY_LOOK, not on the loop's longest sleep"
    assert peer.recv() == b"ping"


def test_a_socket_touched_on_every_event_is_asked_at_most_every_lazy_look(pair, monkeypatch):
    from eventbus.daemon import loop as loop_module

    ours, peer = pair
    looks: list[float] = []
    real_poll = loop_module._zmq_poll

    def counted(items, timeout):
        if items and items[0][0] is ours:
            looks.append(time.monotonic())
        return real_poll(items, timeout)

    monkeypatch.setattr(loop_module, "_zmq_poll", counted)
    loop = Loop()
    loop.add_reader(ours, draining(ours, []), own=True)
    looks.clear()  # the first look, before the loop's first sleep, is not the touches'
    touch = loop.toucher(ours)
    started = time.monotonic()

    def touch_often() -> None:  # an event every 2 ms, each sent on ``ours``
        touch()
        if time.monotonic() - started < 0.4:
            loop.call_later(0.002, touch_often)

    loop.call_later(0, touch_often)
    run_until(loop, lambda: time.monotonic() - started > 0.5)
    assert 3 <= len(looks) <= 0.5 / loop_module.LAZY_LOOK + 2, looks
