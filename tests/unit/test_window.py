"""The replay window: what a late reader gets, and how many it lost."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from eventbus.daemon.window import Window

EPOCH = 5_000


def filled(size: int, count: int) -> Window:
    window = Window(size, EPOCH)
    for seq in range(EPOCH + 1, EPOCH + 1 + count):
        window.add((seq, b"frame%d" % seq))
    return window


def test_reader_within_the_window_gets_everything_after_its_id():
    replay = filled(10, 8).since(EPOCH + 5)
    assert [seq for seq, _ in replay.events] == [EPOCH + 6, EPOCH + 7, EPOCH + 8]
    assert replay.lost == 0 and not replay.restarted


def test_reader_behind_the_window_gets_what_is_left_and_the_count_lost():
    replay = filled(5, 20).since(EPOCH + 3)   # window holds 16..20
    assert [seq for seq, _ in replay.events] == [EPOCH + 16 + i for i in range(5)]
    assert replay.lost == 12                 # 4..15


def test_reader_up_to_date_gets_nothing():
    replay = filled(5, 20).since(EPOCH + 20)
    assert replay.events == [] and replay.lost == 0


def test_reader_from_an_earlier_daemon_run():
    replay = filled(5, 3).since(EPOCH - 100)
    assert replay.restarted and replay.lost == 0
    assert len(replay.events) == 3


def test_limit():
    assert len(filled(100, 50).since(EPOCH, limit=7).events) == 7


def test_the_window_is_bounded_in_bytes_too():
    window = Window(1000, EPOCH, max_bytes=1000)
    for seq in range(EPOCH + 1, EPOCH + 101):
        window.add((seq, b"x" * 100))
    assert len(window.events) == 10 and window.bytes == 1000
    replay = window.since(EPOCH)
    assert replay.lost == 90 and replay.events[0][0] == EPOCH + 91


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 20), max_bytes=st.integers(1, 400),
       batches=st.lists(st.lists(st.integers(1, 60), max_size=12), max_size=30))
def test_a_batch_kept_at_once_leaves_the_window_as_one_by_one_would(size, max_bytes, batches):
    one_by_one, at_once = Window(size, EPOCH, max_bytes), Window(size, EPOCH, max_bytes)
    seq = EPOCH
    for lengths in batches:
        batch = []
        for length in lengths:
            seq += 1
            batch.append((seq, b"x" * length))
        for entry in batch:
            one_by_one.add(entry)
        at_once.extend(batch)
        assert list(at_once.events) == list(one_by_one.events)
        assert at_once.bytes == one_by_one.bytes <= max_bytes or len(at_once.events) <= 1
