"""The master's ``cluster`` key: which NATS servers, which stream, how to authenticate (no I/O but secret files).

``parse(value, source)`` turns the YAML mapping into ``ClusterSettings`` or raises ``ConfigError`` naming
``cluster.<key>``. Secrets (``password``, ``token``) may be given as ``KEY_file`` / ``KEY_env``
(``eventbus.secretref``); ``creds`` is the path of a NATS credentials file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from eventbus import secretref
from eventbus.errors import ConfigError

KEYS = ("servers", "stream", "replicas", "subject_prefix", "user", "password", "token", "creds")
DEFAULT_SERVERS = ("nats://127.0.0.1:4222",)
DEFAULT_STREAM = "EVENTBUS"
DEFAULT_PREFIX = "eventbus"
MAX_REPLICAS = 5
SCHEMES = ("nats", "tls")
# JetStream names: no whitespace, '.', '*', '>' or path separators (and kept to what a file name may be).
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_TOKEN = re.compile(r"[A-Za-z0-9_-]+\Z")
_SERVER = re.compile(r"(?P<scheme>[a-z]+)://(?:[^@/\s]+@)?(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+)"
                     r"(?::(?P<port>\d{1,5}))?/?\Z")


@dataclass(frozen=True)
class ClusterSettings:
    """A checked ``cluster`` block (SPEC 12)."""

    servers: tuple[str, ...] = DEFAULT_SERVERS
    stream: str = DEFAULT_STREAM
    replicas: int = 1
    subject_prefix: str = DEFAULT_PREFIX
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    creds: Path | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def connect_options(self) -> dict[str, Any]:
        """The credential keyword arguments of ``nats.connect`` (servers and callbacks are the caller's)."""
        options: dict[str, Any] = {}
        if self.user is not None:
            options["user"] = self.user
            options["password"] = self.password or ""
        if self.token is not None:
            options["token"] = self.token
        if self.creds is not None:
            options["user_credentials"] = str(self.creds)
        return options

    def shown(self) -> dict[str, Any]:
        """The block as a person may see it (``eventbus status``, the opts dict): secrets never."""
        shown: dict[str, Any] = {"servers": list(self.servers), "stream": self.stream, "replicas": self.replicas,
                                 "subject_prefix": self.subject_prefix}
        if self.user is not None:
            shown["user"] = self.user
        if self.password is not None:
            shown["password"] = "<hidden>"
        if self.token is not None:
            shown["token"] = "<hidden>"
        if self.creds is not None:
            shown["creds"] = str(self.creds)
        return shown

    def hide(self, text: str) -> str:
        """``text`` with every secret of this block replaced (for log lines quoting a server's answer)."""
        for secret in self.secrets:
            text = text.replace(secret, "<hidden>")
        return text


def _fail(source: str, key: str, value: Any, expected: str) -> ConfigError:
    shown = "<hidden>" if key in secretref.SECRET_KEYS else repr(value)
    return ConfigError(f"{source}: key 'cluster.{key}' has value {shown}; expected {expected}",
                       file=source, key=f"cluster.{key}", value=None if key in secretref.SECRET_KEYS else value)


def _servers(value: Any, source: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise _fail(source, "servers", value, "a NATS URL or a non-empty list of them (nats://host:port)")
    seen: set[str] = set()
    for item in items:
        match = _SERVER.match(item) if isinstance(item, str) else None
        port = match.group("port") if match else None
        if match is None or match.group("scheme") not in SCHEMES or (port is not None and not 0 < int(port) < 65536):
            raise _fail(source, "servers", item, "a NATS URL such as nats://127.0.0.1:4222 (scheme nats or tls)")
        if item in seen:
            raise _fail(source, "servers", item, "each server once")
        seen.add(item)
    return tuple(items)


def _text(block: Mapping[str, Any], key: str, source: str) -> str | None:
    value = block.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _fail(source, key, value, "a non-empty string")
    return value


def parse(value: Any, source: str, root: Path | None = None) -> ClusterSettings | None:
    """The ``cluster`` block ``value`` of the config file ``source``; ``None`` when not given."""
    if value is None:
        return None
    if isinstance(value, ClusterSettings):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: key 'cluster' has value {value!r}; expected a mapping such as "
                          "{servers: [nats://127.0.0.1:4222], stream: EVENTBUS}", file=source, key="cluster",
                          value=value)
    block, secrets = secretref.resolve(value, KEYS, source, "cluster: ")
    unknown = sorted(set(block) - set(KEYS))
    if unknown:
        raise ConfigError(f"{source}: key 'cluster.{unknown[0]}' is not a cluster key; expected one of "
                          f"{', '.join(KEYS)} (each secret also as KEY_file or KEY_env)",
                          file=source, key=f"cluster.{unknown[0]}")
    servers = _servers(block.get("servers", list(DEFAULT_SERVERS)), source)
    stream = block.get("stream", DEFAULT_STREAM)
    if not isinstance(stream, str) or not _STREAM_NAME.match(stream):
        raise _fail(source, "stream", stream, "a JetStream stream name (letters, digits, '_' or '-')")
    replicas = block.get("replicas", 1)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= MAX_REPLICAS:
        raise _fail(source, "replicas", replicas, f"an integer from 1 to {MAX_REPLICAS}")
    prefix = block.get("subject_prefix", DEFAULT_PREFIX)
    if not isinstance(prefix, str) or not all(_TOKEN.match(token) for token in prefix.split(".")):
        raise _fail(source, "subject_prefix", prefix, "NATS subject tokens joined by '.' (letters, digits, '_', '-')")
    user, password, token = (_text(block, key, source) for key in ("user", "password", "token"))
    if password is not None and user is None:
        raise _fail(source, "password", password, "a 'user' beside it")
    creds_text = _text(block, "creds", source)
    creds = None
    if creds_text is not None:
        creds = Path(creds_text).expanduser()
        if root is not None and not creds.is_absolute():
            creds = root / creds
        if not creds.is_file():
            raise _fail(source, "creds", creds_text, "the path of a readable NATS credentials file")
    return ClusterSettings(servers, stream, replicas, prefix, user, password, token, creds,
                           tuple(s for s in secrets if s))
