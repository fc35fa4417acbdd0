"""``eventbus api``: run the REST API in the foreground."""
from __future__ import annotations

import argparse

from eventbus.cli import options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_config_dir(parser)


def run(args: argparse.Namespace) -> int:
    from eventbus import config, logsetup
    from eventbus.netapi import server

    settings = config.load(config.ApiConfig, config.config_path(args.config_dir, "api"))
    logsetup.setup(settings.log_level, settings.log_file, name="api")
    server.serve(settings)
    return 0
