"""A minion's masters: the ``master`` key read into addresses, and where each master's key is pinned.

``master`` is one host (as ever), or a list whose items are ``host``,
``host:port`` (the port is that master's ``ret_port``) or a mapping
``{host, ret_port, publish_port, pubkey}``; a port left out is the minion's
own ``ret_port`` / ``publish_port``. ``problem`` says what is wrong with a
value in one phrase, for the config's one error line; ``resolve`` turns a
checked value into ``MasterAddress`` values.

One master keeps its pinned key where it always was (``pki_dir/minion_master.pub``);
with several, each master's key is pinned under ``pki_dir/masters/`` in a file
named after its address, so one master's key never stands for another's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

ITEM_KEYS = ("host", "ret_port", "publish_port", "pubkey")
PINNED_DIR = "masters"
PINNED_ONE = "minion_master.pub"  # the one master's key, where it always was
FORBIDDEN_IN_HOST = frozenset(" \t\r\n/\\:@[]")


@dataclass(frozen=True)
class MasterAddress:
    """One master of a minion: where to reach it, and its key if the config gives it."""

    host: str
    ret_port: int
    publish_port: int
    pubkey: str | None = None

    @property
    def name(self) -> str:
        """``host:ret_port``: how logs, ``eventbus status`` and the ``link`` answer name it."""
        return f"{self.host}:{self.ret_port}"

    @property
    def ret_endpoint(self) -> str:
        return f"tcp://{self.host}:{self.ret_port}"

    @property
    def publish_endpoint(self) -> str:
        return f"tcp://{self.host}:{self.publish_port}"

    def pin_path(self, pki_dir: Path, several: bool) -> Path:
        """Where this master's key is pinned: the one file of a single master, else its own under ``masters/``."""
        if not several:
            return pki_dir / PINNED_ONE
        return pki_dir / PINNED_DIR / f"{self.host}_{self.ret_port}.pub"


def _port_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        return f"{value!r} is not a TCP port number from 1 to 65535"
    return None


def _host_problem(host: Any) -> str | None:
    if not isinstance(host, str) or not host:
        return "a host is empty" if host in ("", None) else f"host {host!r} is not a string"
    bad = sorted(set(host) & FORBIDDEN_IN_HOST) + [c for c in host if c < " " or c == "\x7f"]
    if bad:
        return f"host {host!r} holds {bad[0]!r}"
    return None


def _item(raw: Any, ret_port: int, publish_port: int) -> MasterAddress | str:
    """One list item as an address, or what is wrong with it."""
    if isinstance(raw, str):
        host, colon, port_text = raw.strip().rpartition(":")
        if not colon:
            host, port_text = raw.strip(), ""
        if colon:
            if not (port_text.isascii() and port_text.isdigit()):
                return f"{raw!r} has a bad port {port_text!r}"
            port = int(port_text)
            if (reason := _port_problem(port)) is not None:
                return f"{raw!r}: {reason}"
            ret_port = port
        if (reason := _host_problem(host)) is not None:
            return reason
        return MasterAddress(host, ret_port, publish_port)
    if isinstance(raw, dict):
        unknown = sorted(str(k) for k in raw if k not in ITEM_KEYS)
        if unknown:
            return f"unknown item key {unknown[0]!r} (an item has {', '.join(ITEM_KEYS)})"
        if (reason := _host_problem(raw.get("host"))) is not None:
            return reason
        for name in ("ret_port", "publish_port"):
            if name in raw and (reason := _port_problem(raw[name])) is not None:
                return f"{name} {reason}"
        pubkey = raw.get("pubkey")
        if pubkey is not None and not isinstance(pubkey, str):
            return "pubkey is not a string"
        return MasterAddress(raw["host"], raw.get("ret_port", ret_port), raw.get("publish_port", publish_port),
                             pubkey or None)
    if raw is None:
        return "an item is empty"
    return f"item {raw!r} is neither a host, host:port nor a mapping"


def resolve(value: Any, ret_port: int, publish_port: int) -> tuple[MasterAddress, ...] | str:
    """The masters ``value`` names, in order, or one phrase saying what is wrong with it."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        return "it is neither a host nor a list of masters"
    if not items:
        return "the list is empty"
    out: list[MasterAddress] = []
    for number, raw in enumerate(items, 1):
        address = _item(raw, ret_port, publish_port)
        if isinstance(address, str):
            return f"item {number}: {address}" if len(items) > 1 or not isinstance(value, str) else address
        if any(a.host == address.host and a.ret_port == address.ret_port for a in out):
            return f"item {number}: {address.name} is listed twice"
        out.append(address)
    return tuple(out)


def pinned_key(path: Path) -> str | None:
    """The key pinned at ``path`` on first contact, if any."""
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def pin_key(path: Path, key: str) -> None:
    """Remember ``key`` at ``path`` for good (first contact); the directories are made 0700."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(key + "\n")
    tmp.replace(path)
