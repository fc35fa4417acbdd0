"""``eventbus key``: list, accept, reject and delete minion keys, like ``salt-key``.

With the master running, changes go through it (it acts at once and fires
``salt/key``); without one, the key directories are changed directly
(both by ``eventbus.bus.admin``).
"""
from __future__ import annotations

import argparse
import sys

from eventbus.cli import options

HEADINGS = (("minions", "Accepted Keys:"), ("minions_denied", "Denied Keys:"), ("minions_pre", "Unaccepted Keys:"),
            ("minions_rejected", "Rejected Keys:"))
DONE = {"accept": "Key for minion {} accepted.", "accept_all": "Key for minion {} accepted.",
        "reject": "Key for minion {} rejected.", "delete": "Key for minion {} deleted."}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("-L", "--list", action="store_true", help="list accepted, pending and rejected keys (default)")
    actions.add_argument("-a", "--accept", metavar="ID", help="accept the pending key of minion ID")
    actions.add_argument("-A", "--accept-all", action="store_true", help="accept every pending key")
    actions.add_argument("-r", "--reject", metavar="ID", help="reject the key of minion ID")
    actions.add_argument("-d", "--delete", metavar="ID", help="delete the key of minion ID")
    options.add_config_dir(parser)


def run(args: argparse.Namespace) -> int:
    from eventbus import config
    from eventbus.bus.admin import Admin
    from eventbus.errors import BusUnavailableError, DaemonRefusedError, EventBusError

    settings = options.bus_settings(args.config_dir, "master")
    # Without a config file only a running master is asked: no key directories are made on defaults.
    admin = Admin.for_master(settings) if settings.source else Admin(settings.sock_dir)  # type: ignore[arg-type]
    try:
        if args.accept:
            op, changed = "accept", admin.accept(args.accept)
        elif args.accept_all:
            op, changed = "accept_all", admin.accept_all()
        elif args.reject:
            op, changed = "reject", admin.reject(args.reject)
        elif args.delete:
            op, changed = "delete", admin.delete(args.delete)
        else:
            listing = admin.list_keys()
            for state, heading in HEADINGS:
                print(heading)
                for minion_id in listing.get(state, []):
                    print(minion_id)
            return 0
    except DaemonRefusedError as exc:
        raise EventBusError(exc.reason) from None
    except BusUnavailableError:
        if settings.source is None:
            config.config_path(args.config_dir, "master", required=True)  # the error naming the file looked for
        raise
    if not changed:
        print("No pending keys to accept.", file=sys.stderr)
    for minion_id in changed:
        print(DONE[op].format(minion_id))
    return 0
