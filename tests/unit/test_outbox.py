"""The forwarder's on-disk outbox: order, acks, the bound, and what survives a reopen."""
from __future__ import annotations

import pytest

from eventbus.errors import OutboxError
from eventbus.outbox import Outbox


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
