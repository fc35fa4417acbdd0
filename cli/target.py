"""``eventbus fire DATA TAG --target GLOB``: fire onto the buses of matching minions, through the master."""
from __future__ import annotations

import sys
import time

from cli import options


def fire_targets(config_dir: str | None, data: dict, tag: str, target: str, timeout: float) -> int:
    """Ask the master to fire on every connected minion matching ``target``; print ``ID: True`` per ack."""
    from eventbus import control
    from eventbus.errors import EventBusError

    settings = options.bus_settings(config_dir, "master")
    job = control.request(settings.sock_dir, b"fire_minions", {"tag": tag, "data": data, "target": target})
    targets = job["targets"]
    if not targets:
        raise EventBusError(f"no connected minion matches {target!r}")
    reported: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        status = control.request(settings.sock_dir, b"fire_status", {"job": job["job"]})
        for minion_id in status["acked"]:
            if minion_id not in reported:
                reported.add(minion_id)
                print(f"{minion_id}: True", flush=True)
        if len(reported) == len(targets) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    silent = [m for m in targets if m not in reported]
    for minion_id in silent:
        print(f"{minion_id}: False", flush=True)
    if silent:
        sys.stderr.write(f"error: no acknowledgement within {timeout:g} s from: {', '.join(silent)}\n")
        return 1
    return 0
