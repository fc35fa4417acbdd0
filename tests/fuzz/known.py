"""Findings reported but not fixed yet (their fix is in a file another change holds), so a campaign goes on.

Each entry names its target, a piece of the text its finding carries, and
the finding's name in ``docs/fuzz.md``. A campaign counts such an input
instead of stopping; every entry is an open finding, and its regression test
(``xfail(strict=True)``) fails the suite once the fix lands. Remove the entry
with the fix.
"""
from __future__ import annotations

import os
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONFIG_TARGETS = ("config_master", "config_minion", "config_api", "config_forward")

# (target, a piece of the finding's "<type>: <message>" text) -> the finding's name in docs/fuzz.md
KNOWN: dict[tuple[str, str], str] = {}


def describe(exc: BaseException) -> str:
    """``exc`` as the text entries are matched against: its type and message, its cause's, and the
    functions its cause's traceback went through (``at path.py:function``)."""
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__ or exc
    if cause is not exc:
        text += f" <- {type(cause).__name__}: {cause}"
    for frame in traceback.extract_tb(cause.__traceback__):
        text += f" at {os.path.relpath(frame.filename, ROOT)}:{frame.name}"
    return text


def match(target: str, exc: BaseException) -> str | None:
    """The known finding ``exc`` is, for ``target``, or ``None``."""
    text = describe(exc)
    for (name, piece), entry in KNOWN.items():
        if name == target and piece in text:
            return entry
    return None
