"""The forwarder's on-disk outbox: order, acks, the bound, and what survives a reopen."""
from __future__ import annotations

import pytest

from eventbus.errors import OutboxError
from eventbus.forwarding.outbox import Outbox


def rows(first: int, last: int) -> list[tuple[int, str, dict]]:
    return [(seq, f"t/{seq}", {"n": seq}) for seq in range(first, last + 1)]


def test_events_come_out_in_order_in_batches_and_acks_forget_them(tmp_path):
    box = Outbox(tmp_path / "b.outbox", 100)
    assert box.created and box.intake is None
    box.append(rows(1, 10), intake=12)
    assert box.pending == 10 and box.intake == 12
    first = box.read(4)
    assert [seq for seq, _, _ in first] == [1, 2, 3, 4]
    assert first[0] == (1, "t/1", {"n": 1})
    assert [seq for seq, _, _ in box.read(4)] == [5, 6, 7, 8]
    box.ack(4, 4)
    assert box.pending == 6 and box.delivered == 4
    box.rewind()
    assert [seq for seq, _, _ in box.read(100)] == [5, 6, 7, 8, 9, 10]


def test_a_reopened_outbox_has_its_events_cursor_and_counters(tmp_path):
    box = Outbox(tmp_path / "b.outbox", 5)
    box.append(rows(1, 8), intake=8)
    box.ack(5, 2)
    box.close()
    again = Outbox(tmp_path / "b.outbox", 5)
    assert not again.created
    assert (again.intake, again.pending, again.delivered, again.dropped) == (8, 3, 2, 3)
    assert [seq for seq, _, _ in again.read(10)] == [6, 7, 8]


def test_past_the_bound_the_oldest_are_dropped_and_counted(tmp_path):
    box = Outbox(tmp_path / "b.outbox", 5)
    assert box.append(rows(1, 4), intake=4) == 0
    assert box.append(rows(5, 7), intake=7) == 2
    assert box.append(rows(8, 20), intake=20) == 13
    assert box.pending == 5 and box.dropped == 15
    assert [seq for seq, _, _ in box.read(10)] == [16, 17, 18, 19, 20]


def test_an_event_queued_twice_is_held_once(tmp_path):
    box = Outbox(tmp_path / "b.outbox", 100)
    box.append(rows(1, 3), intake=3)
    box.append(rows(2, 4), intake=4)
    assert [seq for seq, _, _ in box.read(10)] == [1, 2, 3, 4]


def test_a_new_broker_starts_where_it_is_told(tmp_path):
    box = Outbox(tmp_path / "b.outbox", 100)
    box.start_at(1234)
    assert Outbox(tmp_path / "b.outbox", 100).intake == 1234


def test_an_outbox_that_cannot_be_opened_is_one_clear_error(tmp_path):
    (tmp_path / "b.outbox").write_text("not a database, just text " * 100)
    with pytest.raises(OutboxError, match="cannot open outbox .*b.outbox"):
        Outbox(tmp_path / "b.outbox", 100)


def test_an_ack_inside_a_batch_keeps_the_rest_of_it_across_a_reopen(tmp_path):
    box = Outbox(tmp_path / "b.outbox", 100)
    box.append(rows(1, 10), intake=10)
    box.append(rows(11, 20), intake=20)
    assert [seq for seq, _, _ in box.read(13)] == list(range(1, 14))
    box.ack(13, 13)
    assert box.pending == 7
    box.close()
    again = Outbox(tmp_path / "b.outbox", 100)
    assert (again.pending, again.delivered) == (7, 13)
    assert again.read(100) == rows(14, 20)


def test_the_bound_cuts_through_a_batch_and_keeps_its_newest_events(tmp_path):
    box = Outbox(tmp_path / "b.outbox", 12)
    box.append(rows(1, 10), intake=10)
    assert box.append(rows(11, 15), intake=15) == 3
    assert box.pending == 12 and box.dropped == 3
    assert box.read(100) == rows(4, 15)
    box.close()
    assert Outbox(tmp_path / "b.outbox", 12).read(100) == rows(4, 15)


