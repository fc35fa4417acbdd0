"""The CloudEvents type registry: named, versioned JSON Schemas under the API's ``root_dir``
(docs/cloudevents.md, Event types).

One JSON file, ``eventtypes.json`` in ``eventbus.cloudevents.statedir.directory(ROOT)``, replaced atomically
on every change: ``{NAME: {VERSION: {"schema", "description", "finalized"}}}``. A finalized version is
immutable, so its compiled validator is cached for the life of the process.
"""
from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Any, Callable

from jsonschema import exceptions as schema_exceptions
from jsonschema import validators as schema_validators

from eventbus.cloudevents.statedir import directory
from eventbus.errors import InvalidArgumentError
from eventbus.cloudevents.jsonfile import Reloading, read_object, write_atomic

__all__ = ["EventTypes", "add", "drafts", "finalize", "listing", "registry_path", "validator_class"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,49}$")


def _spelling(uri: str) -> str:
    """A ``$schema`` URI as looked up: no ``#``, no scheme (ODA writes ``http://.../2019-09/schema#``)."""
    return uri.strip().rstrip("#").split("://", 1)[-1]


def drafts() -> dict[str, type]:
    """Every draft the installed jsonschema validates: its name (``draft-07``, ``2020-12``) -> validator class."""
    found = {}
    for cls in vars(schema_validators).values():
        meta = getattr(cls, "META_SCHEMA", None)
        if isinstance(cls, type) and isinstance(meta, dict) and isinstance(meta.get("$schema"), str):
            path = urllib.parse.urlsplit(meta["$schema"]).path       # /draft-07/schema, /draft/2020-12/schema
            found[path.removesuffix("/schema").removeprefix("/").removeprefix("draft/")] = cls
    return dict(sorted(found.items(), key=lambda item: (not item[0].startswith("draft-"), item[0])))


_BY_SPELLING = {_spelling(cls.META_SCHEMA["$schema"]): cls for cls in drafts().values()}


def registry_path(root_dir: Path) -> Path:
    return directory(root_dir) / "eventtypes.json"


def validator_class(schema: Any) -> type:
    """The jsonschema validator class for ``schema``'s ``$schema`` (any draft jsonschema knows; 07 if absent)."""
    if not isinstance(schema, dict):
        raise InvalidArgumentError("a schema must be a JSON object", argument="schema")
    declared = schema.get("$schema")
    if declared is None:
        return schema_validators.Draft7Validator
    found = _BY_SPELLING.get(_spelling(declared)) if isinstance(declared, str) else None
    if found is None:
        raise InvalidArgumentError(f"$schema {declared!r} is not one of the drafts accepted: "
                                   f"{', '.join(drafts())} (e.g. https://json-schema.org/draft/2020-12/schema)",
                                   argument="schema", value=declared)
    return found


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
        root = Path(root_dir)
        self._registry: Reloading[dict] = Reloading(lambda: registry_path(root),
                                                    lambda: read_object(registry_path(root)), {},
                                                    "event types")
        self._validators: dict[tuple[str, str], Any] = {}

    def validator(self, name: str, version: str) -> Callable[[Any], Any]:
        """The compiled validator of finalized ``name`` ``version``; ``UnknownType`` otherwise."""
        key = (name, version)
        found = self._validators.get(key)
        if found is not None:
            return found
        versions = self._registry.current().get(name)
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
