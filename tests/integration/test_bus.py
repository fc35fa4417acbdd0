"""The local bus with a real daemon: order, loss accounting, Salt's listener semantics."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from eventbus import event
from eventbus.bus import sockets
from eventbus.errors import EventTooLargeError
from tests.helpers import wait_for

PUBLISHER = """
import sys
from eventbus import config, event
opts = config.client_config(sys.argv[1])
name, count = sys.argv[2], int(sys.argv[3])
with event.get_event("master", opts=opts, listen=False) as bus:
    for n in range(count):
        assert bus.fire_event({"pub": name, "n": n, "pad": "x" * 100}, f"order/{name}", timeout=5000)
"""


def publishers(master, names, count):
    return [subprocess.Popen([sys.executable, "-c", PUBLISHER, str(master.path), name, str(count)])
            for name in names]


def collect(bus, total, tag="order/", wait=20):
    got = []
    while len(got) < total:
        data = bus.get_event(wait=wait, tag=tag)
        assert data is not None, f"only {len(got)} of {total} events arrived"
        got.append(data)
    return got


def test_each_publishers_order_is_kept_for_every_subscriber_and_nothing_is_lost(master):
    count = 5000
    subscribers = [event.get_event("master", opts=master.opts()) for _ in range(3)]
    procs = publishers(master, ["a", "b"], count)
    results = [None] * len(subscribers)

    def drain(i):
        results[i] = collect(subscribers[i], 2 * count)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(subscribers))]
    for thread in threads:
        thread.start()
    for proc in procs:
        assert proc.wait(60) == 0
    for thread in threads:
        thread.join(60)
    for sub, got in zip(subscribers, results):
        assert got is not None and len(got) == 2 * count
        for name in "ab":
            assert [d["n"] for d in got if d["pub"] == name] == list(range(count))
        assert sub.lost == 0
        sub.destroy()


PACED_PUBLISHER = """
import sys, time
from eventbus import config, event
opts = config.client_config(sys.argv[1])
count = int(sys.argv[2])
started = time.monotonic()
with event.get_event("master", opts=opts, listen=False) as bus:
    for n in range(count):
        assert bus.fire_event({"n": n, "pad": "x" * 100}, "stall/p", timeout=5000)
        if n % 50 == 49:
            time.sleep(0.01)       # at most 5,000 events/s: the live listener has 200 ms of slack
print(time.monotonic() - started)
"""


def stall_and_drain(master_node, monkeypatch, count: int) -> tuple[list[int], event.BusHandle]:
    """A stalled and a live listener while ``count`` events are published; what the stalled one gets after."""
    master_node.start()
    opts = master_node.opts()
    # Keep the stalled listener's own buffer small, so the daemon's queue is what overflows.
    monkeypatch.setattr(sockets, "LISTEN_QUEUE", 1000)
    stalled = event.get_event("master", opts=opts)
    live = event.get_event("master", opts=opts)
    proc = subprocess.Popen([sys.executable, "-c", PACED_PUBLISHER, str(master_node.path), str(count)],
                            stdout=subprocess.PIPE, text=True)
    got = collect(live, count, tag="stall/", wait=30)
    assert [d["n"] for d in got] == list(range(count))
    assert live.lost == 0
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert float(out) < 15, "the publisher was held up"
    live.destroy()
    # One more event shows the stalled listener what it missed at the end.
    with event.get_event("master", opts=opts, listen=False) as pub:
        pub.fire_event({"n": count}, "stall/p")
    received: list[int] = []
    while not received or received[-1] != count:
        data = stalled.get_event(wait=10, tag="stall/")
        assert data is not None, f"the stalled listener stopped after {received[-3:]}"
        received.append(data["n"])
    return received, stalled


def test_every_event_fire_event_accepted_arrives_after_a_flat_out_burst_and_destroy(master):
    """A publisher that fires faster than the daemon takes and closes at once still delivers all it was told
    yes to: when ``destroy`` returns, the daemon has numbered every one (before the closing barrier, libzmq's
    linger lost some at close with a small daemon intake queue)."""
    from eventbus.bus import control

    before = control.ping(master.sock_dir)["seq"]
    handle = event.MasterEvent(master.sock_dir, opts=master.opts(), listen=False)
    count = 150_000
    try:
        for n in range(count):
            assert handle.fire_event({"n": n}, "burst/x", timeout=5000)
    finally:
        handle.destroy()
    assert control.ping(master.sock_dir)["seq"] - before == count


def test_publishers_used_one_after_another_keep_their_order(master):
    """``eventbus fire a; eventbus fire b``: a handle's events are on the bus when it is closed, so the next
    publisher's come after them (two connections have no order of their own in the daemon)."""
    with event.MasterEvent(master.sock_dir, opts=master.opts()) as listener:
        for n in range(300):
            with event.MasterEvent(master.sock_dir, opts=master.opts(), listen=False) as one:
                assert one.fire_event({"n": n, "pad": "x" * (n % 7) * 500}, "order/x", timeout=5000)
        got = []
        while len(got) < 300:
            data = listener.get_event(wait=10, tag="order/")
            assert data is not None, f"only {len(got)} of 300 arrived"
            got.append(data["n"])
    assert got == list(range(300))


