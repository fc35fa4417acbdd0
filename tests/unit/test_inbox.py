"""The listener's inbox: gap counting, restarts, kept events for subscriptions, sync tokens."""
from __future__ import annotations

from eventbus import payload, wire
from eventbus.inbox import Inbox

EPOCH = 1_000_000


def frame(seq: int, tag: str, epoch: int = EPOCH, **data) -> bytes:
    return wire.HEADER.pack(seq, epoch) + wire.publish_frame(*payload.pack_event(tag, data, 1 << 20))


def test_matching_event_is_returned_with_seq():
    inbox = Inbox()
    event = inbox.receive(frame(EPOCH + 1, "a/b", x=1), inbox.matcher("a/", None))
    assert event.tag == "a/b" and event.data["x"] == 1 and event.seq == EPOCH + 1


def test_gaps_count_as_lost_and_restarts_do_not():
    inbox = Inbox()
    everything = inbox.matcher("", None)
    inbox.receive(frame(EPOCH + 1, "t"), everything)
    inbox.receive(frame(EPOCH + 5, "t"), everything)          # 3 dropped by the bus
    assert inbox.lost == 3
    inbox.receive(frame(2 * EPOCH + 1, "t", epoch=2 * EPOCH), everything)  # daemon restarted
    assert inbox.lost == 3 and inbox.restarts == 1
    inbox.receive(frame(2 * EPOCH + 2, "t", epoch=2 * EPOCH), everything)
    assert inbox.lost == 3


def test_events_are_kept_only_for_subscribed_tags_in_order():
    inbox = Inbox()
    inbox.subscribe("keep/")
    want = inbox.matcher("want/", None)
    assert inbox.receive(frame(EPOCH + 1, "keep/1"), want) is None
    assert inbox.receive(frame(EPOCH + 2, "drop/1"), want) is None
    assert inbox.receive(frame(EPOCH + 3, "keep/2"), want) is None
    assert [e.tag for e in inbox.kept] == ["keep/1", "keep/2"]
    first = inbox.take_kept(inbox.matcher("keep/", None))
    assert first.tag == "keep/1"
    inbox.unsubscribe("keep/")
    assert not inbox.kept


def test_kept_events_are_bounded_and_overflow_counts_as_lost():
    inbox = Inbox(keep_limit=3)
    inbox.subscribe("k")
    never = inbox.matcher("zzz", None)
    for n in range(5):
        inbox.receive(frame(EPOCH + 1 + n, f"k/{n}"), never)
    assert [e.tag for e in inbox.kept] == ["k/2", "k/3", "k/4"]
    assert inbox.lost == 2


def test_sync_tokens_are_recorded_not_returned():
    inbox = Inbox()
    token = wire.SYNC_PREFIX + b"abc"
    assert inbox.receive(wire.SYNC_HEADER + token, inbox.matcher("", None)) is None
    assert token in inbox.synced


def test_malformed_frames_are_ignored():
    inbox = Inbox()
    everything = inbox.matcher("", None)
    for junk in (b"", b"short", wire.HEADER.pack(EPOCH + 1, EPOCH) + b"no-separator",
                 wire.HEADER.pack(EPOCH + 1, EPOCH) + b"t\x00not msgpack \xc1"):
        assert inbox.receive(junk, everything) is None
    assert inbox.receive(frame(EPOCH + 2, "ok"), everything).tag == "ok"
