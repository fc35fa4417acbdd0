"""Options every subcommand shares: the config directory, the node whose bus to use, durations."""
from __future__ import annotations

import argparse
import re

from eventbus import config

NODES = ("master", "minion")
DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def add_config_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config-dir", dest="config_dir", metavar="DIR", default=None,
                        help=f"directory of the master, minion and api config files "
                             f"(default $EVENTBUS_CONFIG_DIR, else {config.DEFAULT_CONFIG_DIR})")


class Actions:
    """The actions of ``eventbus NOUN ACTION``, each with its usage line and epilog, ``-c DIR`` added last."""

    def __init__(self, parser: argparse.ArgumentParser, noun: str, epilog: str) -> None:
        parser.epilog = epilog
        self._actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        self._noun, self._epilog = noun, epilog
        self._made: list[argparse.ArgumentParser] = []

    def add(self, name: str, summary: str, usage: str) -> argparse.ArgumentParser:
        sub = self._actions.add_parser(name, help=summary, description=summary, epilog=self._epilog,
                                       usage=f"eventbus {self._noun} {name} {usage}")
        self._made.append(sub)
        return sub

    def done(self) -> None:
        for sub in self._made:
            add_config_dir(sub)


def api_settings(config_dir: str | None) -> config.ApiConfig:
    """The API's typed config, for a command that writes state the API reads: no config file is an error."""
    return config.load(config.ApiConfig, config.config_path(config_dir, "api", required=True))


def bus_settings(config_dir: str | None, node: str) -> config.BusConfig:
    """The typed config of ``node`` ("master" or "minion") from ``-c DIR``."""
    cls = config.MasterConfig if node == "master" else config.MinionConfig
    return config.load(cls, config.config_path(config_dir, node))


def duration(text: str) -> float:
    """argparse type: seconds from ``90s``, ``10m``, ``2h``, ``1d`` or a plain number of seconds."""
    found = DURATION.fullmatch(text.strip())
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 10m, 2h, 1d or a number of seconds")
    return float(found.group(1)) * UNIT_SECONDS[found.group(2)]


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value
