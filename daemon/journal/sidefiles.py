"""A sealed segment's ``.idx`` and the ``purged`` list, each replaced atomically; a failure to write one is
logged at debug and the journal goes on (both only spare work or keep ``lost`` exact).
"""
from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from eventbus.journal.format import INDEX_SUFFIX, PURGED_NAME, SEGMENT_SUFFIX, Segment, purged_bytes

log = logging.getLogger(__name__)


def write_index(segment: Segment, size: int) -> None:
    """Save the summary of a finished segment so that opening and reading need not scan it."""
    path = Path(segment.path[:-len(SEGMENT_SUFFIX)] + INDEX_SUFFIX)
    try:
        _write_file(path, segment.index_bytes(size))
    except OSError as exc:
        log.debug("cannot write journal index %s: %s", path, exc)


def write_purged(directory: Path, runs: list[tuple[int, int, int]]) -> None:
    """Save the runs retention deleted, so that readers count them as lost."""
    try:
        _write_file(directory / PURGED_NAME, purged_bytes(runs))
    except OSError as exc:
        log.debug("cannot write journal purged file: %s", exc)


def _write_file(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (a reader sees the old or the new file)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(errno.ENOSPC, f"short write of {tmp}")
    finally:
        os.close(fd)
    os.replace(tmp, path)
