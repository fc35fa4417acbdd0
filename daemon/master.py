"""The master daemon: the master's local bus, its minions' link, (with rules) its reactor and (with
``cluster``) its part of the fleet-wide bus."""
from __future__ import annotations

from eventbus import keys
from eventbus.daemon import openfiles, runner
from eventbus.daemon.cluster import component
from eventbus.daemon.link.master import MasterLink
from eventbus.daemon.reactor.child import ReactorChild
from eventbus.config import MasterConfig


def run(settings: MasterConfig) -> None:
    """Serve the master until SIGTERM/SIGINT."""
    # One descriptor per minion connection: lift the soft limit before the first one.
    openfiles.raise_for(openfiles.count_keys(settings.pki_dir, (keys.ACCEPTED, keys.PENDING)))
    parts: tuple = (MasterLink, ReactorChild)
    if settings.cluster is not None:
        link, cluster = component.components(settings)
        parts = (link, cluster, ReactorChild)
    runner.serve(settings, components=parts, io_threads=2)
