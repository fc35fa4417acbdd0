"""The minion daemon: the minion's local bus (and, later, its link to the master)."""
from __future__ import annotations

from daemon import runner
from eventbus.config import MinionConfig


def run(settings: MinionConfig) -> None:
    """Serve the minion until SIGTERM/SIGINT."""
    runner.serve(settings)
