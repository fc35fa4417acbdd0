"""``eventbus key``: list, accept, reject and delete minion keys, like ``salt-key``.

With the master running, changes go through it (it acts at once and fires
``salt/key``); without one, the key directories are changed directly.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from cli import options
from eventbus import config

HEADINGS = (("minions", "Accepted Keys:"), ("minions_denied", "Denied Keys:"), ("minions_pre", "Unaccepted Keys:"),
            ("minions_rejected", "Rejected Keys:"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("-L", "--list", action="store_true", help="list accepted, pending and rejected keys (default)")
    actions.add_argument("-a", "--accept", metavar="ID", help="accept the pending key of minion ID")
    actions.add_argument("-A", "--accept-all", action="store_true", help="accept every pending key")
    actions.add_argument("-r", "--reject", metavar="ID", help="reject the key of minion ID")
    actions.add_argument("-d", "--delete", metavar="ID", help="delete the key of minion ID")
    options.add_config_dir(parser)


def _request(args: argparse.Namespace) -> dict:
    if args.accept:
        return {"op": "accept", "id": args.accept}
    if args.accept_all:
        return {"op": "accept_all"}
    if args.reject:
        return {"op": "reject", "id": args.reject}
    if args.delete:
        return {"op": "delete", "id": args.delete}
    return {"op": "list"}


def _offline(settings: config.MasterConfig, request: dict) -> Any:
    """Do ``request`` on the key directories themselves (no master is running to do it)."""
    from daemon.keys import KeyStore

    store = KeyStore(settings.pki_dir)
    op = request["op"]
    if op == "list":
        return store.listing()
    ids = store.listing()["minions_pre"] if op == "accept_all" else [request["id"]]
    act = "accept" if op == "accept_all" else op
    for minion_id in ids:
        getattr(store, act)(minion_id)
    return ids


def run(args: argparse.Namespace) -> int:
    from eventbus import control
    from eventbus.errors import BusUnavailableError, EventBusError

    settings = options.bus_settings(args.config_dir, "master")
    request = _request(args)
    try:
        result = control.request(settings.sock_dir, b"key", request, timeout=5.0)
    except BusUnavailableError:
        result = _offline(settings, request)
    except EventBusError as exc:
        raise EventBusError(str(exc).split("refused key: key: ", 1)[-1]) from None
    if request["op"] == "list":
        for state, heading in HEADINGS:
            print(heading)
            for minion_id in result.get(state, []):
                print(minion_id)
        return 0
    done = {"accept": "Key for minion {} accepted.", "accept_all": "Key for minion {} accepted.",
            "reject": "Key for minion {} rejected.", "delete": "Key for minion {} deleted."}[request["op"]]
    if not result:
        print("No pending keys to accept.", file=sys.stderr)
    for minion_id in result:
        print(done.format(minion_id))
    return 0
