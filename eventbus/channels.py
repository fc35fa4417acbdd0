"""CloudEvents channels: where outside applications post events and get ours back (SPEC 9).

``ROOT/cloudevents/channels.json`` (0600) holds ``{NAME: {"outbound_url",
"publish", "created"}}``; each channel's secret is in
``ROOT/cloudevents/secrets/NAME`` (0600, JSON ``{"secret", "previous",
"previous_until"}``). ``rotate`` makes a new secret and keeps the old one
valid for ``ROTATE_GRACE`` seconds (one hour), so senders can switch over.
A running API re-reads both when they change (checked every 0.25 s).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets as random_secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventbus.errors import ConfigError, InvalidArgumentError
from eventbus.jsonfile import read_object, write_atomic

log = logging.getLogger(__name__)

__all__ = ["Channel", "Channels", "ROTATE_GRACE", "add", "listing", "remove", "rotate", "signature"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
ROTATE_GRACE = 3600.0
RELOAD_EVERY = 0.25


def _dir(root_dir: Path) -> Path:
    return Path(root_dir) / "cloudevents"


def _registry_path(root_dir: Path) -> Path:
    return _dir(root_dir) / "channels.json"


def _secret_path(root_dir: Path, name: str) -> Path:
    return _dir(root_dir) / "secrets" / name


def _write_private(path: Path, value: Any) -> None:
    write_atomic(path, value, mode=0o600, dir_mode=0o700)


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of body>``: the ``X-Hub-Signature`` value."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _check_name(name: str) -> None:
    if not NAME_RE.match(name or ""):
        raise InvalidArgumentError(f"channel name {name!r} must match {NAME_RE.pattern}", argument="name")


def add(root_dir: Path, name: str, outbound_url: str | None = None, publish: tuple[str, ...] = ()) -> str:
    """Create channel ``name``; its new secret (shown once by the CLI)."""
    _check_name(name)
    if outbound_url is not None and not re.match(r"^https?://", outbound_url):
        raise InvalidArgumentError(f"outbound URL {outbound_url!r} must start with http:// or https://",
                                   argument="outbound-url")
    if publish and outbound_url is None:
        raise InvalidArgumentError("--publish needs --outbound-url (where to publish)", argument="publish")
    path = _registry_path(root_dir)
    registry = read_object(path)
    if name in registry:
        raise InvalidArgumentError(f"channel {name!r} exists; remove it first or rotate its secret",
                                   argument="name")
    secret = random_secrets.token_urlsafe(32)
    _write_private(_secret_path(root_dir, name), {"secret": secret, "previous": None, "previous_until": 0})
    # ``key`` tells this channel from an earlier one of the same name (its publishing outbox is another).
    registry[name] = {"outbound_url": outbound_url, "publish": list(publish), "created": time.time(),
                      "key": random_secrets.token_hex(4)}
    _write_private(path, registry)
    return secret


def remove(root_dir: Path, name: str) -> None:
    path = _registry_path(root_dir)
    registry = read_object(path)
    if name not in registry:
        raise InvalidArgumentError(f"no channel {name!r}", argument="name")
    del registry[name]
    _write_private(path, registry)
    try:
        _secret_path(root_dir, name).unlink()
    except FileNotFoundError:
        pass


def rotate(root_dir: Path, name: str) -> str:
    """A new secret for ``name``; the old one stays valid for ``ROTATE_GRACE`` seconds."""
    if name not in read_object(_registry_path(root_dir)):
        raise InvalidArgumentError(f"no channel {name!r}", argument="name")
    path = _secret_path(root_dir, name)
    old = read_object(path).get("secret")
    secret = random_secrets.token_urlsafe(32)
    _write_private(path, {"secret": secret, "previous": old, "previous_until": time.time() + ROTATE_GRACE})
    # Touch the registry so a running API's change check (one stat) sees the rotation too.
    _write_private(_registry_path(root_dir), read_object(_registry_path(root_dir)))
    return secret


@dataclass(frozen=True)
class Channel:
    name: str
    outbound_url: str | None
    publish: tuple[str, ...]
    secret: str
    previous: str | None = None
    previous_until: float = 0.0
    key: str = ""

    def verify(self, body: bytes, header: str | None) -> bool:
        """Whether ``header`` is ``sha256=<HMAC>`` of ``body`` with the secret (or the old one within grace)."""
        if not header:
            return False
        good = hmac.compare_digest(header.encode("latin-1", "replace"), signature(self.secret, body).encode())
        if self.previous and time.time() < self.previous_until:
            good |= hmac.compare_digest(header.encode("latin-1", "replace"),
                                        signature(self.previous, body).encode())
        return good


def load_all(root_dir: Path) -> dict[str, Channel]:
    """Every channel with its secrets."""
    found = {}
    for name, entry in read_object(_registry_path(root_dir)).items():
        keys = read_object(_secret_path(root_dir, name))
        if not keys.get("secret"):
            continue
        found[name] = Channel(name, entry.get("outbound_url"), tuple(entry.get("publish") or ()),
                              keys["secret"], keys.get("previous"), float(keys.get("previous_until") or 0),
                              str(entry.get("key") or ""))
    return found


def listing(root_dir: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    """``(name, outbound_url or "-", publish globs)`` per channel, sorted; never secrets."""
    return sorted((name, entry.get("outbound_url") or "-", tuple(entry.get("publish") or ()))
                  for name, entry in read_object(_registry_path(root_dir)).items())


class Channels:
    """The channels as a running API sees them: re-read when the registry file changes."""

    def __init__(self, root_dir: Path) -> None:
        self.root_dir = Path(root_dir)
        self.path = _registry_path(root_dir)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._channels: dict[str, Channel] = {}

    def get(self, name: str) -> Channel | None:
        if time.monotonic() - self._checked >= RELOAD_EVERY:
            with self._lock:
                now = time.monotonic()
                if now - self._checked >= RELOAD_EVERY:  # another thread may have just reloaded
                    try:
                        status = self.path.stat()
                        stamp = (status.st_mtime_ns, status.st_size)
                    except FileNotFoundError:
                        stamp = (0, 0)
                    if stamp != self._stamp:
                        try:
                            self._channels = load_all(self.root_dir)
                        except ConfigError as exc:  # hand-edited badly: keep serving what we had
                            log.warning("channels not reloaded: %s", exc)
                        self._stamp = stamp
                    # Set last: until the first load is done, every thread waits for it on the lock.
                    self._checked = now
        return self._channels.get(name)
