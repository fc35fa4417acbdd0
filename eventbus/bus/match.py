"""Tag matching: Salt's five match types, compiled once per (pattern, type).

A matcher is a function ``tag -> bool``. Matchers are cached so the per-event
path costs one call, never a recompile.
"""
from __future__ import annotations

import fnmatch
import functools
import operator
import re
from typing import Callable

from eventbus.errors import InvalidMatchError

Matcher = Callable[[str], bool]

MATCH_TYPES = ("startswith", "endswith", "find", "regex", "fnmatch")


def _match_all(_tag: str) -> bool:
    return True


@functools.lru_cache(maxsize=1024)
def matcher(pattern: str, match_type: str = "startswith") -> Matcher:
    """The matcher of ``pattern`` under ``match_type``; ``regex`` is anchored at the start."""
    if match_type == "startswith":
        if not pattern:
            return _match_all
        return operator.methodcaller("startswith", pattern)  # in C: no Python frame per event
    if match_type == "endswith":
        return operator.methodcaller("endswith", pattern)
    if match_type == "find":
        return lambda tag: pattern in tag
    if match_type == "regex":
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise InvalidMatchError(f"tag {pattern!r} is not a valid regular expression: {exc}",
                                    pattern=pattern, match_type=match_type) from None
        return lambda tag: compiled.match(tag) is not None
    if match_type == "fnmatch":
        glob = re.compile(fnmatch.translate(pattern))
        return lambda tag: glob.match(tag) is not None
    raise InvalidMatchError(f"unknown match_type {match_type!r}; expected one of {', '.join(MATCH_TYPES)}",
                            pattern=pattern, match_type=match_type, argument="match_type")


@functools.lru_cache(maxsize=256)
def expression(pattern: str) -> Matcher:
    """Salt's ``expr_match``: a glob, or else a regular expression matched in full.

    This is how ``eventbus watch TAGMATCH`` reads its argument, like Salt's
    ``state.event``: ``salt/job/*/ret/*`` works as a glob and
    ``salt/job/\\d+/new`` as a regular expression.
    """
    glob = re.compile(fnmatch.translate(pattern))
    try:
        regex: re.Pattern[str] | None = re.compile(pattern)
    except re.error:
        regex = None
    if regex is None:
        return lambda tag: glob.match(tag) is not None
    return lambda tag: glob.match(tag) is not None or regex.fullmatch(tag) is not None
