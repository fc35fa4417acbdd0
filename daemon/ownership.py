"""One live daemon per sock_dir: a locked pid file, stale sockets replaced, 0700 directory."""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from pathlib import Path

from eventbus.bus import wire
from eventbus.errors import DaemonAlreadyRunningError, EventBusError

log = logging.getLogger(__name__)


def private_dir(path: Path) -> None:
    """Make ``path`` (and parents) exist, owned by us and reachable only by us (0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.stat()
    if info.st_uid != os.geteuid():
        raise EventBusError(f"{path} belongs to uid {info.st_uid}, not to this user ({os.geteuid()})")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


class SockDirLock:
    """Hold ``sock_dir`` for one daemon; a crashed holder's lock and sockets are taken over."""

    def __init__(self, endpoints: wire.Endpoints, node: str) -> None:
        self.endpoints = endpoints
        self.node = node
        self._fd: int | None = None

    def acquire(self) -> None:
        private_dir(self.endpoints.sock_dir)
        fd = os.open(self.endpoints.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            pid = int(owner) if owner.isdigit() else None
            raise DaemonAlreadyRunningError(
                f"another {self.node} daemon (pid {owner or 'unknown'}) is running on "
                f"sock_dir {self.endpoints.sock_dir}", pid=pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        for stale in self.endpoints.files:
            if stale.exists() or stale.is_symlink():
                log.info("replacing stale socket %s left by a daemon that did not stop cleanly", stale)
                stale.unlink()

    def release(self) -> None:
        """Remove our sockets and the lock file."""
        if self._fd is None:
            return
        for path in (*self.endpoints.files, self.endpoints.lock):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "SockDirLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
