"""Relaying minion events to the master: the minion's relay socket and the tags minions may not use.

``fire_master`` and ``eventbus send`` hand ``tag NUL data`` frames to the
local minion daemon on ``relay.ipc`` in its ``sock_dir``; the daemon spools
them and the link delivers them to the master (``eventbus.daemon.link.minion``).
"""
from __future__ import annotations

import os
from pathlib import Path

from eventbus.bus import control, wire
from eventbus.errors import BusUnavailableError

RELAY_SOCKET = "relay.ipc"

# Tags no minion may fire onto the master bus (docs/link.md, Events on the master bus); salt/minion/<other id>/
# is checked apart.
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


def send(sock_dir: str | os.PathLike, tag: str, data: dict, timeout: float = 5.0) -> dict:
    """Hand one event to the minion daemon on ``sock_dir`` for the master (Salt's ``event.send``).

    Returns once the event is in the minion's spool: ``{"seq", "spooled", "master"}``.
    ``BusUnavailableError`` when no minion daemon runs there; ``DaemonRefusedError``
    (``reason`` e.g. a reserved tag) when the minion refuses the event.
    """
    try:
        return control.request(sock_dir, wire.VERB_RELAY, {"tag": tag, "data": data}, timeout=timeout)
    except BusUnavailableError:
        raise BusUnavailableError(f"no minion daemon is running on sock_dir {sock_dir}; "
                                  "send relays through the local minion", sock_dir=str(sock_dir)) from None
