"""Configuration: YAML files read and checked once, into frozen dataclasses.

The keys of each file are declared in ``eventbus.configkeys``; this module reads YAML and opts dicts into
them. Inside eventbus the typed objects (``MasterConfig``, ``MinionConfig``, ``ApiConfig``) are passed
around; for Salt users ``master_config(path)``, ``minion_config(path)`` and ``client_config(path)`` return
plain dicts of every key with defaults filled and paths absolute. A relative ``root_dir`` is taken from
the config file's directory, every other relative path is under ``root_dir``, ``~`` expands. An opts dict
(``typed(opts)``) is checked like a file, its messages naming ``opts``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import yaml

from eventbus import minionid
from eventbus.errors import ConfigError
# Each file's keys are declared in eventbus.configkeys; the classes are part of this module's API.
from eventbus.configkeys import (LOG_LEVELS, ApiConfig, BaseConfig, BusConfig, CommonConfig, MasterConfig,  # noqa: F401
                                 MinionConfig)
from eventbus.configkeys import key as _key  # noqa: F401  (eventbus.forwarding.config declares its keys with it)

DEFAULT_CONFIG_DIR = "/etc/eventbus"
# The label of errors in an opts dict (there is no file to name).
OPTS_LABEL = "opts"


@dataclass(frozen=True)
class AuthBackend:
    """One ``external_auth`` backend of the REST API: its users file and each user's tag globs."""

    name: str
    users_file: Path
    perms: Mapping[str, tuple[str, ...]]


C = TypeVar("C", bound=CommonConfig)


