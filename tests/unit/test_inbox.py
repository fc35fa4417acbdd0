"""The listener's inbox: gap counting, restarts, kept events for subscriptions, sync tokens."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from eventbus.bus import payload, wire
from eventbus.errors import BusUnavailableError
from eventbus.bus.inbox import ASK, GAP_TAG, NEED_FILL, READ, Inbox

EPOCH = 1_000_000


def frame(seq: int, tag: str, epoch: int = EPOCH, **data) -> bytes:
    return wire.HEADER.pack(seq, epoch) + wire.publish_frame(*payload.pack_event(tag, data, 1 << 20))


def test_matching_event_is_returned_with_seq():
    inbox = Inbox()
    event = inbox.receive(frame(EPOCH + 1, "a/b", x=1), inbox.matcher("a/", None))
    assert event.tag == "a/b" and event.data["x"] == 1 and event.seq == EPOCH + 1


def test_without_catch_up_gaps_count_as_lost_and_restarts_do_not():
    inbox = Inbox(catch_up=False)
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


# -- the one resuming reader: fills from the daemon's window/journal --------------------------

class Daemon:
    """The replay verb's contract over a known history: ``retained`` is what window+journal hold."""

    def __init__(self, history: list[tuple[int, int]], retained: set[int], page: int = 7) -> None:
        self.history = history          # (seq, epoch) of every event ever published, in order
        self.retained = retained
        self.page = page
        self.frames = {seq: frame(seq, f"t/{seq}", epoch=epoch, n=seq) for seq, epoch in history}

    def replay(self, request: dict) -> dict:
        after, limit = request["after"], min(request["limit"], self.page)
        later = [s for s, _ in self.history if s > after]
        events = [s for s in later if s in self.retained][:limit]
        before = events[0] if events else float("inf")
        lost = sum(1 for s in later if s < before and s not in self.retained)
        head_seq, head_epoch = self.history[-1] if self.history else (0, EPOCH)
        return {"events": [[s, self.frames[s]] for s in events], "lost": lost, "seq": head_seq,
                "epoch": head_epoch, "restarted": False}


def drive(inbox: Inbox, daemon: Daemon, live: list[int], following: bool = True) -> list:
    """What the inbox's reading loop hands out for ``live`` frames (the rest dropped by the bus), then 20 quiet
    seconds (head checks included), the I/O it asks for done against ``daemon``."""
    want = inbox.matcher("", None)
    out = []
    queue = [daemon.frames[s] for s in live]
    now, frame = 0.0, None
    while True:
        todo = inbox.step(want, following, frame)
        frame = None
        if todo is ASK:
            verb, args, _timeout = inbox.question()
            head = daemon.history[-1][0] if daemon.history else 0
            reply = daemon.replay(args) if verb == wire.VERB_REPLAY else {"seq": head}
            assert inbox.answer(reply, now, retry=following) == 0.0
        elif todo is not READ:
            out.append(todo)
        elif queue:
            frame = queue.pop(0)
        else:
            wait = inbox.quiet(now, 20.0)
            if wait is None:
                return out
            now += wait


def run_of(start: int, count: int, epoch: int) -> list[tuple[int, int]]:
    return [(start + n, epoch) for n in range(count)]


def test_a_gap_in_the_live_stream_is_filled_before_the_next_event():
    history = run_of(EPOCH + 1, 20, EPOCH)
    daemon = Daemon(history, {s for s, _ in history})
    inbox = Inbox()
    live = [EPOCH + 1, EPOCH + 2, EPOCH + 15, EPOCH + 16, EPOCH + 20]
    got = drive(inbox, daemon, live, following=False)
    assert [e.seq for e in got] == [s for s, _ in history]
    assert inbox.lost == 0


def test_what_left_the_window_is_lost_and_reported_once_by_a_gap_notice():
    history = run_of(EPOCH + 1, 30, EPOCH)
    retained = {s for s, _ in history if s > EPOCH + 10}
    daemon = Daemon(history, retained)
    inbox = Inbox()
    got = drive(inbox, daemon, [EPOCH + 1, EPOCH + 30])
    seqs = [e.seq for e in got]
    assert seqs == [EPOCH + 1, None] + list(range(EPOCH + 11, EPOCH + 31))
    assert got[1].tag == GAP_TAG and got[1].data == {"lost": 9}
    assert inbox.lost == 9


