"""SIGHUP: a daemon re-reads its config file and says in one log line what it reloaded and what needs a restart.

A daemon names the keys it can take while running with a function that applies them; any other changed
key is named as needing a restart and keeps its old value, and a file that no longer reads or checks is
one error line (docs/reactor.md, Reload and status). Nothing here handles a signal: ``ask`` only sets a
flag (safe inside a handler), and the daemon calls ``reload`` (or ``reload_if_asked``) from its own loop.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Generic, Sequence, TypeVar

from eventbus import config
from eventbus.config import CommonConfig
from eventbus.errors import EventBusError

log = logging.getLogger(__name__)

C = TypeVar("C", bound=CommonConfig)
# Applies a fresh config's keys to a running part; returns what it did, for the log line.
Taker = Callable[[Any], "str | None"]


def changed_keys(running: CommonConfig, fresh: CommonConfig) -> list[str]:
    """The keys whose values differ between two configs of one file, in declaration order."""
    # Compared as the opts dicts: reactor rules by their raw YAML (compiled templates never compare equal).
    old, new = config.to_dict(running), config.to_dict(fresh)
    return [key for key in old if key != "conf_file" and old[key] != new.get(key)]


def summary(reloaded: Sequence[str], restart: Sequence[str]) -> str:
    """The SIGHUP line: what was reloaded (or nothing), then the changed keys that need a restart."""
    parts = list(reloaded) or ["nothing to reload"]
    parts.append("changed keys that need a restart: " + ", ".join(restart) if restart
                 else "no changed key needs a restart")
    return "SIGHUP: " + "; ".join(parts)


class Reloader(Generic[C]):
    """A daemon's running config, how to read its file again, and the parts that take keys on SIGHUP."""

    def __init__(self, running: C, load: Callable[[Path], C]) -> None:
        self.running = running
        self.load = load
        self.takers: dict[str, Taker] = {}
        self.asked = False

    def take(self, key: str, taker: Taker) -> None:
        """On SIGHUP, hand a config whose ``key`` changed to ``taker`` instead of asking for a restart."""
        self.takers[key] = taker

    def ask(self, *_signal: Any) -> None:
        """Note a SIGHUP (a signal handler, or CherryPy's listener); ``reload_if_asked`` acts on it."""
        self.asked = True

    def reload_if_asked(self) -> None:
        if self.asked:
            self.asked = False
            self.reload()

    def reload(self) -> None:
        """Re-read the file, hand changed keys to their takers, log the one line."""
        source = self.running.source
        if source is None:
            log.warning("SIGHUP: nothing to reload: the %s was started without a config file", self.running.node)
            return
        try:
            fresh = self.load(source)
        except EventBusError as exc:
            log.error("SIGHUP: nothing reloaded, keeping the running config: %s", exc)
            return
        changed = changed_keys(self.running, fresh)
        taken = [key for key in changed if key in self.takers]
        done = []
        for taker in dict.fromkeys(self.takers[key] for key in taken):  # each taker once
            phrase = taker(fresh)
            if phrase:
                done.append(phrase)
        if taken:
            self.running = dataclasses.replace(self.running, **{key: getattr(fresh, key) for key in taken})
        log.warning("%s", summary(done, [key for key in changed if key not in self.takers]))
