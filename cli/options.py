"""Options every subcommand shares: the config directory and the node whose bus to use."""
from __future__ import annotations

import argparse

from eventbus import config

NODES = ("master", "minion")


def add_config_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config-dir", dest="config_dir", metavar="DIR", default=None,
                        help=f"directory of the master, minion and api config files "
                             f"(default {config.DEFAULT_CONFIG_DIR})")


def bus_settings(config_dir: str | None, node: str) -> config.BusConfig:
    """The typed config of ``node`` ("master" or "minion") from ``-c DIR``."""
    cls = config.MasterConfig if node == "master" else config.MinionConfig
    return config.load(cls, config.config_path(config_dir, node))


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value
