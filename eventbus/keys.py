"""CURVE keys on disk: a daemon's own key pair, the minion keys a master knows, a minion's pinned master key.

The key-file operations (accept, reject, delete) live here once: the master daemon runs them for
``eventbus key`` when it is up, ``eventbus.bus.admin`` on the directories when no master runs. A master's
``pki_dir`` holds Salt's layout (``minions/``, ``minions_pre/``, ``minions_rejected/``, ``minions_denied/``,
one file per minion id holding its Z85 public key): docs/link.md, Files.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import zmq
import zmq.auth
import zmq.utils.z85

from eventbus import minionid
from eventbus.errors import EventBusError, UnknownKeyError

log = logging.getLogger(__name__)

ACCEPTED = "minions"
PENDING = "minions_pre"
REJECTED = "minions_rejected"
DENIED = "minions_denied"
STATES = (ACCEPTED, PENDING, REJECTED)

# The key operations of ``eventbus key`` and the master's ``key`` control verb.
OP_LIST = "list"
CHANGE_OPS = ("accept", "accept_all", "reject", "delete")
OPS = (OP_LIST, *CHANGE_OPS)


def valid_id(minion_id: Any) -> bool:
    """Whether ``minion_id`` can name a minion (and a key file): the one rule of ``eventbus.minionid``."""
    return minionid.valid(minion_id)


def key_pair(pki_dir: Path, name: str) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys of ``name`` in ``pki_dir``, made on first use (secret file 0600)."""
    pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret_file = pki_dir / f"{name}.key_secret"
    if not secret_file.exists():
        old_umask = os.umask(0o077)
        try:
            zmq.auth.create_certificates(pki_dir, name)
        finally:
            os.umask(old_umask)
        os.chmod(secret_file, 0o600)
        log.info("generated the %s key pair in %s", name, pki_dir)
    try:
        public, secret = zmq.auth.load_certificate(secret_file)
    except (OSError, ValueError) as exc:
        raise EventBusError(f"cannot read the key pair {secret_file}: {exc}") from None
    if secret is None:
        raise EventBusError(f"{secret_file} holds no secret key")
    return public, secret


