"""``eventbus master`` and ``eventbus minion``: run a daemon in the foreground."""
from __future__ import annotations

import argparse

from eventbus.cli import options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_config_dir(parser)


def run(args: argparse.Namespace) -> int:
    from eventbus import logsetup

    settings = options.bus_settings(args.config_dir, args.command)
    logsetup.setup(settings.log_level, settings.log_file, name=args.command)
    if args.command == "master":
        from eventbus.daemon import master as daemon_module
    else:
        from eventbus.daemon import minion as daemon_module
    daemon_module.run(settings)  # type: ignore[arg-type]
    return 0
