"""``eventbus send TAG [DATA] [KEY=VALUE ...] [--with-env]``: relay an event to the master (Salt's ``event.send``)."""
from __future__ import annotations

import argparse
import os
from typing import Any

from cli import options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tag", metavar="TAG", help="the event tag")
    parser.add_argument("items", nargs="*", metavar="DATA|KEY=VALUE",
                        help="a JSON or YAML mapping of data first, and/or KEY=VALUE pairs added to it")
    parser.add_argument("--with-env", action="store_true", help="add the environment as data['environ']")
    options.add_config_dir(parser)


def build_data(items: list[str], with_env: bool) -> dict[str, Any]:
    """The event data of ``send``'s arguments: an optional mapping first, then KEY=VALUE pairs."""
    from cli.fire import parse_data
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
    from eventbus import control, payload, relay
    from eventbus.errors import BusUnavailableError, EventBusError

    payload.check_tag(args.tag)
    data = build_data(args.items, args.with_env)
    settings = options.bus_settings(args.config_dir, "minion")
    try:
        control.request(settings.sock_dir, relay.VERB_RELAY, {"tag": args.tag, "data": data}, timeout=5.0)
    except BusUnavailableError:
        raise BusUnavailableError(f"no minion daemon is running on sock_dir {settings.sock_dir}; "
                                  "send relays through the local minion", sock_dir=str(settings.sock_dir)) from None
    except EventBusError as exc:
        # The daemon's refusal reads "... refused relay: <reason>"; the reason is what matters.
        raise EventBusError(str(exc).split("refused relay: relay: ", 1)[-1]) from None
    return 0
