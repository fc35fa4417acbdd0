"""The master daemon: the master's local bus, its minions' link and (with rules) its reactor."""
from __future__ import annotations

from daemon import runner
from daemon.link_master import MasterLink
from daemon.reactor_child import ReactorChild
from eventbus.config import MasterConfig


def run(settings: MasterConfig) -> None:
    """Serve the master until SIGTERM/SIGINT."""
    runner.serve(settings, components=(MasterLink, ReactorChild))  # type: ignore[arg-type]
