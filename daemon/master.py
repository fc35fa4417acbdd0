"""The master daemon: the master's local bus, its minions' link and (with rules) its reactor."""
from __future__ import annotations

from eventbus.daemon import runner
from eventbus.daemon.link.master import MasterLink
from eventbus.daemon.reactor.child import ReactorChild
from eventbus.config import MasterConfig


def run(settings: MasterConfig) -> None:
    """Serve the master until SIGTERM/SIGINT."""
    runner.serve(settings, components=(MasterLink, ReactorChild))  # type: ignore[arg-type]