def test_a_master_stopped_with_events_on_their_way_in_numbers_them_before_it_exits(master):
    """Events a publisher handed over while the daemon was busy (here: stopped) are taken in at a stop, not
    dropped with the sockets; after a restart the journal has every one, in order."""
    import os
    import signal

    from eventbus.bus import control

    handle = event.MasterEvent(master.sock_dir, opts=master.opts(), listen=False)
    try:
        assert handle.fire_event({"n": -1}, "inflight/x", timeout=5000)
        first = control.ping(master.sock_dir)["seq"]
        pid = master.daemon.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            for n in range(2000):
                assert handle.fire_event({"n": n}, "inflight/x", timeout=5000)
            os.kill(pid, signal.SIGTERM)  # delivered when it runs again, mid-stream
        finally:
            os.kill(pid, signal.SIGCONT)
        assert master.daemon.proc.wait(15) == 0
        assert "took in" in master.daemon.log
    finally:
        handle.destroy()
    master.start()
    with event.MasterEvent(master.sock_dir, opts=master.opts()) as reader:
        reader.start_following(first)
        got: list[int] = []
        while len(got) < 2000:
            record = reader.get_event_record(wait=10, tag="inflight/", following=True)
            assert record is not None, f"the journal has {len(got)} of the 2000"
            assert record.seq is not None, f"a gap after {got[-1:] or 'the start'}: {record}"
            if record.data["n"] != -1:  # the ping may answer before the first event is numbered
                got.append(record.data["n"])
    assert got == list(range(2000))


def test_a_stalled_subscriber_slows_no_one_and_catches_up_from_the_journal(master_node, monkeypatch):
    master_node.path.write_text(master_node.path.read_text() + "subscriber_queue: 1000\n")
    received, stalled = stall_and_drain(master_node, monkeypatch, 20_000)
    assert received == list(range(20_001)), "every event, in order, none twice"
    assert stalled.lost == 0
    stalled.destroy()


def test_without_the_journal_a_stalled_subscriber_catches_up_from_the_window_and_counts_the_rest(
        master_node, monkeypatch):
    master_node.path.write_text(master_node.path.read_text()
                                + "subscriber_queue: 1000\nevent_journal: false\nevent_window: 3000\n")
    received, stalled = stall_and_drain(master_node, monkeypatch, 20_000)
    assert received == sorted(set(received)), "in order, none twice"
    assert received[-3000:] == list(range(20_001 - 3000, 20_001)), "everything the window still held"
    assert 0 < stalled.lost == 20_001 - len(received), "lost counts exactly what is gone"
    stalled.destroy()


