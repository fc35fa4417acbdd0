"""Presence from heartbeats: who is present, who left, what changed since the last report."""
from __future__ import annotations

from eventbus.daemon.link.presence import Presence


def test_silent_minions_leave_and_returning_ones_come_back():
    presence = Presence(timeout=1.5)
    assert presence.heard("a", 0.0) is True
    assert presence.heard("b", 0.0) is True
    assert presence.heard("a", 1.0) is False
    assert presence.report() == (["a", "b"], ["a", "b"], [])
    assert presence.expire(1.6) == ["b"]
    assert presence.present() == ["a"] and "b" not in presence
    assert presence.report() == (["a"], [], ["b"])
    assert presence.report() == (["a"], [], [])
    presence.heard("b", 2.0)
    presence.forget("a")
    assert presence.report() == (["b"], ["b"], ["a"])


def test_a_live_minion_with_a_late_heartbeat_stays():
    presence = Presence(timeout=1.5)
    presence.heard("a", 0.0)
    assert presence.expire(1.4) == []
    presence.heard("a", 1.4)
    assert presence.expire(2.8) == [] and presence.present() == ["a"]
