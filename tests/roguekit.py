"""Test kit for a rogue accepted minion: its misbehaviour, its flood, and honest minions' timed traffic.

The rogue (``Rogue``, a raw CURVE DEALER with an accepted key, and the
messages it builds) is ``bench.linkclient``'s; its flood and the honest
minions' timed traffic (``Flood``, ``HonestTraffic``, each a process of its
own) are ``bench.roguetraffic``'s. The rogue minion benchmark
(``python -m bench.rogue``) runs the same pieces.
"""
from __future__ import annotations

from bench.linkclient import Rogue, event_frame, malformed_messages
from bench.roguetraffic import Flood, HonestTraffic

__all__ = ["Flood", "HonestTraffic", "Rogue", "event_frame", "malformed_messages", "p99"]


def p99(values: list[float]) -> float:
    """The 99th percentile of at least 50 values."""
    assert len(values) >= 50, f"only {len(values)} values"
    return sorted(values)[int(len(values) * 0.99) - 1]
