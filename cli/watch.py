"""``eventbus watch``: print the bus's events as ``TAG<TAB>JSON`` lines (Salt's ``state.event``)."""
from __future__ import annotations

import argparse
import json
import sys

from cli import options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tagmatch", nargs="?", default="*", metavar="TAGMATCH",
                        help="a glob, or a regular expression where no glob matches (default '*')")
    parser.add_argument("--count", type=options.positive_int, default=-1, metavar="N", help="exit after N matching events")
    parser.add_argument("--quiet", action="store_true", help="print nothing (count and exit)")
    parser.add_argument("--pretty", action="store_true", help="sorted keys, indent 4")
    parser.add_argument("--node", choices=options.NODES, default="master", help="whose bus (default master)")
    options.add_config_dir(parser)


def format_event(tag: str, data: dict, pretty: bool = False) -> str:
    """One watch line: the tag, a tab, the data as JSON (Salt's ``state.event`` layout)."""
    text = json.dumps(data, sort_keys=pretty, default=str, indent=4 if pretty else None)
    return f"{tag}\t{text}"


def run(args: argparse.Namespace) -> int:
    from eventbus import event, match
    from eventbus.errors import BusUnavailableError

    settings = options.bus_settings(args.config_dir, args.node)
    wanted = match.expression(args.tagmatch)
    remaining = args.count
    with event.get_event(args.node, opts=settings) as bus:
        if not bus.connected:
            raise BusUnavailableError(f"no {args.node} daemon is running on sock_dir {settings.sock_dir}",
                                      sock_dir=str(settings.sock_dir))
        write = sys.stdout.write
        flush = sys.stdout.flush
        for full in bus.iter_events(full=True, auto_reconnect=True):
            if not wanted(full["tag"]):
                continue
            if not args.quiet:
                write(format_event(full["tag"], full["data"], args.pretty) + "\n")
                flush()
            if remaining > 0:
                remaining -= 1
                if remaining == 0:
                    return 0
    return 0