def test_subscribe_keeps_other_events_in_order_for_later_calls(master):
    with event.get_event("master", opts=master.opts()) as bus:
        bus.subscribe("job/")
        for tag in ("auth/1", "job/1", "noise/1", "job/2", "auth/2"):
            bus.fire_event({"t": tag}, tag)
        assert bus.get_event(wait=5, tag="auth/")["t"] == "auth/1"
        assert bus.get_event(wait=5, tag="auth/")["t"] == "auth/2"
        assert bus.get_event(wait=5, tag="job/")["t"] == "job/1"
        assert bus.get_event(wait=5, tag="job/")["t"] == "job/2"
        assert bus.get_event(wait=0.2, tag="noise/") is None, "unsubscribed tags are not kept"


def test_subscription_as_iterator_and_context_manager(master):
    with event.get_event("master", opts=master.opts()) as bus:
        with bus.subscribe("salt/job/") as sub:
            bus.fire_event({"n": 1}, "salt/job/1/new")
            bus.fire_event({"n": 2}, "other")
            bus.fire_event({"n": 3}, "salt/job/1/ret")
            seen = []
            for full in sub:
                seen.append(full["tag"])
                if len(seen) == 2:
                    break
        assert seen == ["salt/job/1/new", "salt/job/1/ret"]
        assert not bus.inbox.subscriptions


@pytest.mark.parametrize("match_type, pattern", [
    ("regex", r"salt/job/\d+/ret"), ("fnmatch", "salt/job/*/ret"), ("endswith", "/ret"),
    ("find", "job/42"), ("startswith", "salt/job/42")])
def test_match_types_through_the_handle(master, match_type, pattern):
    with event.get_event("master", opts=master.opts()) as bus:
        bus.fire_event({"n": 0}, "salt/job/x/new")
        bus.fire_event({"n": 1}, "salt/job/42/ret")
        full = bus.get_event(wait=5, tag=pattern, match_type=match_type, full=True)
    assert full["tag"] == "salt/job/42/ret" and full["data"]["n"] == 1


def test_event_match_type_config_sets_the_default(master_node):
    master_node.path.write_text(master_node.path.read_text() + "event_match_type: fnmatch\n")
    master_node.start()
    with event.get_event("master", opts=master_node.opts()) as bus:
        bus.fire_event({}, "a/b/c")
        assert bus.get_event(wait=5, tag="a/*/c", full=True)["tag"] == "a/b/c"


def test_wait_zero_blocks_until_an_event_comes(master):
    with event.get_event("master", opts=master.opts()) as bus:
        def later():
            time.sleep(0.5)
            with event.get_event("master", opts=master.opts(), listen=False) as pub:
                pub.fire_event({"late": True}, "late/event")
        threading.Thread(target=later).start()
        started = time.monotonic()
        data = bus.get_event(wait=0, tag="late/")
        assert data["late"] is True and time.monotonic() - started >= 0.4


def test_wait_times_out_with_none_and_no_block_returns_at_once(master):
    with event.get_event("master", opts=master.opts()) as bus:
        started = time.monotonic()
        assert bus.get_event(wait=0.3, tag="never/") is None
        assert 0.25 <= time.monotonic() - started < 3
        started = time.monotonic()
        assert bus.get_event(no_block=True) is None
        assert time.monotonic() - started < 0.2
        bus.fire_event({"x": 1}, "now/there")
        # no_block never waits: poll until the event has come round the daemon.
        assert wait_for(lambda: bus.get_event(no_block=True, tag="now/"), what="the event")["x"] == 1


def test_waiting_with_short_timeouts_sleeps_instead_of_spinning(master):
    """A listener asking again and again with a timeout under a millisecond (or ending any wait on a fraction
    of one) sleeps in the poll: it used to poll with a zero timeout until the deadline, a core's worth of CPU."""
    with event.get_event("master", opts=master.opts()) as bus:
        bus.fire_event({"x": 1}, "now/there")  # a handle that has had an event also asks the bus's head when quiet
        assert bus.get_event(wait=10, tag="now/")["x"] == 1
        started, cpu = time.monotonic(), time.thread_time()
        for _ in range(300):
            assert bus.get_event(wait=0.0009, tag="never/") is None
        wall, used = time.monotonic() - started, time.thread_time() - cpu
        assert wall >= 0.25  # each call waited its timeout
        assert used < 0.5 * wall, f"{used:.3f} s of CPU in {wall:.3f} s of waiting"


