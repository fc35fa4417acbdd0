"""The CloudEvents type registry: named, versioned JSON Schemas under the API's ``root_dir`` (SPEC 9).

One JSON file, ``ROOT/cloudevents/eventtypes.json``, replaced atomically on
every change: ``{NAME: {VERSION: {"schema", "description", "finalized"}}}``.
A finalized version is immutable, so its compiled validator is cached for
the life of the process; a running API re-reads the file when its mtime or
size changes (checked at most every ``RELOAD_EVERY`` seconds).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

from jsonschema import exceptions as schema_exceptions
from jsonschema import validators as schema_validators

from eventbus.errors import ConfigError, InvalidArgumentError
from eventbus.jsonfile import read_object, write_atomic

log = logging.getLogger(__name__)

__all__ = ["EventTypes", "add", "finalize", "listing", "registry_path", "validator_class"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,49}$")
RELOAD_EVERY = 0.25

# $schema spellings jsonschema does not know by itself (ODA writes the 2019-09 one with '#').
_DRAFTS = {
    "http://json-schema.org/draft-04/schema": schema_validators.Draft4Validator,
    "http://json-schema.org/draft-06/schema": schema_validators.Draft6Validator,
    "http://json-schema.org/draft-07/schema": schema_validators.Draft7Validator,
    "http://json-schema.org/draft/2019-09/schema": schema_validators.Draft201909Validator,
    "https://json-schema.org/draft/2019-09/schema": schema_validators.Draft201909Validator,
}


def registry_path(root_dir: Path) -> Path:
    return Path(root_dir) / "cloudevents" / "eventtypes.json"


def validator_class(schema: Any) -> type:
    """The jsonschema validator class for ``schema``'s ``$schema`` (draft 04, 06, 07, 2019-09; 07 if absent)."""
    if not isinstance(schema, dict):
        raise InvalidArgumentError("a schema must be a JSON object", argument="schema")
    declared = schema.get("$schema")
    if declared is None:
        return schema_validators.Draft7Validator
    if not isinstance(declared, str) or declared.rstrip("#") not in _DRAFTS:
        raise InvalidArgumentError(f"$schema {declared!r} is not draft-04, -06, -07 or 2019-09",
                                   argument="schema", value=declared)
    return _DRAFTS[declared.rstrip("#")]


def compile_schema(schema: Any) -> Any:
    """A validator for ``schema``, checked against its metaschema first (``InvalidArgumentError``)."""
    cls = validator_class(schema)
    try:
        cls.check_schema(schema)
    except schema_exceptions.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise InvalidArgumentError(f"invalid schema at {where}: {exc.message}", argument="schema") from None
    return cls(schema)


def add(root_dir: Path, name: str, schema: Any, version: str = "1.0", description: str = "") -> None:
    """Register ``name`` ``version`` as a draft; refused if the schema is invalid or the version is finalized."""
    if not NAME_RE.match(name or ""):
        raise InvalidArgumentError(f"event type name {name!r} must match {NAME_RE.pattern}", argument="name")
    if not VERSION_RE.match(version or ""):
        raise InvalidArgumentError(f"version {version!r} must match {VERSION_RE.pattern}", argument="version")
    compile_schema(schema)
    path = registry_path(root_dir)
    registry = read_object(path)
    existing = registry.get(name, {}).get(version)
    if existing is not None and existing.get("finalized"):
        raise InvalidArgumentError(f"event type {name} version {version} is finalized and cannot change; "
                                   "add a new version instead", argument="version", value=version)
    registry.setdefault(name, {})[version] = {"schema": schema, "description": description, "finalized": False}
    write_atomic(path, registry)


def finalize(root_dir: Path, name: str, version: str) -> None:
    """Make ``name`` ``version`` usable (and immutable)."""
    path = registry_path(root_dir)
    registry = read_object(path)
    entry = registry.get(name, {}).get(version)
    if entry is None:
        raise InvalidArgumentError(f"no event type {name} version {version}", argument="name")
    entry["finalized"] = True
    write_atomic(path, registry)


def listing(root_dir: Path) -> list[tuple[str, str, bool]]:
    """``(name, version, finalized)`` of every registered version, sorted."""
    registry = read_object(registry_path(root_dir))
    return sorted((name, version, bool(entry.get("finalized")))
                  for name, versions in registry.items() for version, entry in versions.items())


class UnknownType(LookupError):
    """No such type, or no such finalized version; ``code`` says which for the caller's answer."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EventTypes:
    """The registry as a running API sees it: re-read on change, validators compiled once per version."""

    def __init__(self, root_dir: Path) -> None:
        self.path = registry_path(root_dir)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._registry: dict = {}
        self._validators: dict[tuple[str, str], Any] = {}

    def _refresh(self) -> None:
        if time.monotonic() - self._checked < RELOAD_EVERY:
            return
        with self._lock:
            now = time.monotonic()
            if now - self._checked < RELOAD_EVERY:  # another thread has just reloaded
                return
            try:
                status = self.path.stat()
                stamp = (status.st_mtime_ns, status.st_size)
            except FileNotFoundError:
                stamp = (0, 0)
            if stamp != self._stamp:
                try:
                    self._registry = read_object(self.path) if stamp != (0, 0) else {}
                except ConfigError as exc:  # hand-edited badly: keep serving what we had
                    log.warning("event types not reloaded: %s", exc)
                self._stamp = stamp
            # Set last: until the first load is done, every thread waits for it on the lock.
            self._checked = now

    def validator(self, name: str, version: str) -> Callable[[Any], Any]:
        """The compiled validator of finalized ``name`` ``version``; ``UnknownType`` otherwise."""
        key = (name, version)
        found = self._validators.get(key)
        if found is not None:
            return found
        self._refresh()
        versions = self._registry.get(name)
        if not versions:
            raise UnknownType(f"unknown event type {name!r}")
        entry = versions.get(version)
        if entry is None:
            raise UnknownType(f"event type {name!r} has no version {version!r} "
                              f"(it has {', '.join(sorted(versions))})")
        if not entry.get("finalized"):
            raise UnknownType(f"event type {name!r} version {version!r} is a draft; finalize it first")
        found = compile_schema(entry["schema"])
        self._validators[key] = found
        return found
