"""``type: file``: one JSON record per line, fsync per batch, rotated by size.

On start the last record of the file is read back, so a batch delivered again
after a crash is not written twice. A ``source: fleet`` broker gets stream seqs
out of order (an event another master's forwarder held comes late), so there no
record is skipped for its seq.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from eventbus.daemon.forward.sinks import brokerkeys
from eventbus.forwarding.brokertypes import BUILTIN
from eventbus.errors import SinkError
from eventbus.sink import Outgoing, Sink


class FileSink(Sink):
    KEYS = BUILTIN["file"]

    def __init__(self, path: Path, max_bytes: int, backups: int, ordered: bool = True) -> None:
        self.path = path
        self.ordered = ordered  # seqs only grow (a master bus): a seq at or below the last one was written
        self.max_bytes = max_bytes
        self.backups = backups
        self._fd: int | None = None
        self._size = 0
        self._last_seq = 0

    @classmethod
    def from_endpoint_config(cls, cfg: dict) -> "FileSink":
        options = cls.options(cfg)
        path = Path(brokerkeys.path(options, "path", required=True) or "")
        for key in ("max_bytes", "backups"):
            if isinstance(options[key], bool) or not isinstance(options[key], int) or options[key] < 0:
                raise SinkError(f"key {key!r} has value {options[key]!r}; expected a whole number >= 0")
        return cls(path, options["max_bytes"], options["backups"], cfg.get("source", "bus") != "fleet")

    def _open(self) -> int:
        if self._fd is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            except OSError as exc:
                raise SinkError(f"cannot open {self.path}: {exc.strerror}") from None
            self._size = os.fstat(self._fd).st_size
            if self._size and not self._last_seq and self.ordered:
                self._last_seq = self._tail_seq()
        return self._fd

    def _tail_seq(self) -> int:
        """The seq of the file's last complete record (0 if none can be read)."""
        with open(self.path, "rb") as stream:
            stream.seek(max(0, self._size - 65536))
            lines = stream.read().splitlines()
        for line in reversed(lines):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            seq = record.get("seq") if "seq" in record else record.get("id")
            try:
                return int(seq)
            except (TypeError, ValueError):
                return 0
        return 0

    def _rotate(self) -> None:
        os.close(self._fd)  # type: ignore[arg-type]
        self._fd = None
        if self.backups:
            for index in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            os.truncate(self.path, 0)

    def publish(self, batch: list[Outgoing]) -> None:
        fd = self._open()
        fresh = [o.body for o in batch if o.seq > self._last_seq] if self.ordered else [o.body for o in batch]
        if not fresh:
            return
        if self.max_bytes and self._size >= self.max_bytes:
            # Rotate before writing, so the current file always ends with the newest records
            # (a restarted sink reads its last seq from there).
            self._rotate()
            fd = self._open()
        chunk = b"\n".join(fresh) + b"\n"
        try:
            os.write(fd, chunk)
            os.fsync(fd)
        except OSError as exc:
            # Cut a partly written batch off, so the retry does not glue a record onto a torn line.
            try:
                os.ftruncate(fd, self._size)
            except OSError:
                pass  # the disk refuses even that; the tail reader skips a torn last line
            raise SinkError(f"cannot write {self.path}: {exc.strerror}") from None
        self._last_seq = batch[-1].seq
        self._size += len(chunk)

    def is_ready(self) -> bool:
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
