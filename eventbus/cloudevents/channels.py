"""CloudEvents channels: where outside applications post events and get ours back (docs/cloudevents.md,
Channels and secrets).

``DIR/channels.json`` (0600; DIR is ``eventbus.cloudevents.statedir.directory(ROOT)``) holds
``{NAME: {"outbound_url", "publish", "created", "key"}}``; each channel's secret is in ``DIR/secrets/NAME``
(0600, JSON ``{"secret", "previous", "previous_until"}``). ``rotate`` keeps the old secret valid for a grace
period (``ROTATE_GRACE`` by default; 0 revokes it at once).
"""
from __future__ import annotations

import math
import re
import secrets as random_secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from eventbus import signing
from eventbus.cloudevents.statedir import directory
from eventbus.errors import InvalidArgumentError
from eventbus.cloudevents.jsonfile import Reloading, read_object, write_atomic

__all__ = ["Channel", "Channels", "ROTATE_GRACE", "Rotated", "add", "listing", "remove", "rotate"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
ROTATE_GRACE = 3600.0


def _registry_path(root_dir: Path) -> Path:
    return directory(root_dir) / "channels.json"


def _secret_path(root_dir: Path, name: str) -> Path:
    return directory(root_dir) / "secrets" / name


def _write_private(path: Path, value: Any) -> None:
    write_atomic(path, value, mode=0o600, dir_mode=0o700)


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
    _secret_path(root_dir, name).unlink(missing_ok=True)


class Rotated(NamedTuple):
    """What ``rotate`` did: the new secret, and until when (unix time) the old one is accepted (``None``: revoked)."""

    secret: str
    old_valid_until: float | None


def rotate(root_dir: Path, name: str, grace: float = ROTATE_GRACE) -> Rotated:
    """A new secret for ``name``; the old one stays valid for ``grace`` seconds (0: refused at once)."""
    if not (isinstance(grace, (int, float)) and math.isfinite(grace) and grace >= 0):
        raise InvalidArgumentError(f"grace {grace!r} must be 0 or more seconds", argument="grace", value=grace)
    registry = read_object(_registry_path(root_dir))
    if name not in registry:
        raise InvalidArgumentError(f"no channel {name!r}", argument="name")
    path = _secret_path(root_dir, name)
    old = read_object(path).get("secret")
    secret = random_secrets.token_urlsafe(32)
    until = time.time() + grace if grace > 0 else None
    _write_private(path, {"secret": secret, "previous": old if until else None, "previous_until": until or 0})
    # Rewrite the registry so a running API's change check (one stat of it) sees the rotation too.
    _write_private(_registry_path(root_dir), registry)
    return Rotated(secret, until)


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
        previous = self.previous if time.time() < self.previous_until else None
        return signing.verify(header, body, self.secret, previous)


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
        self._channels: Reloading[dict[str, Channel]] = Reloading(
            lambda: _registry_path(self.root_dir), lambda: load_all(self.root_dir), {}, "channels")

    def get(self, name: str) -> Channel | None:
        return self._channels.current().get(name)
