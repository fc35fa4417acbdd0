"""``eventbus channel add|list|remove|rotate``: CloudEvents channels under the API's ``root_dir``."""
from __future__ import annotations

import argparse

EPILOG = ("Channels and their secrets are kept under the root_dir of the api config in -c DIR "
          "(ROOT/var/lib/eventbus/cloudevents); a running API sees every change within a second.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from eventbus.cli import options

    actions = options.Actions(parser, "channel", EPILOG)
    action = actions.add

    add = action("add", "create a channel; prints its secret (once) and its inbound URL",
                 "NAME [--outbound-url URL] [--publish GLOB ...] [-c DIR]")
    add.add_argument("name", metavar="NAME", help="the channel's name: POST /cloudevents/NAME")
    add.add_argument("--outbound-url", metavar="URL",
                     help="where refused events are reported and published events are POSTed (http/https)")
    add.add_argument("--publish", nargs="+", default=[], metavar="GLOB",
                     help="tag globs of bus events to publish to the outbound URL (needs --outbound-url)")
    action("list", "print NAME<TAB>OUTBOUND_URL<TAB>PUBLISH_GLOBS lines (never secrets)", "[-c DIR]")
    remove = action("remove", "delete a channel and its secret", "NAME [-c DIR]")
    remove.add_argument("name", metavar="NAME", help="the channel")
    rotate = action("rotate", "give a channel a new secret; the old one stays valid for the grace period",
                    "NAME [--grace DURATION] [-c DIR]")
    rotate.add_argument("name", metavar="NAME", help="the channel")
    rotate.add_argument("--grace", type=options.duration, default=None, metavar="DURATION",
                        help="how long the old secret is still accepted: 90s, 10m, 2h, 1d or seconds "
                             "(default 1h); 0 revokes it at once, e.g. when it leaked")
    actions.done()


def run(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from eventbus.cli import options
    from eventbus.cloudevents import channels

    settings = options.api_settings(args.config_dir)
    root = settings.root_dir
    scheme = "https" if settings.ssl_crt is not None else "http"
    if args.action == "add":
        secret = channels.add(root, args.name, args.outbound_url, tuple(args.publish))
        print(f"secret: {secret}")
        print(f"url: {scheme}://{settings.host}:{settings.port}/cloudevents/{args.name}")
    elif args.action == "rotate":
        grace = channels.ROTATE_GRACE if args.grace is None else args.grace
        secret, until = channels.rotate(root, args.name, grace)
        print(f"secret: {secret}")
        if until is None:
            print("old secret revoked")
        else:
            when = datetime.fromtimestamp(until, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            print(f"old secret valid until {when} ({grace:.15g} s)")
    elif args.action == "remove":
        channels.remove(root, args.name)
        print(f"channel {args.name} removed")
    else:
        for name, url, globs in channels.listing(root):
            print(f"{name}\t{url}\t{' '.join(globs) or '-'}")
    return 0
