"""``eventbus eventtype add|finalize|list``: the CloudEvents type registry under the API's ``root_dir``."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cli import options

    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="register a version of an event type (a draft until finalized)")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--schema", required=True, metavar="FILE", help="the JSON Schema of the event's data")
    add.add_argument("--version", default="1.0", metavar="V", help="the version (default 1.0)")
    add.add_argument("--description", default="", metavar="TEXT")
    finalize = actions.add_parser("finalize", help="make a version usable and immutable")
    finalize.add_argument("name", metavar="NAME")
    finalize.add_argument("--version", required=True, metavar="V")
    listing = actions.add_parser("list", help="NAME<TAB>VERSION<TAB>finalized|draft lines")
    for sub in (add, finalize, listing):
        options.add_config_dir(sub)


def run(args: argparse.Namespace) -> int:
    import json

    from eventbus import config, eventtypes
    from eventbus.errors import InvalidArgumentError

    settings = config.load(config.ApiConfig, config.config_path(args.config_dir, "api"))
    root = settings.root_dir
    if args.action == "add":
        try:
            with open(args.schema, encoding="utf-8") as handle:
                schema = json.load(handle)
        except OSError as exc:
            raise InvalidArgumentError(f"cannot read schema {args.schema}: {exc.strerror}", argument="schema") from None
        except ValueError as exc:
            raise InvalidArgumentError(f"schema {args.schema} is not valid JSON: {exc}", argument="schema") from None
        eventtypes.add(root, args.name, schema, args.version, args.description)
        print(f"event type {args.name} version {args.version} added as a draft; "
              f"'eventbus eventtype finalize {args.name} --version {args.version}' makes it usable")
    elif args.action == "finalize":
        eventtypes.finalize(root, args.name, args.version)
        print(f"event type {args.name} version {args.version} is finalized")
    else:
        for name, version, finalized in eventtypes.listing(root):
            print(f"{name}\t{version}\t{'finalized' if finalized else 'draft'}")
    return 0
