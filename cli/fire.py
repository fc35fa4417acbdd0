"""``eventbus fire DATA TAG``: fire an event on a local bus."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from eventbus.cli import options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="the event data: a JSON or YAML mapping")
    parser.add_argument("tag", metavar="TAG", help="the event tag")
    parser.add_argument("--node", choices=options.NODES, default="minion",
                        help="whose bus to fire on (default minion)")
    parser.add_argument("--target", metavar="GLOB", default=None,
                        help="on a master: fire on the bus of every connected minion whose id matches")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S",
                        help="with --target: seconds to wait for the minions' acknowledgements (default 5)")
    options.add_config_dir(parser)


def parse_data(text: str) -> dict[str, Any]:
    """DATA as a dict: JSON, or else YAML; anything but a mapping is an error."""
    import yaml

    from eventbus.errors import InvalidEventError

    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "unparseable"
            raise InvalidEventError(f"DATA is neither JSON nor YAML ({problem}): {text[:60]!r}") from None
    if not isinstance(data, dict):
        raise InvalidEventError(f"DATA must be a JSON or YAML mapping, got {type(data).__name__}: {text[:60]!r}")
    return data


def run(args: argparse.Namespace) -> int:
    from eventbus import event
    from eventbus.bus import payload
    from eventbus.errors import BusUnavailableError

    data = parse_data(args.data)
    payload.check_tag(args.tag)
    if args.target is not None:
        from eventbus.cli.target import fire_targets

        return fire_targets(args.config_dir, data, args.tag, args.target, args.timeout)
    settings = options.bus_settings(args.config_dir, args.node)
    with event.get_event(args.node, opts=settings, listen=False) as bus:
        if not bus.fire_event(data, args.tag, timeout=2000):
            raise BusUnavailableError(f"no {args.node} daemon answered on sock_dir {settings.sock_dir}",
                                      sock_dir=str(settings.sock_dir))
    if sys.stderr.isatty():
        sys.stderr.write(which_bus(args.node, settings.sock_dir, args.config_dir) + "\n")
    return 0


def which_bus(node: str, sock_dir: Path, config_dir: str | None) -> str:
    """Where the event went, for a person: ``fire`` defaults to the minion's bus, ``watch`` to the master's."""
    try:
        shown = sock_dir.relative_to(Path.cwd())
    except ValueError:
        shown = sock_dir
    watch = "eventbus watch" + (" --node minion" if node == "minion" else "") + \
        (f" -c {config_dir}" if config_dir else "")
    return f"fired on the {node} bus ({shown}); watch it with: {watch}"
