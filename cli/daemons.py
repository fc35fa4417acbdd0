"""``eventbus master`` and ``eventbus minion``: run a daemon in the foreground."""
from __future__ import annotations

import argparse

from cli import options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_config_dir(parser)


def run(args: argparse.Namespace) -> int:
    from eventbus import logsetup

    settings = options.bus_settings(args.config_dir, args.command)
    logsetup.setup(settings.log_level, settings.log_file, name=args.command)
    if args.command == "master":
        from daemon import master as daemon_module
    else:
        from daemon import minion as daemon_module  # type: ignore[no-redef]
    daemon_module.run(settings)  # type: ignore[arg-type]
    return 0
