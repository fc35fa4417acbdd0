"""The benchmark's arithmetic: percentiles, pacing, event sizes, loss accounting and the table."""
from __future__ import annotations

import os
import threading
import time

import msgpack

from bench import report
from bench.clients import TAG, TrialResult, event_data
from bench.measure import Pacer, median, percentile, thread_seconds


def test_percentiles_are_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(list(reversed(values)), 100) == 100
    assert percentile([7], 99) == 7
    assert median([1, 2, 3, 4]) == 2.5


def test_pacer_holds_the_rate():
    pacer = Pacer(2000)
    started = time.perf_counter()
    for i in range(200):
        pacer.wait(i)
    # 200 sends at 2,000/s are due over 0.1 s: never early, and not late by much on a busy host.
    assert 0.099 <= time.perf_counter() - started < 0.5


def test_events_pack_to_the_requested_size():
    for size in (100, 1024):
        packed = len(TAG) + 1 + len(msgpack.packb(event_data(size)))
        assert size - 8 <= packed <= size


def seen(received: int, disorder: int = 0) -> dict:
    return {"received": received, "disorder": disorder, "gaps": 0, "stale": 0, "lost_counter": 0,
            "first_ns": 0, "last_ns": 10**9, "latencies_ns": []}


def test_a_trial_is_lossless_only_when_every_subscriber_got_everything_in_order():
    assert TrialResult(1000, 1.0, 0, [seen(1000), seen(1000)]).lossless
    short = TrialResult(1000, 1.0, 0, [seen(1000), seen(997)])
    assert not short.lossless and short.missing == 3
    assert not TrialResult(1000, 1.0, 0, [seen(1000, disorder=1)]).lossless
    assert TrialResult(1000, 0.5, 0, [seen(1000)]).rate == 2000


def test_table_shows_ratio_target_and_verdict():
    rows = [report.Row("zero-loss throughput 1→1, 100 B", "events/s", 60_000, 100_000, "≥ 50% of reference", True),
            report.Row("latency p99 at 500/s", "ms", 1.5, 0.5, "≤ 2× reference", False, ratio_as="times")]
    text = report.table(rows)
    assert "| zero-loss throughput 1→1, 100 B | events/s | 60,000 | 100,000 | 60.0% | ≥ 50% of reference | PASS |" in text
    assert "| latency p99 at 500/s | ms | 1.500 | 0.500 | ×3.00 | ≤ 2× reference | FAIL |" in text


def trial(sent: int, received: int, seconds: float = 1.0) -> TrialResult:
    return TrialResult(sent, seconds, 0, [seen(received)])


def test_rate_search_bisects_between_lossless_and_lossy_rates():
    from bench.bus import Search

    search = Search(steps=5)
    assert search.next_rate is None  # a flat-out probe first
    search.record(trial(200_000, 150_000), cpu=0.5)
    assert not search.done and search.best is None
    assert 0 < search.next_rate <= 0.9 * 200_000
    first = search.next_rate
    search.record(trial(int(first), int(first)), cpu=0.4)
    assert search.best is not None and search.rate == int(first)
    assert first < search.next_rate < 200_000
    second = search.next_rate
    search.record(trial(int(second), int(second) - 1), cpu=0.4)
    assert first < search.next_rate < second
    assert search.rate == int(first)  # a lossy trial never counts


def test_rate_search_climbs_past_a_lossless_probe_and_stops_when_publishers_set_the_pace():
    from bench.bus import Search

    search = Search(steps=5)
    search.record(trial(90_000, 90_000), cpu=0.3)  # flat out, nothing lost
    assert not search.done and search.next_rate == 1.25 * 90_000
    asked = search.next_rate
    search.record(trial(int(asked * 0.8), int(asked * 0.8)), cpu=0.3)  # could not reach it, nothing lost
    assert search.done and search.rate == int(asked * 0.8)


def test_rate_search_ends_after_its_steps():
    from bench.bus import Search

    search = Search(steps=3)
    search.record(trial(300_000, 100_000), cpu=0.3)
    while not search.done:
        search.record(trial(int(search.next_rate), int(search.next_rate) - 10), cpu=0.3)
    assert len(search.trials) == 4 and search.best is None and search.rate == 0


def test_a_subscriber_that_caught_up_long_after_the_publishers_stopped_did_not_sustain_the_rate():
    from bench.bus import Search

    def ended_at(seconds_before_last: float) -> TrialResult:
        # Every subscriber's last event at 1 s (seen()); the publishers stopped ``seconds_before_last`` before.
        return TrialResult(100_000, 1.0, 0, [seen(100_000)], ended_ns=int((1 - seconds_before_last) * 1e9))

    assert ended_at(0.6).lossless and ended_at(0.6).lag == 0.6
    search = Search(steps=5)
    search.record(ended_at(0.6), cpu=0.3)  # flat out: everything arrived, but 0.6 s late
    assert search.best is None and search.rate == 0 and "0.60 s behind" in search.trials[0]
    assert search.next_rate < 100_000
    search.record(ended_at(0.01), cpu=0.3)  # kept pace
    assert search.best is not None and search.rate == 100_000


def test_thread_cpu_is_per_thread_and_finer_than_a_clock_tick():
    def spin(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass
    spun, done = threading.Event(), threading.Event()

    def worker_main() -> None:
        spin(0.0123)
        spun.set()
        done.wait(30)
    worker = threading.Thread(target=worker_main)
    before = thread_seconds(os.getpid())
    worker.start()
    try:
        assert spun.wait(30)
        spin(0.0031)
        after = thread_seconds(os.getpid())
    finally:
        done.set()
        worker.join()
    main = after[os.getpid()] - before[os.getpid()]
    assert 0.0031 <= main < 0.0123  # the main thread's own spin, not the worker's
    assert 0.0123 <= after[worker.native_id] < 0.5
    assert round(main * 100) != main * 100  # not whole 10 ms clock ticks
