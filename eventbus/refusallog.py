"""Rate-limited logging of refused input, so garbage cannot flood the log."""
from __future__ import annotations

import logging
import time


class Complaints:
    """Log each kind of refusal at most once per ``interval`` s; count the rest and say how many."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self.count = 0
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def refuse(self, kind: str, message: str) -> None:
        """Note one refused input of ``kind``; ``message`` says what was wrong with it."""
        self.count += 1
        now = time.monotonic()
        if now - self._last.get(kind, -self.interval) < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        more = self._suppressed.pop(kind, 0)
        suffix = f" ({more} more like it since the last report)" if more else ""
        self.logger.error("%s%s", message, suffix)
