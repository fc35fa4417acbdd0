"""A minion id the config accepts is one the link accepts: the longest and oddest still link and relay."""
from __future__ import annotations

import pytest

from bench.procs import Site, link_state
from eventbus import event, minionid


@pytest.mark.parametrize("minion_id", ["m" * minionid.MAX_BYTES, "dé.jà-vu_01@host"])
def test_the_longest_and_a_unicode_id_link_and_relay(minion_id):
    site = Site()
    try:
        master, minion = site.linked(minion_id)
        assert minion_id in link_state(master)["present"]
        with event.get_event("master", opts=master.opts()) as bus, \
                event.get_event("minion", opts=minion.opts(), listen=False) as handle:
            assert handle.fire_master({"x": 1}, "myco/id-test")
            relayed = bus.get_event(wait=10, tag="myco/id-test")
        assert relayed is not None and relayed["id"] == minion_id
    finally:
        site.cleanup()
