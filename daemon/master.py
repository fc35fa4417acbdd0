"""The master daemon: the master's local bus and its minions' link."""
from __future__ import annotations

from daemon import runner
from daemon.link_master import MasterLink
from eventbus.config import MasterConfig


def run(settings: MasterConfig) -> None:
    """Serve the master until SIGTERM/SIGINT."""
    runner.serve(settings, components=(MasterLink,))  # type: ignore[arg-type]
