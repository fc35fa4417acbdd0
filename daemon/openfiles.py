"""A master's open-file limit: one descriptor per minion connection, so thousands of minions need thousands.

At start the soft ``RLIMIT_NOFILE`` goes up to the hard limit, and when even
the hard limit is below what the master's known minion keys need, one log
line says what to set (``plan`` decides, without the OS).
"""
from __future__ import annotations

import logging
import os
import resource
from pathlib import Path

log = logging.getLogger(__name__)

# Descriptors the daemon uses besides its minions' connections: its bus sockets and their listeners, the
# journal, the reactor's child, key and seq files while they are read.
RESERVE = 1024


def needed(minion_keys: int) -> int:
    """Descriptors a master with ``minion_keys`` accepted or pending keys needs: one connection each, and its own."""
    return minion_keys + RESERVE


def plan(soft: int, hard: int, minion_keys: int) -> tuple[int, str | None]:
    """(the soft limit to set, a warning or ``None``) for the limits ``soft``/``hard`` (-1: unlimited)."""
    unlimited = resource.RLIM_INFINITY
    want = needed(minion_keys)
    if hard != unlimited:
        target = hard
    else:
        target = soft if soft == unlimited else max(soft, want)
    if hard != unlimited and hard < want:
        return target, (f"the open-file limit (hard {hard}) is below the {want} this master needs for its "
                        f"{minion_keys} minion keys (one connection each, plus {RESERVE} of its own): minions "
                        f"past it cannot connect; raise it (systemd LimitNOFILE={_round_up(want)}, or "
                        f"'ulimit -n {_round_up(want)}' as root before starting the master)")
    return target, None


def _round_up(value: int) -> int:
    """A limit to suggest: the next power of two at or above ``value``."""
    return 1 << (value - 1).bit_length()


def count_keys(pki_dir: Path, states: tuple[str, ...]) -> int:
    """Key files in ``pki_dir``'s ``states`` directories (missing ones count none)."""
    total = 0
    for state in states:
        try:
            with os.scandir(pki_dir / state) as entries:
                total += sum(1 for entry in entries if not entry.name.startswith("."))
        except FileNotFoundError:
            continue
    return total


def raise_for(minion_keys: int) -> int:
    """Raise the soft open-file limit to the hard one; log once when that is too low. The soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target, warning = plan(soft, hard, minion_keys)
    if target != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    if warning is not None:
        log.warning("%s", warning)
    return soft
