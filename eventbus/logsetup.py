"""Logging set-up from the ``log_level`` and ``log_file`` config keys."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

# Salt's extra level names, mapped onto the standard ones.
_LEVELS = {"all": logging.DEBUG, "garbage": logging.DEBUG, "trace": logging.DEBUG,
           "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL, "quiet": logging.CRITICAL + 10}

FORMAT = "%(asctime)s [%(name)s][%(levelname)s] %(message)s"


def setup(level: str = "warning", log_file: Path | None = None, *, name: str = "") -> None:
    """Send log records at ``level`` and above to ``log_file`` (stderr when ``None``)."""
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    fmt = FORMAT.replace("%(name)s", f"{name}:%(name)s") if name else FORMAT
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
