"""A minion daemon relaying more than the master's per-minion budget allows: everything arrives, in order, once,
at the budget's pace, and the minion waits between refusals instead of spinning."""
from __future__ import annotations

import re
import time

from eventbus import event
from tests.helpers import wait_for
from tests.linkkit import master_link, wait_link

LIMIT = 500
EVENTS = 3000


def test_a_burst_over_the_budget_arrives_whole_in_order_once_and_at_its_pace(site):
    master = site.master(auto_accept=True, relay_rate_limit=LIMIT)
    master.start()
    minion = site.minion("m1")
    minion.start()
    wait_link(minion, "accept")
    with event.get_event("master", opts=master.opts()) as bus:
        bus.subscribe("myco/budget")
        start = time.monotonic()
        with event.MinionEvent(opts=minion.opts(), listen=False) as handle:
            for n in range(EVENTS):
                assert handle.fire_master({"n": n}, "myco/budget") is True
        seen = []
        while len(seen) < EVENTS:
            item = bus.get_event(wait=15, tag="myco/budget", full=True)
            assert item is not None, f"{len(seen)} of {EVENTS} after {time.monotonic() - start:.1f} s"
            assert item["data"]["id"] == "m1"
            seen.append(item["data"]["data"]["n"])
        took = time.monotonic() - start
        assert bus.get_event(wait=1, tag="myco/budget") is None, "an event came twice"
    assert seen == list(range(EVENTS))
    # 2 s' worth at once, then 500 a second: at least 4 s for the 2,000 after the first 1,000.
    assert took > (EVENTS - 2 * LIMIT) / LIMIT * 0.9, f"{took:.1f} s: the budget was not applied"
    wait_for(lambda: master_link(master)["relayed"] >= EVENTS, what="the master's count")
    throttled = master_link(master)["throttled"]
    # About one refused batch per doubling of the minion's pause for each batch taken; a minion that resent
    # its whole window at once after each refusal would make it thousands.
    assert 0 < throttled < 400, f"{throttled} batches refused over the budget in {took:.1f} s"
    lines = [line for line in master.daemon.log.splitlines() if "over its relay budget" in line]
    assert len(lines) == 1 and re.search(r"minion 'm1' over its relay budget of 500 events/s", lines[0]), lines
