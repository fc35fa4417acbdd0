"""The reactor's four actions, each a blocking call returning the fields of its result event.

Each function takes the rendered fields of one action and returns a dict
with ``ok`` and, as the Actions table of docs/reactor.md says,
``rc``/``stdout`` for ``run``, ``error`` when not ok; ``target`` adds
``acks`` (minion id -> acknowledged) and ``post`` adds ``status``. None of them raises for a failure of the action
itself. ``run`` never uses a shell: argv goes to ``execve`` as it is.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from typing import Any, Callable

from eventbus import httppost
from eventbus.bus.admin import Admin
from eventbus.errors import EventBusError

Publish = Callable[[str, dict], bool]


def fire(fields: dict, publish: Publish) -> dict:
    """Fire the rendered tag and data on the master bus."""
    try:
        handed = publish(fields["tag"], fields["data"])
    except (EventBusError, ValueError) as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True} if handed else {"ok": False, "error": "the master bus did not take the event"}


def target(fields: dict, admin: Admin) -> dict:
    """Fire on the connected minions matching ``glob``; ok when every one acknowledged in time."""
    acks: dict[str, bool] = {}
    try:
        for minion_id, acked in admin.fire_and_wait(fields.get("data") or {}, fields["tag"], fields["glob"],
                                                    fields["timeout"]):
            acks[minion_id] = acked
    except EventBusError as exc:
        return {"ok": False, "acks": acks, "error": str(exc)}
    silent = sorted(minion for minion, acked in acks.items() if not acked)
    if silent:
        return {"ok": False, "acks": acks, "error": f"no acknowledgement from {', '.join(silent)}"}
    return {"ok": True, "acks": acks}


def post(fields: dict) -> dict:
    """POST the rendered body as JSON to the rendered URL; ok for a 2xx answer within its timeout."""
    headers = {"Content-Type": "application/json", **(fields.get("headers") or {})}
    try:
        answer = httppost.post(fields["url"], json.dumps(fields.get("body"), default=str).encode(), headers,
                               fields["timeout"])
    except EventBusError as exc:
        return {"ok": False, "status": None, "error": str(exc)}
    return {"ok": answer.ok, "status": answer.status, **({} if answer.ok else {"error": answer.problem})}


class Processes:
    """The ``run`` children alive now, so a shutdown can end them."""

    def __init__(self) -> None:
        self.alive: set[subprocess.Popen] = set()

    def kill_all(self) -> None:
        for proc in list(self.alive):
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run(fields: dict, processes: Processes | None = None) -> dict:
    """Run argv (no shell) with only the configured environment; keep at most ``max_output`` bytes of stdout.

    The child gets its own session, so a timeout kills it and everything it started.
    """
    argv, timeout, limit = fields["argv"], fields["timeout"], fields["max_output"]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=dict(fields["env"]), start_new_session=True, close_fds=True)
    except (OSError, ValueError) as exc:
        return {"ok": False, "rc": None, "stdout": "", "error": f"cannot run {argv[0]!r}: {exc}"}
    if processes is not None:
        processes.alive.add(proc)
    try:
        stdout, stderr, timed_out = _collect(proc, timeout, limit)
    finally:
        if processes is not None:
            processes.alive.discard(proc)
    text = stdout.decode("utf-8", "replace")
    if timed_out:
        return {"ok": False, "rc": proc.returncode, "stdout": text,
                "error": f"{argv[0]} timed out after {timeout:g} s and was killed"}
    result: dict[str, Any] = {"ok": proc.returncode == 0, "rc": proc.returncode, "stdout": text}
    if proc.returncode != 0:
        tail = stderr.decode("utf-8", "replace").strip()[-limit:] if limit else ""
        result["error"] = f"{argv[0]} exited with {proc.returncode}" + (f": {tail}" if tail else "")
    return result


def _collect(proc: subprocess.Popen, timeout: float, limit: int) -> tuple[bytes, bytes, bool]:
    """Read both pipes to their end (keeping ``limit`` bytes of each) until exit or ``timeout``."""
    kept = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    deadline = time.monotonic() + timeout
    timed_out = False
    with selectors.DefaultSelector() as selector:
        for pipe in kept:
            selector.register(pipe, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                _kill_group(proc)
                break
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer = kept[key.fileobj]
                if len(buffer) < limit:
                    buffer += chunk[:limit - len(buffer)]
    for pipe in kept:
        pipe.close()
    try:
        proc.wait(max(deadline - time.monotonic(), 0) if not timed_out else 5)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        proc.wait()
    return bytes(kept[proc.stdout]), bytes(kept[proc.stderr]), timed_out
