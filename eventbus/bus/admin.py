"""The master's admin operations for scripts and the CLI: minion keys, targeted fires, the link's status.

One client over the control protocol (``eventbus.bus.control``), speaking the
verbs of ``eventbus.bus.wire``, so nothing else builds verb bytes or reads a
daemon's error text: a refusal is a ``DaemonRefusedError`` with the
daemon's ``reason``. Key operations go through the running master, which
acts on them at once and fires ``salt/key``; with no master running (none
has its pid in the sock_dir's lock file) they are done on the key directories themselves,
by the same code the master runs (``eventbus.keys.KeyStore``); a master
that runs but does not answer in time is an error, never worked around::

    admin = Admin.for_master(config.load(config.MasterConfig, "conf/master"))
    admin.accept("web1")                       # ["web1"]
    for minion_id, acked in admin.fire_and_wait({"x": 1}, "myco/cmd", "web*", timeout=5):
        ...
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from eventbus.bus import control, wire
from eventbus import keys
from eventbus.config import MasterConfig
from eventbus.errors import BusUnavailableError, EventBusError

POLL_INTERVAL = 0.02


@dataclass(frozen=True)
class FireJob:
    """A fire the master sent to some minions: its id and the minions it went to."""

    job: int
    targets: list[str]


def _held(sock_dir: str | os.PathLike) -> bool:
    """Whether the daemon that last held ``sock_dir`` is still alive (its pid, from the lock file, runs).

    Read, never locked: a lock taken here, however briefly, could make a daemon starting at that moment
    believe another one runs.
    """
    try:
        owner = wire.endpoints(sock_dir).lock.read_text().strip()
    except OSError:
        return False
    if not owner.isdigit():
        return False
    try:
        os.kill(int(owner), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


class Admin:
    """Admin operations on the master whose bus is on ``sock_dir`` (and whose keys are in ``pki_dir``)."""

    def __init__(self, sock_dir: str | os.PathLike, pki_dir: str | os.PathLike | None = None,
                 *, timeout: float = 5.0) -> None:
        self.sock_dir = sock_dir
        self.pki_dir = Path(pki_dir) if pki_dir is not None else None
        self.timeout = timeout

    @classmethod
    def for_master(cls, settings: MasterConfig, *, timeout: float = 5.0) -> "Admin":
        """The admin of the master of typed config ``settings``."""
        return cls(settings.sock_dir, settings.pki_dir, timeout=timeout)

    def _request(self, verb: bytes, args: Any = None) -> Any:
        return control.request(self.sock_dir, verb, args, timeout=self.timeout)

    # -- keys -----------------------------------------------------------------------

    def list_keys(self) -> dict[str, list[str]]:
        """Minion ids by key state: ``{"minions", "minions_denied", "minions_pre", "minions_rejected"}``."""
        return self._keys(keys.OP_LIST)

    def accept(self, minion_id: str) -> list[str]:
        """Accept ``minion_id``'s pending (or rejected) key; the ids changed."""
        return self._keys("accept", minion_id)

    def accept_all(self) -> list[str]:
        """Accept every pending key; the ids changed (none: an empty list)."""
        return self._keys("accept_all")

    def reject(self, minion_id: str) -> list[str]:
        """Reject ``minion_id``'s pending (or accepted) key; the ids changed."""
        return self._keys("reject", minion_id)

    def delete(self, minion_id: str) -> list[str]:
        """Forget ``minion_id``'s key, whatever its state; the ids changed."""
        return self._keys("delete", minion_id)

    def _keys(self, op: str, minion_id: str | None = None) -> Any:
        request: dict[str, Any] = {"op": op}
        if minion_id is not None:
            request["id"] = minion_id
        try:
            return self._request(wire.VERB_KEY, request)
        except BusUnavailableError:
            if self.pki_dir is None or _held(self.sock_dir):
                # A master that runs but has not answered yet must not find its key files changed under it.
                raise
        # No master is running to do it: change the key directories directly.
        store = keys.KeyStore(self.pki_dir)
        if op == keys.OP_LIST:
            return store.listing()
        return [change.minion_id for change in store.change(op, minion_id)]

    # -- fires on minions -----------------------------------------------------------

    def fire(self, data: dict, tag: str, target: str) -> FireJob:
        """Fire ``tag``/``data`` on the bus of every present, accepted minion whose id matches glob ``target``."""
        job = self._request(wire.VERB_FIRE_MINIONS, {"tag": tag, "data": data, "target": target})
        return FireJob(job["job"], list(job["targets"]))

    def fire_acks(self, job: int) -> list[str]:
        """The targets of fire ``job`` that said the event is on their bus."""
        return list(self._request(wire.VERB_FIRE_STATUS, {"job": job})["acked"])

    def fire_and_wait(self, data: dict, tag: str, target: str, timeout: float) -> Iterator[tuple[str, bool]]:
        """Fire on matching minions; yield ``(id, True)`` as each acknowledges, then ``(id, False)`` for the silent.

        ``EventBusError`` (before anything is yielded) when no connected minion matches.
        """
        job = self.fire(data, tag, target)
        if not job.targets:
            raise EventBusError(f"no connected minion matches {target!r}")
        reported: set[str] = set()
        deadline = time.monotonic() + timeout
        while True:
            for minion_id in self.fire_acks(job.job):
                if minion_id not in reported:
                    reported.add(minion_id)
                    yield minion_id, True
            if len(reported) == len(job.targets) or time.monotonic() > deadline:
                break
            time.sleep(POLL_INTERVAL)
        for minion_id in job.targets:
            if minion_id not in reported:
                yield minion_id, False

    # -- status ---------------------------------------------------------------------

    def link_status(self) -> dict:
        """The master's link: ``{"sessions", "accepted", "present", "refused"}``."""
        return self._request(wire.VERB_LINK)
