"""The bus in one breath: a real master daemon, a handle fires and hears its own event."""
from __future__ import annotations

from eventbus import event


def test_fire_and_hear(master):
    with event.get_event("master", opts=master.opts()) as bus:
        assert bus.connected
        assert bus.fire_event({"message": "It works!"}, "myco/event/success") is True
        got = bus.get_event(wait=5, tag="myco/event", full=True)
    assert got["tag"] == "myco/event/success"
    assert got["data"]["message"] == "It works!"
