"""``eventbus reactor --status``: the master's reactor in ``name: value`` lines (rules, in flight, done, failed, lag)."""
from __future__ import annotations

import argparse

from eventbus.cli import options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", action="store_true", help="print the reactor's state (the default)")
    options.add_config_dir(parser)


def run(args: argparse.Namespace) -> int:
    from eventbus import config, systemstatus
    from eventbus.bus import control
    from eventbus.errors import BusUnavailableError

    settings = options.bus_settings(args.config_dir, "master")
    assert isinstance(settings, config.MasterConfig)
    status = systemstatus.read_status_file(systemstatus.reactor_status_path(settings), stale=True)
    # A master without rules has no reactor (``running: no``, ``rules: 0``): a state, not an error.
    running = systemstatus.is_running(status)
    try:
        head: int | None = int(control.ping(settings.sock_dir, timeout=2.0)["seq"])
    except BusUnavailableError:
        head = None
    cursor = status.get("cursor") if status else None
    lines = [
        ("running", f"yes (pid {status['pid']})" if running else "no"),
        ("rules", status["rules"] if running else len(settings.reactor)),
        ("in_flight", status["in_flight"] if running else 0),
        ("done", status["done"] if status else 0),
        ("failed", status["failed"] if status else 0),
        ("lost", status["lost"] if status else 0),
        ("cursor", cursor if cursor is not None else "none"),
        ("cursor_lag", max(head - cursor, 0) if head is not None and cursor is not None else "unknown"),
    ]
    for name, value in lines:
        print(f"{name}: {value}")
    return 0
