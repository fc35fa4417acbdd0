"""``eventbus eventtype add|finalize|list``: the CloudEvents type registry under the API's ``root_dir``."""
from __future__ import annotations

import argparse

EPILOG = ("The registry is kept under the root_dir of the api config in -c DIR "
          "(ROOT/var/lib/eventbus/cloudevents/eventtypes.json); a running API sees every change within a "
          "second. Only finalized versions accept events.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from eventbus.cli import options

    actions = options.Actions(parser, "eventtype", EPILOG)
    action = actions.add

    add = action("add", "register a version of an event type (a draft until finalized)",
                 "NAME --schema FILE [--version V] [--description TEXT] [-c DIR]")
    add.add_argument("name", metavar="NAME", help="the CloudEvents 'type' attribute, e.g. com.example.order")
    add.add_argument("--schema", required=True, metavar="FILE",
                     help="the JSON Schema of the event's data; its $schema may name any draft the installed "
                          "jsonschema knows (draft-04 to 2020-12), draft-07 when it names none")
    add.add_argument("--version", default="1.0", metavar="V",
                     help="the version, the events' 'version' attribute (default 1.0)")
    add.add_argument("--description", default="", metavar="TEXT", help="what the type is, for people")
    finalize = action("finalize", "make a version usable and immutable (change it by adding a new version)",
                      "NAME --version V [-c DIR]")
    finalize.add_argument("name", metavar="NAME", help="the event type")
    finalize.add_argument("--version", required=True, metavar="V", help="the version to finalize")
    action("list", "print NAME<TAB>VERSION<TAB>finalized|draft lines", "[-c DIR]")
    actions.done()


def run(args: argparse.Namespace) -> int:
    import json

    from eventbus.cli import options
    from eventbus.cloudevents import eventtypes
    from eventbus.errors import InvalidArgumentError

    root = options.api_settings(args.config_dir).root_dir
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
