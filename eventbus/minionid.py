"""What a minion id may be: the one rule the config, the link and the key store share.

An id names a minion on the master bus (``salt/minion/<id>/...``), is matched
by ``--target`` globs and is the name of the minion's key file in the
master's ``pki_dir``. So it must be a single file name that is not a glob.
"""
from __future__ import annotations

from typing import Any

from eventbus.errors import InvalidMinionIdError

# The key store writes ``.<id>.tmp`` beside ``<id>``: both must fit a file name (255 bytes).
MAX_BYTES = 250
# Path separators and glob characters; control characters are refused separately.
FORBIDDEN = frozenset("/\\ *?[")
RULE = f"1 to {MAX_BYTES} bytes of UTF-8, not '.' or '..', without spaces, slashes, glob or control characters"


def problem(minion_id: Any) -> str | None:
    """Why ``minion_id`` cannot name a minion, or ``None`` when it can."""
    if not isinstance(minion_id, str):
        return f"it is a {type(minion_id).__name__}, not a string"
    if not minion_id:
        return "it is empty"
    if minion_id in (".", ".."):
        return "'.' and '..' are not file names"
    try:
        size = len(minion_id.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    if size > MAX_BYTES:
        return f"it is {size} bytes, over the limit of {MAX_BYTES}"
    for char in minion_id:
        if char in FORBIDDEN:
            return f"it holds {char!r}"
        if char < " " or char == "\x7f":
            return f"it holds the control character {char!r}"
    return None


def valid(minion_id: Any) -> bool:
    """Whether ``minion_id`` can name a minion."""
    return problem(minion_id) is None


def check(minion_id: Any) -> str:
    """``minion_id`` itself when it can name a minion, else ``InvalidMinionIdError`` saying why."""
    reason = problem(minion_id)
    if reason is not None:
        raise InvalidMinionIdError(minion_id, reason)
    return minion_id