def test_full_is_salts_tag_and_data_shape(master):
    with event.MasterEvent(master.sock_dir) as bus:
        bus.fire_event({"a": 1}, "shape/test")
        full = bus.get_event(wait=5, full=True)
    assert set(full) == {"tag", "data"} and full["tag"] == "shape/test"
    assert set(full["data"]) == {"a", "_stamp"}


def test_iter_events_is_a_generator_of_matching_events(master):
    with event.get_event("master", opts=master.opts()) as bus:
        for n in range(3):
            bus.fire_event({"n": n}, f"iter/{n}")
        stream = bus.iter_events(tag="iter/")
        assert [next(stream)["n"] for _ in range(3)] == [0, 1, 2]


def test_fire_event_without_a_daemon_returns_false_in_time(short_tmp):
    with event.MasterEvent(short_tmp / "none") as bus:
        started = time.monotonic()
        assert bus.fire_event({"a": 1}, "no/daemon", timeout=300) is False
        assert time.monotonic() - started < 2


def test_oversize_event_raises_and_bus_goes_on(master):
    with event.get_event("master", opts=master.opts()) as bus:
        with pytest.raises(EventTooLargeError) as info:
            bus.fire_event({"blob": "x" * 2_000_000}, "big/one")
        assert "1048576" in str(info.value)
        assert bus.fire_event({"ok": True}, "small/one")
        assert bus.get_event(wait=5, tag="small/")["ok"] is True


def test_minion_bus_is_separate_from_master_bus(master, minion):
    with event.get_event("minion", opts=minion.opts()) as mbus, \
            event.get_event("master", opts=master.opts()) as master_bus:
        mbus.fire_event({"where": "minion"}, "local/one")
        assert mbus.get_event(wait=5, tag="local/")["where"] == "minion"
        assert master_bus.get_event(wait=0.3, tag="local/") is None


def test_fire_after_connect_is_never_missed_by_a_new_listener(master):
    # The slow-joiner problem of PUB/SUB: a handle is live as soon as it is made.
    for n in range(20):
        with event.get_event("master", opts=master.opts()) as bus, \
                event.get_event("master", opts=master.opts(), listen=False) as pub:
            pub.fire_event({"n": n}, "joiner/test")
            assert bus.get_event(wait=5, tag="joiner/")["n"] == n


def test_a_listener_joining_a_busy_bus_is_live_at_once(master):
    """The daemon looks for new subscriptions at most every ``LAZY_LOOK`` while it publishes: a join waits
    for that look at worst, never for the bus to go quiet (here it never does until the joins are done)."""
    stop = threading.Event()

    def busy() -> None:
        with event.get_event("master", opts=master.opts(), listen=False) as pub:
            n = 0
            while not stop.is_set():
                pub.fire_event({"n": n}, "order/busy")
                n += 1

    publisher = threading.Thread(target=busy, daemon=True)
    publisher.start()
    try:
        with event.get_event("master", opts=master.opts()) as witness:
            assert witness.get_event(wait=10, tag="order/busy") is not None, "the bus is busy"
        for _ in range(10):
            with event.get_event("master", opts=master.opts()) as bus:
                assert bus.connected
                assert bus.get_event(wait=10, tag="order/busy") is not None, "live: events come"
    finally:
        stop.set()
        publisher.join(30)


def test_no_block_returns_an_event_queued_while_the_handle_was_quiet(master):
    with event.get_event("master", opts=master.opts()) as bus, \
            event.get_event("master", opts=master.opts()) as witness:
        assert bus.get_event(wait=0.2, tag="quiet/") is None  # the handle has waited: it is quiet
        bus.fire_event({"q": 1}, "quiet/one")
        assert witness.get_event(wait=5, tag="quiet/")["q"] == 1
        time.sleep(0.05)  # the daemon sent both copies together: this handle's is queued too
        assert bus.get_event(no_block=True, tag="quiet/")["q"] == 1
