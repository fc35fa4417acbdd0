"""eventbus: a Salt-like publish/subscribe event bus (library side)."""
from __future__ import annotations

__version__ = "0.1.0"