def test_follow_from_a_past_seq_reads_history_across_a_restart_then_live():
    first = run_of(EPOCH + 1, 12, EPOCH)
    second = run_of(2 * EPOCH + 1, 12, 2 * EPOCH)
    history = first + second
    daemon = Daemon(history, {s for s, _ in history})
    inbox = Inbox()
    inbox.start_from(EPOCH + 3)
    # Live frames overlap the history that follow reads first: none is handed out twice.
    got = drive(inbox, daemon, [s for s, _ in second[5:]])
    assert [e.seq for e in got] == [s for s, _ in history if s > EPOCH + 3]
    assert inbox.lost == 0 and inbox.restarts == 1


def test_follow_from_zero_with_nothing_retained_starts_at_the_head():
    history = run_of(EPOCH + 1, 5, EPOCH)
    daemon = Daemon(history, set())
    inbox = Inbox()
    inbox.start_from(0)
    got = drive(inbox, daemon, [])
    assert [(e.tag, e.data) for e in got] == [(GAP_TAG, {"lost": 5})]
    late = frame(EPOCH + 6, "t/late", n=6)
    assert inbox.receive(late, inbox.matcher("", None)).seq == EPOCH + 6


def test_events_dropped_just_before_a_quiet_spell_are_fetched_by_the_head_check():
    history = run_of(EPOCH + 1, 10, EPOCH)
    daemon = Daemon(history, {s for s, _ in history})
    inbox = Inbox()
    got = drive(inbox, daemon, [EPOCH + 1, EPOCH + 2])
    assert [e.seq for e in got] == [s for s, _ in history]


def test_a_daemon_that_cannot_answer_turns_the_gap_into_lost_events():
    inbox = Inbox()
    want = inbox.matcher("", None)
    inbox.receive(frame(EPOCH + 1, "t"), want)
    assert inbox.receive(frame(EPOCH + 5, "t"), want) is NEED_FILL
    inbox.give_up_fill()
    assert inbox.receive(inbox.backlog.popleft(), want).seq == EPOCH + 5
    assert inbox.lost == 3


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_interleaving_of_history_and_live_yields_each_seq_once_in_order(data):
    runs = data.draw(st.lists(st.integers(1, 25), min_size=1, max_size=4))
    history: list[tuple[int, int]] = []
    epoch = EPOCH
    for count in runs:
        start = max(epoch, history[-1][0] if history else 0)
        history += run_of(start + 1, count, start)
        epoch = start + 10_000
    seqs = [s for s, _ in history]
    # Retention purges the oldest events; a failed write leaves holes, but never at a run's end
    # (its loss could not be known from seqs: the daemon re-writes them from its window).
    cut = data.draw(st.integers(0, len(seqs)))
    run_ends = {history[i][0] for i in range(len(history)) if i + 1 == len(history) or history[i + 1][1] != history[i][1]}
    holes = set(data.draw(st.lists(st.sampled_from(seqs), unique=True))) - run_ends
    retained = set(seqs[cut:]) - holes
    # A listener buffers only recent events, which the window or journal still hold.
    live = sorted(data.draw(st.lists(st.sampled_from(sorted(retained)), unique=True))) if retained else []
    since = data.draw(st.sampled_from([None, 0] + seqs))
    page = data.draw(st.integers(1, 9))
    daemon = Daemon(history, retained, page)
    inbox = Inbox()
    if since is not None:
        inbox.start_from(since)
    got = drive(inbox, daemon, live)
    handed = [e.seq for e in got if e.seq is not None]
    assert handed == sorted(set(handed)), "each seq once, in order"
    floor = since if since is not None else (live[0] - 1 if live else seqs[-1])
    wanted = [s for s in seqs if s > floor]
    # Everything retained (or received live) after the start is handed out; the rest is lost.
    assert set(handed) >= {s for s in wanted if s in retained or s in live}
    assert set(handed) <= set(wanted)
    assert inbox.lost == len(wanted) - len(handed)
    assert sum(e.data["lost"] for e in got if e.seq is None) == inbox.lost


