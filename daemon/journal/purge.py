"""Purging a segment: its runs noted in ``purged`` before its files go, so that a reader's ``lost`` stays exact.

Which segments go is the writer's retention (``Journal._retain``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from eventbus.journal.format import INDEX_SUFFIX, PURGED_MAX, SEGMENT_SUFFIX, Segment
from eventbus.journal.reader import JournalReader
from eventbus.daemon.journal.sidefiles import write_purged

log = logging.getLogger(__name__)


def purge(directory: Path, reader: JournalReader, segment: Segment) -> None:
    """Delete ``segment``'s files, first noting its runs in ``purged`` (the oldest merged past ``PURGED_MAX``)."""
    runs = reader.purged + [(start + 1, last, last - start) for start, last in segment.runs]
    while len(runs) > PURGED_MAX:
        (first, _, count), (_, last, more) = runs[0], runs[1]
        runs[0:2] = [(first, last, count + more)]
    reader.purged = runs
    write_purged(directory, runs)
    for path in (segment.path, segment.path[:-len(SEGMENT_SUFFIX)] + INDEX_SUFFIX):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot delete journal file %s: %s", path, exc)
