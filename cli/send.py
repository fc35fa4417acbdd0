"""``eventbus send TAG [DATA] [KEY=VALUE ...] [--with-env]``: relay an event to the master (Salt's ``event.send``)."""
from __future__ import annotations

import argparse
import os
from typing import Any

from eventbus.cli import options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tag", metavar="TAG", help="the event tag")
    parser.add_argument("items", nargs="*", metavar="DATA|KEY=VALUE",
                        help="a JSON or YAML mapping of data first, and/or KEY=VALUE pairs added to it")
    parser.add_argument("--with-env", action="store_true", help="add the environment as data['environ']")
    options.add_config_dir(parser)


def build_data(items: list[str], with_env: bool) -> dict[str, Any]:
    """The event data of ``send``'s arguments: an optional mapping first, then KEY=VALUE pairs."""
    from eventbus.cli.fire import parse_data
    from eventbus.errors import InvalidEventError

    data: dict[str, Any] = {}
    for position, item in enumerate(items):
        key, sep, value = item.partition("=")
        if position == 0 and (not sep or item.lstrip().startswith(("{", "["))):
            data.update(parse_data(item))
        elif sep and key:
            data[key] = value
        else:
            raise InvalidEventError(f"expected KEY=VALUE, got {item[:60]!r}")
    if with_env:
        data["environ"] = dict(os.environ)
    return data


def run(args: argparse.Namespace) -> int:
    from eventbus.bus import payload, relay
    from eventbus.errors import DaemonRefusedError, EventBusError

    payload.check_tag(args.tag)
    data = build_data(args.items, args.with_env)
    settings = options.bus_settings(args.config_dir, "minion")
    try:
        relay.send(settings.sock_dir, args.tag, data, timeout=5.0)
    except DaemonRefusedError as exc:
        raise EventBusError(exc.reason) from None
    return 0