def test_the_head_is_asked_only_after_a_quiet_spell_and_less_often_while_nothing_is_missing():
    inbox = Inbox()
    inbox.receive(frame(EPOCH + 1, "t"), inbox.matcher("", None))
    assert inbox.quiet(10.0, None) > 0, "an event just came: wait first"
    assert inbox.quiet(10.4, None) > 0
    assert inbox.quiet(10.5, None) == 0.0
    inbox.check_head(EPOCH + 1, 10.5)           # nothing missing: the next ask is further away
    assert inbox.quiet(11.4, None) > 0 and inbox.quiet(11.5, None) == 0.0
    inbox.check_head(EPOCH + 4, 11.5)           # dropped just before the lull: fetch them
    assert inbox.filling and inbox.fill_request() == {"after": EPOCH + 1, "limit": 3}
    assert Inbox().quiet(0.0, 5.0) == 5.0, "a handle that never got an event never asks"


# -- the reading loop's I/O requests: what a handle is told to do, and what its answers change ----------

def test_a_quiet_socket_is_waited_on_until_the_deadline_with_the_head_asked_in_between():
    inbox = Inbox()
    want = inbox.matcher("", None)
    assert inbox.step(want, frame=frame(EPOCH + 1, "t")).seq == EPOCH + 1
    assert inbox.step(want) == READ
    assert inbox.quiet(10.0, 10.0) is None, "past the deadline: no event"
    assert 0 < inbox.quiet(10.0, 60.0) <= 0.5, "wait for the socket first"
    assert inbox.quiet(10.5, 60.0) == 0.0 and inbox.step(want) == ASK
    assert inbox.question()[:2] == (wire.VERB_PING, None)
    assert inbox.answer({"seq": EPOCH + 3}, 10.5) == 0.0   # two were dropped just before the lull
    assert inbox.step(want) == ASK and inbox.question()[:2] == (wire.VERB_REPLAY, {"after": EPOCH + 1, "limit": 2})


def test_a_follower_asks_again_for_a_page_the_daemon_did_not_give_and_loses_nothing():
    history = run_of(EPOCH + 1, 6, EPOCH)
    daemon = Daemon(history, {s for s, _ in history})
    inbox = Inbox()
    want = inbox.matcher("", None)
    inbox.step(want, True, daemon.frames[EPOCH + 1])
    assert inbox.step(want, True, daemon.frames[EPOCH + 6]) == ASK
    assert inbox.answer(BusUnavailableError("no answer"), 0.0, retry=True) > 0, "pause, then ask again"
    assert inbox.step(want, True) == ASK
    inbox.answer(daemon.replay(inbox.question()[1]), 0.0, retry=True)
    assert [inbox.step(want, True).seq for _ in range(5)] == [s for s, _ in history[1:]]
    assert inbox.lost == 0


def test_a_reader_not_following_counts_a_page_the_daemon_did_not_give_as_lost_and_reads_on():
    inbox = Inbox()
    want = inbox.matcher("", None)
    inbox.step(want, frame=frame(EPOCH + 1, "t"))
    assert inbox.step(want, frame=frame(EPOCH + 5, "t")) == ASK
    assert inbox.answer(BusUnavailableError("no answer"), 0.0) == 0.0
    assert inbox.step(want).seq == EPOCH + 5 and inbox.step(want) == READ
    assert inbox.lost == 3


def test_a_wait_becomes_a_poll_timeout_rounded_up_so_its_last_fraction_never_spins():
    from eventbus.bus.sockets import poll_ms
    # Rounded down, 0.4 ms left before the deadline was a zero timeout, polled again and again until it passed.
    assert [poll_ms(s) for s in (0.0004, 0.0009, 0.001, 0.0999, 0.2, 0.0, -0.003)] == [1, 1, 1, 100, 200, 0, 0]
