"""``eventbus fire DATA TAG --target GLOB``: fire onto the buses of matching minions, through the master."""
from __future__ import annotations

import sys

from eventbus.cli import options


def fire_targets(config_dir: str | None, data: dict, tag: str, target: str, timeout: float) -> int:
    """Ask the master to fire on every connected minion matching ``target``; print ``ID: True`` per ack."""
    from eventbus.bus.admin import Admin

    admin = Admin.for_master(options.bus_settings(config_dir, "master"))  # type: ignore[arg-type]
    silent = []
    for minion_id, acked in admin.fire_and_wait(data, tag, target, timeout):
        print(f"{minion_id}: {acked}", flush=True)
        if not acked:
            silent.append(minion_id)
    if silent:
        sys.stderr.write(f"error: no acknowledgement within {timeout:g} s from: {', '.join(silent)}\n")
        return 1
    return 0