def valid_key(text: str | bytes) -> bool:
    """Whether ``text`` is a Z85 CURVE public key (40 characters of 32 bytes)."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) != 40:
        return False
    try:
        zmq.utils.z85.decode(raw)
    except (ValueError, KeyError, IndexError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class KeyChange:
    """One key moved by an operator: which minion, what was done (``salt/key``'s act), and its key."""

    minion_id: str
    act: str
    key: str


@dataclass(frozen=True)
class Decision:
    """What a hello from (id, key) gets: the ``salt/auth`` act and whether the minion may relay."""

    act: str
    accepted: bool


class KeyStore:
    """Minion keys by state in a master's ``pki_dir``; files are the truth, read on each question.

    File operations go straight to ``os`` with string paths: a hello and an
    accept each cost a few system calls and no path objects, which is what
    lets a master take a fleet's reconnect storm and ``key --accept-all`` of
    10,000 keys in about a second.
    """

    def __init__(self, pki_dir: Path) -> None:
        self.pki_dir = pki_dir
        self._dirs: dict[str, str] = {}
        for state in (*STATES, DENIED):
            (pki_dir / state).mkdir(parents=True, exist_ok=True, mode=0o700)
            self._dirs[state] = os.path.join(pki_dir, state, "")

    def _path(self, state: str, minion_id: str) -> str:
        if not valid_id(minion_id):
            raise UnknownKeyError(f"{minion_id!r} is not a valid minion id")
        return self._dirs[state] + minion_id

    def lookup(self, minion_id: str) -> tuple[str, str] | None:
        """(state, key) of ``minion_id``, or ``None`` when no key is stored for it."""
        self._path(ACCEPTED, minion_id)  # the id's check, once
        dirs = self._dirs
        for state in STATES:
            key = _read(dirs[state] + minion_id)
            if key is not None:
                return state, key
        return None

    def listing(self) -> dict[str, list[str]]:
        """Ids by state, sorted."""
        return {state: self._ids(state) for state in (ACCEPTED, DENIED, PENDING, REJECTED)}

    def _ids(self, state: str) -> list[str]:
        return sorted(name for name in os.listdir(self._dirs[state]) if valid_id(name))

    def decide(self, minion_id: str, key: str, auto_accept: bool) -> Decision:
        """Judge a hello: the id is bound to the first key stored for it; another key is denied."""
        known = self.lookup(minion_id)
        if known is None:
            if auto_accept:
                self._write(ACCEPTED, minion_id, key)
                return Decision("accept", True)
            self._write(PENDING, minion_id, key)
            return Decision("pend", False)
        state, stored = known
        if stored != key:
            self._write(DENIED, minion_id, key)
            return Decision("denied", False)
        if state == ACCEPTED:
            return Decision("accept", True)
        if state == REJECTED:
            return Decision("reject", False)
        return Decision("pend", False)

    def _write(self, state: str, minion_id: str, key: str) -> None:
        path = self._path(state, minion_id)
        tmp = f"{self._dirs[state]}.{minion_id}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, (key + "\n").encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def _move(self, minion_id: str, to_state: str, from_states: tuple[str, ...]) -> str:
        known = self.lookup(minion_id)
        if known is None or known[0] not in from_states:
            where = " or ".join(s for s in from_states)
            raise UnknownKeyError(f"no key for minion {minion_id!r} in {where}")
        state, key = known
        # One rename: the file holds the same key in its new state, and no reader finds it in neither.
        os.replace(self._dirs[state] + minion_id, self._dirs[to_state] + minion_id)
        return key

    def accept(self, minion_id: str) -> str:
        """Move a pending (or rejected) key to accepted; return the key."""
        return self._move(minion_id, ACCEPTED, (PENDING, REJECTED))

    def reject(self, minion_id: str) -> str:
        """Move a pending (or accepted) key to rejected; return the key."""
        return self._move(minion_id, REJECTED, (PENDING, ACCEPTED))

    def change(self, op: str, minion_id: str | None = None) -> Iterator[KeyChange]:
        """Do key operation ``op`` (accept, accept_all, reject, delete), yielding each change as it is made.

        ``accept_all`` accepts every pending key; ``UnknownKeyError`` when the
        id holds no key in a state ``op`` can move it from.
        """
        if op not in CHANGE_OPS:
            raise UnknownKeyError(f"unknown key operation {op!r}; expected one of {', '.join(CHANGE_OPS)}")
        if op == "accept_all":
            yield from self._accept_all()
            return
        yield KeyChange(minion_id, op, getattr(self, op)(minion_id))  # type: ignore[arg-type]

    def _accept_all(self) -> Iterator[KeyChange]:
        """Every pending key accepted: the pending directory listed once, then a read and a rename each."""
        pending, accepted = self._dirs[PENDING], self._dirs[ACCEPTED]
        for one in self._ids(PENDING):
            key = _read(pending + one)
            if key is None:
                continue  # deleted since the listing
            os.replace(pending + one, accepted + one)
            yield KeyChange(one, "accept", key)

    def delete(self, minion_id: str) -> str:
        """Forget ``minion_id``'s key whatever its state; return the key."""
        known = self.lookup(minion_id)
        denied = self._path(DENIED, minion_id)
        if known is None and not os.path.exists(denied):
            raise UnknownKeyError(f"no key for minion {minion_id!r}")
        try:
            os.unlink(denied)
        except FileNotFoundError:
            pass
        if known is None:
            return ""
        os.unlink(self._path(known[0], minion_id))
        return known[1]


def _read(path: str) -> str | None:
    """The key in file ``path`` (stripped), or ``None`` when there is no such file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return os.read(fd, 4096).decode().strip()
    finally:
        os.close(fd)
