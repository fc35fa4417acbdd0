"""``eventbus journal``: what the master's journal holds, one ``name: value`` line each."""
from __future__ import annotations

import argparse
import datetime
import sys

from eventbus.cli import options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_config_dir(parser)


def _time(value: float | None) -> str:
    if value is None:
        return "none"
    return datetime.datetime.fromtimestamp(value, datetime.timezone.utc).replace(tzinfo=None).isoformat(
        timespec="microseconds")


def run(args: argparse.Namespace) -> int:
    from eventbus.errors import JournalError
    from eventbus.journal.reader import JournalReader

    settings = options.bus_settings(args.config_dir, "master")
    if not settings.event_journal:  # type: ignore[attr-defined]
        raise JournalError("the master's journal is off (event_journal: false in its config)")
    directory = settings.journal_dir  # type: ignore[attr-defined]
    if not directory.is_dir():
        raise JournalError(f"no journal at {directory} yet: the master has not run with this config",
                           path=str(directory))
    stats = JournalReader(directory).stats()
    lines = {
        "first_seq": stats.first_seq if stats.first_seq is not None else "none",
        "last_seq": stats.last_seq if stats.last_seq is not None else "none",
        "first_time": _time(stats.first_time),
        "last_time": _time(stats.last_time),
        "events": stats.events,
        "bytes": stats.bytes,
        "segments": stats.segments,
    }
    sys.stdout.write("".join(f"{name}: {value}\n" for name, value in lines.items()))
    return 0
