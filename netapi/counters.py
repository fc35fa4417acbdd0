"""The API process's own counters of CloudEvents ingest, read by ``/metrics`` (``eventbus_cloudevents_*``).

The ``/cloudevents/<channel>`` handler calls ``accepted(type)`` per accepted
event and ``refused(code)`` per refused request; a dict increment under a
lock, nothing else on the request path.
"""
from __future__ import annotations

import threading


class IngestCounters:
    """Accepted CloudEvents by type, refusals by code (``InvalidParameter``, ``SchemaViolation``, ... or the HTTP status)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accepted: dict[str, int] = {}
        self._refused: dict[str, int] = {}

    def accepted(self, event_type: str, count: int = 1) -> None:
        with self._lock:
            self._accepted[event_type] = self._accepted.get(event_type, 0) + count

    def refused(self, code: str, count: int = 1) -> None:
        with self._lock:
            self._refused[code] = self._refused.get(code, 0) + count

    def counts(self) -> dict[str, dict[str, int]]:
        """``{"accepted": {type: n}, "refused": {code: n}}`` (copies): what ``netapi.metrics`` reads."""
        with self._lock:
            return {"accepted": dict(self._accepted), "refused": dict(self._refused)}
