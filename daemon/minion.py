"""The minion daemon: the minion's local bus and its link to the master."""
from __future__ import annotations

from eventbus.daemon import runner
from eventbus.daemon.link.minion import MinionLink
from eventbus.config import MinionConfig


def run(settings: MinionConfig) -> None:
    """Serve the minion until SIGTERM/SIGINT."""
    runner.serve(settings, components=(MinionLink,))  # type: ignore[arg-type]