def test_reads_of_a_batch_in_pieces_hand_out_each_event_once_and_rewind_starts_over(tmp_path):
    box = Outbox(tmp_path / "b.outbox", 1000)
    box.append(rows(1, 500), intake=500)
    pieces = [box.read(64) for _ in range(9)]
    assert [seq for piece in pieces for seq, _, _ in piece] == list(range(1, 501))
    assert box.read(64) == []
    box.rewind()
    assert [seq for seq, _, _ in box.read(3)] == [1, 2, 3]


def test_an_outbox_written_one_row_per_event_is_read_on(tmp_path):
    """An outbox left by a forwarder from before batch rows keeps its events, order and counters."""
    import sqlite3

    import msgpack

    path = tmp_path / "b.outbox"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript("CREATE TABLE events (seq INTEGER PRIMARY KEY, tag TEXT NOT NULL, data BLOB NOT NULL);"
                     "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);")
    db.executemany("INSERT INTO events VALUES (?, ?, ?)",
                   [(seq, tag, msgpack.packb(data)) for seq, tag, data in rows(3, 7)])
    db.executemany("INSERT INTO meta VALUES (?, ?)", [("intake", 9), ("delivered", 2)])
    db.close()
    box = Outbox(path, 100)
    assert (box.intake, box.pending, box.delivered) == (9, 5, 2)
    assert box.read(100) == rows(3, 7)
    box.ack(7, 5)
    assert Outbox(path, 100).pending == 0


# -- the bound and the batch a broker is being handed: delivered or dropped, never both ----------------------


def test_the_batch_being_published_is_not_dropped_the_oldest_waiting_are(tmp_path):
    box = Outbox(tmp_path / "b.outbox", 5)
    box.append(rows(1, 1), intake=1)
    assert [seq for seq, _, _ in box.read(100)] == [1]          # in the broker's hands now
    assert box.append(rows(2, 20), intake=20) == 14             # 5 may wait besides it
    assert box.pending == 6
    box.ack(1, 1)                                               # ... and the broker took it
    assert (box.delivered, box.dropped, box.pending) == (1, 14, 5)
    assert [seq for seq, _, _ in box.read(100)] == [16, 17, 18, 19, 20]
    box.ack(20, 5)
    assert box.delivered + box.dropped == 20 and box.pending == 0


def test_a_batch_handed_back_waits_again_and_goes_first_at_the_next_drop(tmp_path):
    box = Outbox(tmp_path / "b.outbox", 5)
    box.append(rows(1, 5), intake=5)
    box.read(100)
    assert box.append(rows(6, 7), intake=7) == 0                # 1..5 are handed: 6, 7 wait
    box.rewind()                                                # the publish failed
    assert box.append(rows(8, 8), intake=8) == 3
    assert [seq for seq, _, _ in box.read(100)] == [4, 5, 6, 7, 8]
    box.ack(8, 5)
    assert (box.delivered, box.dropped, box.pending) == (5, 3, 0)


def test_a_read_hands_out_at_most_the_bound(tmp_path):
    box = Outbox(tmp_path / "b.outbox", 3)
    box.append(rows(1, 6), intake=6)
    assert box.dropped == 3 and [seq for seq, _, _ in box.read(100)] == [4, 5, 6]
    assert box.append(rows(7, 12), intake=12) == 3              # 3 handed, 3 waiting: 10, 11, 12
    box.ack(6, 3)
    assert [seq for seq, _, _ in box.read(100)] == [10, 11, 12]
    assert (box.delivered, box.dropped, box.pending) == (3, 6, 3)


def test_the_bound_keeps_the_handed_events_of_a_row_it_cuts_through(tmp_path):
    box = Outbox(tmp_path / "b.outbox", 6)
    box.append(rows(1, 6), intake=6)
    assert [seq for seq, _, _ in box.read(2)] == [1, 2]
    assert box.append(rows(7, 9), intake=9) == 1                # 3 goes: the oldest waiting
    box.ack(2, 2)
    assert box.read(100) == rows(4, 9)
    box.close()
    again = Outbox(tmp_path / "b.outbox", 6)
    assert (again.pending, again.delivered, again.dropped) == (6, 2, 1)
