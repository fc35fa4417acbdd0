"""The master daemon: the master's local bus, its minions' link and (with rules) its reactor."""
from __future__ import annotations

from eventbus import keys
from eventbus.daemon import openfiles, runner
from eventbus.daemon.link.master import MasterLink
from eventbus.daemon.reactor.child import ReactorChild
from eventbus.config import MasterConfig


def run(settings: MasterConfig) -> None:
    """Serve the master until SIGTERM/SIGINT."""
    # One descriptor per minion connection: lift the soft limit before the first one.
    openfiles.raise_for(openfiles.count_keys(settings.pki_dir, (keys.ACCEPTED, keys.PENDING)))
    runner.serve(settings, components=(MasterLink, ReactorChild), io_threads=2)  # type: ignore[arg-type]
