"""Where each master bus event of a clustered master came from, beside the journal: relayed or imported.

The journal keeps bus frames only. The fleet identity of a relayed event needs the minion's relay seq, and
the exporter must know an imported event to never write it back; the master writes both here, in the same
turn and before the journal write, so an event the exporter reads from the journal has its line here.

Parts ``<first seq:020d>.ids`` under ``cachedir/cluster/origins``, each a run of records ``u64 seq, u64
number, u8 kind, u8 length, who`` (kind ``RELAY``: who = minion id, number = relay seq; ``IMPORT``: who = the
master it came from, number = stream seq). Events without a record are the master's own. The writer starts
a part past ``PART_BYTES``; the exporter deletes the parts it has passed (``OriginReader.forget_before``).
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterable

RELAY = 1
IMPORT = 2
RECORD = struct.Struct(">QQBB")
PART_BYTES = 8 << 20
SUFFIX = ".ids"


def _part_name(first: int) -> str:
    return f"{first:020d}{SUFFIX}"


def _parts(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for entry in os.scandir(directory):
        stem = entry.name[:-len(SUFFIX)]
        if entry.name.endswith(SUFFIX) and len(stem) == 20 and stem.isdigit():
            found.append((int(stem), Path(entry.path)))
    return sorted(found)


class OriginWriter:
    """The master's side: one append per bus batch that holds relayed or imported events."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.fd = -1
        self.size = 0

    def note(self, entries: list[tuple[int, int, int, str]]) -> None:
        """Record ``(seq, kind, number, who)`` entries (seqs increasing) before those seqs are published."""
        if not entries:
            return
        chunk = b"".join(RECORD.pack(seq, number, kind, len(raw)) + raw
                         for seq, kind, number, raw in ((s, k, n, w.encode()[:255]) for s, k, n, w in entries))
        if self.fd < 0 or self.size > PART_BYTES:
            self._start(entries[0][0])
        os.write(self.fd, chunk)
        self.size += len(chunk)

    def _start(self, first: int) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        path = self.directory / _part_name(first)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.size = os.fstat(self.fd).st_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class OriginReader:
    """The exporter's side: the records of seqs after a position, read forward as the parts grow."""

    def __init__(self, directory: Path, after: int) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.after = after
        self.path: Path | None = None
        self.offset = 0
        self.pending: dict[int, tuple[int, int, str]] = {}

    def _later(self) -> Path | None:
        """The part after the one being read (it exists once the writer has finished this one)."""
        parts = _parts(self.directory)
        if self.path is None:
            candidates = [path for first, path in parts if first <= self.after + 1] or [p for _, p in parts[:1]]
            return candidates[-1] if candidates else None
        later = [path for _, path in parts if path.name > self.path.name]
        return later[0] if later else None

    def _read(self) -> None:
        """Read every whole record written since the last call into ``pending``."""
        if self.path is None:
            self.path = self._later()
            if self.path is None:
                return
        while True:
            # Looked for first: when a later part exists, this one was finished before it is read.
            later = self._later()
            self._read_part()
            if later is None:
                return
            self.path, self.offset = later, 0

    def _read_part(self) -> None:
        assert self.path is not None
        try:
            with open(self.path, "rb") as part:
                part.seek(self.offset)
                raw = part.read()
        except FileNotFoundError:
            return
        at = 0
        while at + RECORD.size <= len(raw):
            seq, number, kind, length = RECORD.unpack_from(raw, at)
            end = at + RECORD.size + length
            if end > len(raw):
                break  # the writer is in the middle of it
            if seq > self.after and kind in (RELAY, IMPORT):
                self.pending[seq] = (kind, number, raw[at + RECORD.size:end].decode(errors="replace"))
            at = end
        self.offset += at

    def lookup(self, seqs_through: int) -> dict[int, tuple[int, int, str]]:
        """The records of seqs up to ``seqs_through`` not handed out before: ``seq -> (kind, number, who)``."""
        if not self.pending or max(self.pending) < seqs_through:
            self._read()
        found = {seq: entry for seq, entry in self.pending.items() if seq <= seqs_through}
        for seq in found:
            del self.pending[seq]
        return found

    def forget_before(self, exported: int) -> None:
        """Delete the parts whose every record is at or below ``exported`` (the next part starts after it)."""
        self.after = max(self.after, exported)
        parts = _parts(self.directory)
        for (_, path), (next_first, _) in zip(parts, parts[1:]):
            if next_first > exported + 1 or path == self.path:
                break
            try:
                path.unlink()
            except FileNotFoundError:
                pass
