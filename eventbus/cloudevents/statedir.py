"""Where the CloudEvents type registry, channels and secrets live: ``ROOT/var/lib/eventbus/cloudevents``.

With ``root_dir: /`` that is ``/var/lib/eventbus/cloudevents``. Earlier versions kept it in
``ROOT/cloudevents``: the first reader or writer that finds only that one moves it over (one rename, logged).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["LEGACY", "PLACE", "directory"]

PLACE = Path("var/lib/eventbus/cloudevents")
LEGACY = Path("cloudevents")


def directory(root_dir: str | os.PathLike) -> Path:
    """The CloudEvents state directory under ``root_dir`` (not created here); moves a legacy one in first."""
    root = Path(root_dir)
    current = root / PLACE
    if current.exists():
        return current
    legacy = root / LEGACY
    if not legacy.is_dir():
        return current
    try:
        current.parent.mkdir(parents=True, exist_ok=True)
        os.rename(legacy, current)
    except OSError as exc:
        if current.exists():  # another process moved it first
            return current
        log.warning("the CloudEvents state stays in %s: it cannot be moved to %s: %s", legacy, current,
                    exc.strerror)
        return legacy
    log.warning("moved the CloudEvents state (event types, channels, secrets) from %s to %s", legacy, current)
    return current
