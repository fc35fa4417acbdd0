"""``eventbus channel add|list|remove|rotate``: CloudEvents channels under the API's ``root_dir``."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cli import options

    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="create a channel; prints its secret once and its inbound URL")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--outbound-url", metavar="URL", help="where refusals and published events are POSTed")
    add.add_argument("--publish", nargs="+", default=[], metavar="GLOB",
                     help="tag globs of bus events to publish to the outbound URL")
    listing = actions.add_parser("list", help="NAME<TAB>OUTBOUND_URL<TAB>PUBLISH_GLOBS lines")
    remove = actions.add_parser("remove", help="delete a channel and its secret")
    remove.add_argument("name", metavar="NAME")
    rotate = actions.add_parser("rotate", help="a new secret; the old one stays valid for one hour")
    rotate.add_argument("name", metavar="NAME")
    for sub in (add, listing, remove, rotate):
        options.add_config_dir(sub)


def run(args: argparse.Namespace) -> int:
    from eventbus import channels, config

    settings = config.load(config.ApiConfig, config.config_path(args.config_dir, "api"))
    root = settings.root_dir
    scheme = "https" if settings.ssl_crt is not None else "http"
    if args.action == "add":
        secret = channels.add(root, args.name, args.outbound_url, tuple(args.publish))
        print(f"secret: {secret}")
        print(f"url: {scheme}://{settings.host}:{settings.port}/cloudevents/{args.name}")
    elif args.action == "rotate":
        secret = channels.rotate(root, args.name)
        print(f"secret: {secret}")
        print(f"the old secret stays valid for {int(channels.ROTATE_GRACE)} s")
    elif args.action == "remove":
        channels.remove(root, args.name)
        print(f"channel {args.name} removed")
    else:
        for name, url, globs in channels.listing(root):
            print(f"{name}\t{url}\t{' '.join(globs) or '-'}")
    return 0
