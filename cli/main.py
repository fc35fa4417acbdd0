"""``eventbus``: the command line entry point. Parses, dispatches, and turns errors into one line."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn, Sequence

# subcommand -> (module, one-line help); modules are imported only when chosen.
COMMANDS = {
    "master": ("eventbus.cli.daemons", "run the master daemon"),
    "minion": ("eventbus.cli.daemons", "run the minion daemon"),
    "watch": ("eventbus.cli.watch", "print the bus's events as TAG<TAB>JSON lines"),
    "fire": ("eventbus.cli.fire", "fire an event on a local bus"),
    "journal": ("eventbus.cli.journal", "show what the master's journal holds"),
    "send": ("eventbus.cli.send", "relay an event to the master through the local minion"),
    "key": ("eventbus.cli.key", "list, accept, reject and delete minion keys"),
    "api": ("eventbus.cli.api", "run the REST API"),
    "user": ("eventbus.cli.user", "manage REST API users (user add NAME)"),
    "eventtype": ("eventbus.cli.eventtype", "register and finalize CloudEvents types (JSON Schemas, versioned)"),
    "channel": ("eventbus.cli.channel", "add, list, remove and rotate CloudEvents channels"),
    "forward": ("eventbus.cli.forward", "run the forwarder: the master bus into brokers (--status: their health)"),
    "status": ("eventbus.cli.status", "the running daemons' figures (the same as GET /metrics), one name: value line each"),
    "reactor": ("eventbus.cli.reactor", "show the master's reactor: rules, in flight, done, failed, cursor lag"),
}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def build_parser() -> Parser:
    parser = Parser(prog="eventbus", description="A Salt-like event bus: daemons, watch, fire.")
    from eventbus import __version__

    parser.add_argument("--version", action="version", version=f"eventbus {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, summary) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        importlib.import_module(module_name).add_arguments(sub)
    return parser


def _join_option_values(argv: list[str]) -> list[str]:
    """``--since -10m`` as ``--since=-10m``: argparse would take a value starting with '-' for an option."""
    for index, word in enumerate(argv[:-1]):
        if word == "--since":
            return argv[:index] + [f"--since={argv[index + 1]}"] + argv[index + 2:]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    from eventbus.errors import EventBusError

    args = build_parser().parse_args(_join_option_values(list(sys.argv[1:] if argv is None else argv)))
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return module.run(args)
    except EventBusError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our stdout went away (e.g. `| head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
