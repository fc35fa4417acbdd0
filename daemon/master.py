"""The master daemon: the master's local bus (and, later, its minions' link)."""
from __future__ import annotations

from daemon import runner
from eventbus.config import MasterConfig


def run(settings: MasterConfig) -> None:
    """Serve the master until SIGTERM/SIGINT."""
    runner.serve(settings)
