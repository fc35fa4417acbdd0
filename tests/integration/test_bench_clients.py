"""The benchmark's client processes against a real master daemon and the real reference proxy.

No speed is asserted: these check that a trial counts what the bus
delivered (so a lossless verdict in ``make bench`` can be trusted), and
that a subscriber that never reads costs the daemon bounded memory.
"""
from __future__ import annotations

import functools

import pytest

from bench.clients import Crew
from bench.systems import first_round_trip, running_bus, running_reference

python_floor = functools.partial(running_reference, python=True)


@pytest.mark.parametrize("running", [running_bus, running_reference, python_floor],
                         ids=["bus", "reference", "python-floor"])
def test_a_paced_trial_counts_every_event_at_every_subscriber(running):
    with running() as (_daemon, target), Crew(target, publishers=2, subscribers=2) as crew:
        crew.warm()
        result = crew.trial(100, 2000, 0.5, timed=True)
    assert result.sent == 1000
    assert result.lossless, result.seen
    for seen in result.seen:
        assert seen["received"] == 1000 and seen["gaps"] == 0
        assert len(seen["latencies_ns"]) == 1000 and min(seen["latencies_ns"]) > 0


def test_a_stalled_subscriber_neither_blocks_the_publisher_nor_grows_the_daemon():
    with running_bus() as (daemon, target), Crew(target, publishers=1, subscribers=1, stalled=1) as crew:
        meter = daemon.meter()
        crew.warm()
        # The stalled client's own queue takes 100,000 events before the daemon's queue for it fills.
        crew.trial(100, None, 60, count=150_000)
        settled = meter.rss()
        result = crew.trial(100, None, 60, count=100_000)
        grown = meter.rss() - settled
    assert result.sent == 100_000  # the publisher was never stuck behind the stalled subscriber
    # 100,000 more events of ~140 B kept for the stalled subscriber would be over 13 MB.
    assert grown < 4 * 1024 * 1024


def test_first_round_trip_works_for_both_systems():
    assert 0 < first_round_trip("bus") < 20
    assert 0 < first_round_trip("reference") < 20
