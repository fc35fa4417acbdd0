"""Relaying minion events to the master: the minion's relay socket and the tags minions may not use.

``fire_master`` and ``eventbus send`` hand ``tag NUL data`` frames to the
local minion daemon on ``relay.ipc`` in its ``sock_dir``; the daemon spools
them and the link delivers them to the master (``daemon.link_minion``).
"""
from __future__ import annotations

from pathlib import Path

from eventbus import wire

RELAY_SOCKET = "relay.ipc"
VERB_RELAY = b"relay"

# Tags no minion may fire onto the master bus (SPEC 5); salt/minion/<other id>/ is checked apart.
RESERVED_PREFIXES = ("salt/auth", "salt/key", "salt/presence/", "salt/netapi/")
MINION_PREFIX = "salt/minion/"


def relay_endpoint(sock_dir: str | Path) -> str:
    """The minion daemon's relay endpoint under ``sock_dir`` (checked for length like the others)."""
    wire.endpoints(sock_dir)
    return f"ipc://{Path(sock_dir) / RELAY_SOCKET}"


def refused_tag(tag: str, minion_id: str) -> str | None:
    """Why minion ``minion_id`` may not fire ``tag`` on the master bus, or ``None`` when it may."""
    if tag.startswith(RESERVED_PREFIXES):
        return f"tag {tag[:80]!r} is reserved for the master"
    if tag.startswith(MINION_PREFIX) and not tag.startswith(f"{MINION_PREFIX}{minion_id}/"):
        return f"tag {tag[:80]!r} belongs to another minion"
    return None
