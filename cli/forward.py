"""``eventbus forward``: run the forwarder daemon, or with ``--status`` print one line per broker."""
from __future__ import annotations

import argparse
import sys

from eventbus.cli import options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_config_dir(parser)
    parser.add_argument("--status", action="store_true",
                        help="print NAME TYPE up|down delivered=N pending=N dropped=N per broker of the "
                             "running forwarder")


def _settings(config_dir: str | None):  # -> ForwardConfig
    from eventbus import config
    from eventbus.forwarding import config as forwardconf
    from eventbus.errors import ConfigError

    path = config.config_path(config_dir, "forward", required=True)
    if path is None or not path.exists():
        raise ConfigError(f"{path}: no forward config file there", file=str(path))
    return forwardconf.load(path)


def run(args: argparse.Namespace) -> int:
    from eventbus import logsetup

    settings = _settings(args.config_dir)
    if args.status:
        return status(settings)
    logsetup.setup(settings.log_level, settings.log_file, name="forward")
    from eventbus.daemon.forward import service

    return service.run(settings)


def status(settings) -> int:
    from eventbus.bus import control, wire
    from eventbus.errors import BusUnavailableError

    try:
        stats = control.request(settings.sock_dir, wire.VERB_STATS, timeout=5.0)
    except BusUnavailableError:
        sys.stderr.write(f"error: eventbus forward is not running (no control socket in {settings.sock_dir})\n")
        return 1
    for broker in stats["brokers"]:
        print(f"{broker['name']} {broker['type']} {broker['state']} delivered={broker['delivered']} "
              f"pending={broker['pending']} dropped={broker['dropped']}")
    return 0
