"""The API's window of recent fleet events (``eventbus.netapi.sse.fleet.FleetWindow``): what a resume may
take from memory, and when it must read the stream instead (no sockets)."""
from __future__ import annotations

from eventbus.cluster.follow import Gap
from eventbus.cluster.records import FleetEvent
from eventbus.netapi.sse.fleet import FleetWindow, fleet_record


def records(*seqs: int) -> list:
    return [fleet_record(FleetEvent(seq, f"fleet/{seq}", {"n": seq, "_origin": "m1"}, "m1", f"m1:{seq}"))
            for seq in seqs]


def test_a_resume_inside_the_window_gets_exactly_the_seqs_after_it_up_to_the_head():
    window = FleetWindow(10)
    window.start_after(4)
    window.add(records(5, 6, 7, 8, 9))
    assert [r.seq for r in window.since(6, 8)] == [7, 8]
    assert [r.seq for r in window.since(4, 9)] == [5, 6, 7, 8, 9]
    assert window.since(9, 9) == []


def test_before_the_feed_started_or_past_its_size_the_window_says_no():
    window = FleetWindow(3)
    assert window.since(0, 5) is None  # the feed has not started
    window.start_after(4)
    assert window.since(3, 4) is None  # older than where the feed started
    window.add(records(5, 6, 7, 8))
    assert window.since(4, 8) is None  # 5 fell out
    assert [r.seq for r in window.since(5, 8)] == [6, 7, 8]


def test_skipped_stream_seqs_are_no_hole_and_gap_notices_are_not_kept():
    window = FleetWindow(10)
    window.start_after(0)
    window.add(records(1, 2) + [fleet_record(Gap(3, 6))] + records(6, 8))  # 7: a message no master wrote
    assert [r.seq for r in window.since(0, 8)] == [1, 2, 6, 8]


def test_records_carry_the_stream_seq_as_id_and_gaps_none():
    event, = records(42)
    assert event.raw.startswith(b"id: 42\ntag: fleet/42\ndata: ")
    gap = fleet_record(Gap(5, 10))
    assert gap.seq == 0 and gap.raw.startswith(b"tag: eventbus/stream/gap\ndata: ") and b'"lost": 5' in gap.raw
