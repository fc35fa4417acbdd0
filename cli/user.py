"""``eventbus user add NAME [--password-stdin]``: add or replace a REST API user in the users file."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from eventbus.cli import options

    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add or replace a user (asks for the password)")
    add.add_argument("name", metavar="NAME", help="the user name")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of stdin instead of asking")
    add.add_argument("--eauth", default="file", help="the external_auth backend (default file)")
    options.add_config_dir(add)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    from eventbus.errors import InvalidArgumentError

    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise InvalidArgumentError("the two passwords differ", argument="password")
    return first


def run(args: argparse.Namespace) -> int:
    from eventbus.cli import options
    from eventbus.errors import ConfigError
    from eventbus.netapi import auth

    settings = options.api_settings(args.config_dir)
    backend = settings.external_auth.get(args.eauth)
    if backend is None:
        raise ConfigError(f"{settings.source}: no external_auth backend {args.eauth!r}; add "
                          f"'external_auth: {{{args.eauth}: {{{args.name}: [\"*\"]}}}}' (the users file is "
                          f"then etc/eventbus/api-users under root_dir)", key="external_auth")
    auth.check_user_name(args.name)
    auth.write_user(backend.users_file, args.name, _password(args.password_stdin))
    note = "" if args.name in backend.perms else (
        f" (note: {args.name} has no tag globs under external_auth.{args.eauth}, so cannot log in yet)")
    print(f"user {args.name} saved in {backend.users_file}{note}")
    return 0
