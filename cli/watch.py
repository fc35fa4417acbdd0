"""``eventbus watch``: print the bus's events as ``TAG<TAB>JSON`` lines (Salt's ``state.event``)."""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time

from eventbus.cli import options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tagmatch", nargs="?", default="*", metavar="TAGMATCH",
                        help="a glob, or a regular expression where no glob matches (default '*')")
    parser.add_argument("--count", type=options.positive_int, default=-1, metavar="N", help="exit after N matching events")
    parser.add_argument("--quiet", action="store_true", help="print nothing (count and exit)")
    parser.add_argument("--pretty", action="store_true", help="sorted keys, indent 4")
    parser.add_argument("--node", choices=options.NODES, default="master", help="whose bus (default master)")
    parser.add_argument("--since", type=since_value, default=None, metavar="SEQ|ISO-TIME|-DURATION",
                        help="first print the retained events after SEQ, or from a time (UTC unless it has an "
                             "offset) or a duration ago (-90s, -10m, -2h, -1d); 0 is everything retained")
    options.add_config_dir(parser)


def since_value(text: str) -> int | float:
    """argparse type for ``--since``: a seq (int), or a point in time (unix seconds, float)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if text.startswith("-") and options.DURATION.fullmatch(text[1:]):
        return time.time() - options.duration(text[1:])
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seq, an ISO time or a duration like -10m") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def since_seq(since: int | float, settings: object, node: str) -> int:
    """The seq to follow from: ``since`` itself, or the last one journaled before that time."""
    from eventbus.errors import JournalError
    from eventbus.journal.reader import JournalReader

    if isinstance(since, int):
        return since
    if node != "master" or not getattr(settings, "event_journal", False):
        raise JournalError(f"--since a time needs the master's journal (event_journal on the master); "
                           f"give a seq instead")
    return JournalReader(settings.journal_dir).seq_before_time(since)  # type: ignore[attr-defined]


def format_event(tag: str, data: dict, pretty: bool = False) -> str:
    """One watch line: the tag, a tab, the data as JSON (Salt's ``state.event`` layout)."""
    text = json.dumps(data, sort_keys=pretty, default=str, indent=4 if pretty else None)
    return f"{tag}\t{text}"


def run(args: argparse.Namespace) -> int:
    from eventbus import event
    from eventbus.bus import match
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
        if args.since is None:
            events = bus.iter_events(full=True, auto_reconnect=True)
        else:
            events = bus.follow(since_seq(args.since, settings, args.node))
        for full in events:
            if full.get("seq", 0) is None:  # a gap notice from --since: always shown, never counted
                if not args.quiet:
                    write(format_event(full["tag"], full["data"], args.pretty) + "\n")
                    flush()
                continue
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