class _Reader:
    """Turns one file's raw YAML values into typed values, naming file and key on error."""

    def __init__(self, source: str, config_dir: Path, root: Path) -> None:
        self.source = source
        self.config_dir = config_dir
        self.root = root

    def fail(self, key: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(f"{self.source}: key {key!r} has value {value!r}; expected {expected}",
                           file=self.source, key=key, value=value)

    def read(self, spec: dataclasses.Field, value: Any) -> Any:
        kind = spec.metadata["kind"]
        convert: Callable[[dataclasses.Field, Any], Any] = getattr(self, "_" + kind)
        return convert(spec, value)

    def _int(self, spec: dataclasses.Field, value: Any) -> int:
        low, high = spec.metadata.get("min"), spec.metadata.get("max")
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(spec.name, value, f"an integer from {low} to {high}")
        return value

    def _port(self, spec: dataclasses.Field, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            raise self.fail(spec.name, value, "a TCP port number from 1 to 65535")
        return value

    def _seconds(self, spec: dataclasses.Field, value: Any) -> float | None:
        if value is None and spec.default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise self.fail(spec.name, value, "a positive number of seconds")
        return float(value)

    def _masters(self, spec: dataclasses.Field, value: Any) -> Any:
        """A host, or a list of masters: checked with the ports it defaults to (``MinionConfig.cross_check``)."""
        return tuple(value) if isinstance(value, list) else value

    def _bool(self, spec: dataclasses.Field, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(spec.name, value, "true or false")
        return value

    def _str(self, spec: dataclasses.Field, value: Any) -> str | None:
        if value is None and spec.default is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(spec.name, value, "a non-empty string")
        return value

    def _secret(self, spec: dataclasses.Field, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or len(value) < 16:
            # Never echo a secret back, not even a bad one.
            raise ConfigError(f"{self.source}: key {spec.name!r} must be a string of at "
                              f"least 16 characters", file=self.source, key=spec.name)
        return value

    def _choice(self, spec: dataclasses.Field, value: Any) -> str:
        choices = spec.metadata["choices"]
        if value not in choices:
            raise self.fail(spec.name, value, "one of " + ", ".join(choices))
        return value

    def _mapping(self, spec: dataclasses.Field, value: Any) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(spec.name, value, "a mapping")
        return value

    def _reactor(self, spec: dataclasses.Field, value: Any) -> tuple:
        if value is None or value == ():
            return ()
        from eventbus.reactor import rules

        return rules.parse(value, self.source)

    def _cluster(self, spec: dataclasses.Field, value: Any) -> Any:
        from eventbus.cluster import settings

        return settings.parse(value, self.source, self.root)

    def _eauth(self, spec: dataclasses.Field, value: Any) -> Mapping[str, AuthBackend]:
        return external_auth(self._mapping(spec, value), self.root, self.source)

    def _id(self, spec: dataclasses.Field, value: Any) -> str:
        if value is None:
            return platform.node()
        reason = minionid.problem(value)
        if reason is not None:
            raise self.fail(spec.name, value, f"an id ({minionid.RULE}): {reason}")
        return value

    def _path(self, spec: dataclasses.Field, value: Any) -> Path | None:
        if value is None:
            return None
        path = _user_path(_fspath(value))
        if path is None:
            raise self.fail(spec.name, value, "a file system path")
        return self.root / path

    def _confpath(self, spec: dataclasses.Field, value: Any) -> Path:
        path = _user_path(_fspath(value))
        if path is None:
            raise self.fail(spec.name, value, "the path of a config file")
        return self.config_dir / path


def _user_path(value: Any) -> Path | None:
    """``value`` as a path with ``~`` expanded; ``None`` unless it is a non-empty str without NUL whose
    ``~user`` names a user of this machine."""
    if not isinstance(value, str) or not value or "\x00" in value:
        return None
    try:
        return Path(value).expanduser()
    except RuntimeError:  # ~user of no such user
        return None


def _fspath(value: Any) -> Any:
    """A ``Path`` given in an opts dict read as the string a YAML file would hold."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def external_auth(raw: Mapping[str, Any], root: Path, source: str = "api") -> dict[str, AuthBackend]:
    """The checked backends of an ``external_auth`` mapping; ``ConfigError`` naming what is wrong."""
    backends = {}
    for name, entry in raw.items():
        if name != "file":
            raise ConfigError(f"{source}: external_auth backend {name!r} is not supported; use 'file'",
                              file=source, key="external_auth")
        if isinstance(entry, AuthBackend):
            backends[name] = entry
            continue
        users_file = _fspath(entry.get("users_file", "etc/eventbus/api-users")) if isinstance(entry, dict) else None
        users_path = _user_path(users_file)
        if users_path is None:
            raise ConfigError(f"{source}: external_auth.{name} must be a mapping with a users_file path "
                              f"(without NUL, and a ~user of this machine), got {users_file!r}",
                              file=source, key="external_auth")
        perms = {}
        for user, globs in entry.items():
            if user == "users_file":
                continue
            if isinstance(globs, str):
                globs = [globs]
            if not isinstance(globs, (list, tuple)) or not all(isinstance(g, str) and g for g in globs):
                raise ConfigError(f"{source}: external_auth.{name}.{user} must be a list of tag globs, "
                                  f"got {globs!r}", file=source, key="external_auth")
            perms[str(user)] = tuple(globs)
        backends[name] = AuthBackend(name, root / users_path, perms)
    return backends


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the config file is not UTF-8 text (byte {exc.start})", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}", file=str(path)) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}: malformed YAML{line}: {problem}", file=str(path)) from None
    except RecursionError:
        raise ConfigError(f"{path}: malformed YAML: nested too deep", file=str(path)) from None
    except ValueError as exc:  # PyYAML building a scalar its resolver took for a number or a date (0x_, 2001-13-01)
        raise ConfigError(f"{path}: malformed YAML: {exc}", file=str(path)) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(raw).__name__}",
                          file=str(path))
    return raw


def _default_root() -> Path:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/")
    return Path.home() / ".eventbus"


def load(cls: type[C], path: str | os.PathLike | None) -> C:
    """Read and check one config file into ``cls``; ``None`` means all defaults."""
    source = Path(path).absolute() if path is not None else None
    raw = _read_yaml(source) if source is not None else {}
    label = str(path) if path is not None else f"<default {cls.node} config>"
    return _check(cls, raw, label, source)


def from_mapping(cls: type[C], raw: Mapping[str, Any], source: Path | None, label: str,
                 **extra: Any) -> C:
    """Check the raw YAML values of one file into ``cls`` (``extra``: internal fields already typed)."""
    return _check(cls, raw, label, source, **extra)


def _check(cls: type[C], raw: Mapping[str, Any], label: str, source: Path | None, **extra: Any) -> C:
    """``raw`` (a YAML file's mapping or an opts dict) checked into ``cls``; errors name ``label``."""
    keys = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("kind") != "internal"}
    for name in raw:
        if name not in keys:
            raise ConfigError(f"{label}: unknown key {name!r}", file=label, key=str(name))
    config_dir = source.parent if source is not None else Path.cwd()
    root_value = _fspath(raw.get("root_dir"))
    root_path = _user_path(root_value)
    if root_value is None:
        root = _default_root()
    elif root_path is not None:
        root = (config_dir / root_path).resolve()
    else:
        raise ConfigError(f"{label}: key 'root_dir' has value {root_value!r}; expected a directory path",
                          file=label, key="root_dir", value=root_value)
    reader = _Reader(label, config_dir, root)
    values: dict[str, Any] = {"source": source, "root_dir": root, **extra}
    for name, spec in keys.items():
        if name != "root_dir" and name not in extra:
            values[name] = reader.read(spec, raw.get(name, spec.default))
    config = cls(**values)
    problem = config.cross_check()
    if problem is not None:
        raise reader.fail(*problem)
    return config


def config_path(config_dir: str | os.PathLike | None, name: str, required: bool = False) -> Path | None:
    """The file ``name`` in ``-c DIR``, else in ``$EVENTBUS_CONFIG_DIR`` or ``/etc/eventbus``.

    Without ``-c`` and no such file there: ``None`` (the caller runs on defaults), or,
    when ``required`` (a command that writes state a daemon reads), ``ConfigError``
    naming the file looked for.
    """
    if config_dir is None:
        candidate = Path(os.environ.get("EVENTBUS_CONFIG_DIR") or DEFAULT_CONFIG_DIR) / name
        if candidate.exists():
            return candidate
        if required:
            raise ConfigError(f"no config file {candidate} (give -c DIR)", file=str(candidate))
        return None
    directory = Path(config_dir)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: config directory does not exist", file=str(directory))
    return directory / name


def to_dict(config: CommonConfig) -> dict[str, Any]:
    """The Salt-style opts dict of a typed config: every key, paths as absolute strings."""
    opts: dict[str, Any] = {}
    for spec in dataclasses.fields(config):
        value = getattr(config, spec.name)
        if spec.metadata.get("kind") == "reactor":
            value = [rule.raw for rule in value]
        if spec.metadata.get("kind") == "cluster" and value is not None:
            value = value.shown()
        if spec.name == "external_auth":
            value = {name: {"users_file": str(backend.users_file), **{u: list(g) for u, g in backend.perms.items()}}
                     for name, backend in value.items()}
        opts["conf_file" if spec.name == "source" else spec.name] = (
            str(value) if isinstance(value, Path) else value)
    return opts


def master_config(path: str | os.PathLike | None) -> dict[str, Any]:
    """The master's config file as a dict of all keys (Salt's ``master_config``)."""
    return to_dict(load(MasterConfig, path))


def minion_config(path: str | os.PathLike | None) -> dict[str, Any]:
    """The minion's config file as a dict of all keys (Salt's ``minion_config``)."""
    return to_dict(load(MinionConfig, path))


def api_config(path: str | os.PathLike | None) -> dict[str, Any]:
    """The REST API's config file as a dict of all keys."""
    return to_dict(load(ApiConfig, path))


def client_config(path: str | os.PathLike | None) -> dict[str, Any]:
    """Config for a client of a bus: the minion's keys for a file named ``minion*``, else the master's."""
    if path is not None and Path(path).name.startswith("minion"):
        return minion_config(path)
    return master_config(path)


def _names(cls: type[BaseConfig]) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _schema_of(opts: Mapping[str, Any], cls: type[C]) -> type[C]:
    """The bus schema an opts dict was made from: a minion's dict given for a master handle is a minion's."""
    if cls in (MasterConfig, MinionConfig):
        other = MinionConfig if cls is MasterConfig else MasterConfig
        names = set(opts)
        if not names <= _names(cls) and names <= _names(other):
            return other  # type: ignore[return-value]
        # Both have ``id``: a sparse dict with it and nothing only a master has is a minion's, as it always was.
        if cls is MasterConfig and "id" in names and names <= _names(MinionConfig):
            return MinionConfig  # type: ignore[return-value]
    return cls


def typed(opts: Mapping[str, Any] | BaseConfig | None, cls: type[C] = MasterConfig) -> C:  # type: ignore[assignment]
    """A typed config from either a typed config or a Salt-style opts dict, checked like a file."""
    if isinstance(opts, BaseConfig):
        return opts  # type: ignore[return-value]
    if not opts:
        return load(cls, None)
    if not isinstance(opts, Mapping):
        raise ConfigError(f"{OPTS_LABEL}: expected a mapping of keys to values, got {type(opts).__name__}",
                          file=OPTS_LABEL)
    raw = dict(opts)
    conf_file = _fspath(raw.pop("conf_file", None))
    source = Path(conf_file).absolute() if isinstance(conf_file, str) and conf_file else None
    return _check(_schema_of(raw, cls), raw, OPTS_LABEL, source)
