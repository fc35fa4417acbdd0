"""Reactor rules (docs/reactor.md): the master config's ``reactor`` key, checked once, matched fast, rendered.

Sans-IO: nothing here runs an action. ``parse`` turns the YAML list into ``Rule`` values (anything wrong is
one ``ConfigError`` line naming the rule), ``RuleSet.match(tag)`` finds the rules of a tag without trying
every rule, and ``render`` fills an action's templates from one event's ``context``: Jinja2, sandboxed,
``StrictUndefined``; strings without ``{`` are not templates at all.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from eventbus.errors import ConfigError

# Tags the reactor fires itself; events under it never trigger rules (no feedback loops on results).
RESERVED_PREFIX = "eventbus/reactor/"
RESULT_TAG = "eventbus/reactor/result"

# action -> (required fields, optional fields, fields that are templates)
ACTION_FIELDS: dict[str, tuple[frozenset, frozenset, frozenset]] = {
    "fire": (frozenset({"tag"}), frozenset({"data"}), frozenset({"tag", "data"})),
    "target": (frozenset({"glob", "tag"}), frozenset({"data", "timeout"}),
               frozenset({"glob", "tag", "data"})),
    "run": (frozenset({"argv"}), frozenset({"timeout", "env", "max_output"}), frozenset({"argv"})),
    "post": (frozenset({"url"}), frozenset({"body", "headers", "timeout"}),
             frozenset({"url", "body", "headers"})),
}
ACTIONS = tuple(ACTION_FIELDS)

DEFAULT_TIMEOUT = {"target": 5.0, "run": 30.0, "post": 10.0}
DEFAULT_MAX_OUTPUT = 4096
MAX_OUTPUT_LIMIT = 1 << 20

_environment: Any = None


def _jinja() -> Any:
    """The one sandboxed environment (imported on first use: a master without rules never loads Jinja2)."""
    global _environment
    if _environment is None:
        from jinja2 import StrictUndefined
        from jinja2.sandbox import SandboxedEnvironment

        _environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                            keep_trailing_newline=True)
    return _environment


class Template:
    """One string field: literal, or a compiled Jinja2 template."""

    __slots__ = ("source", "compiled")

    def __init__(self, source: str) -> None:
        self.source = source
        self.compiled = _jinja().from_string(source) if "{" in source else None

    def render(self, context: dict) -> str:
        return self.source if self.compiled is None else self.compiled.render(context)


@dataclass(frozen=True)
class Action:
    """One action of a rule: its kind, its fields (strings compiled to ``Template``), its position."""

    kind: str
    fields: Any
    index: int


@dataclass(frozen=True)
class Rule:
    """A tag glob and its actions; ``key`` names it in the reactor's record of what ran."""

    glob: str
    actions: tuple[Action, ...]
    index: int
    raw: Any

    @property
    def key(self) -> str:
        return f"{self.index}:{self.glob}"


class RenderError(Exception):
    """A template failed on one event (a missing value, a sandbox refusal); the action is not run."""


def _compile(value: Any, where: str) -> Any:
    if isinstance(value, str):
        try:
            return Template(value)
        except Exception as exc:  # jinja2.TemplateSyntaxError and friends; one line, never a traceback
            line = getattr(exc, "lineno", None)
            at = f" (template line {line})" if line else ""
            raise ConfigError(f"{where}: template {value!r} does not compile{at}: {exc}") from None
    if isinstance(value, dict):
        return {str(key): _compile(item, where) for key, item in value.items()}
    if isinstance(value, list):
        return [_compile(item, where) for item in value]
    return value


def context(seq: int, tag: str, data: Any) -> dict:
    """The names templates see for one event: ``tag``, ``data``, ``seq``, plus ``id`` and ``payload``.

    A relayed minion event's data wraps what the minion sent,
    ``{"id", "tag", "data", "cmd": "_minion_event"}`` (docs/reactor.md,
    Actions: Templates): ``id`` is then that minion's id and ``payload`` its
    own dict (``data.data``). For any other event ``id`` is ``None`` and
    ``payload`` is ``data``.
    """
    # Imported here: records pulls in the CloudEvents SDK, which only the reactor process (it renders) needs.
    from eventbus.forwarding.formats import minion_id

    relayed = minion_id(data) if isinstance(data, dict) else None
    inner = data.get("data") if relayed is not None else None
    return {"tag": tag, "data": data, "seq": seq, "id": relayed, "payload": inner if isinstance(inner, dict) else data}


def render(value: Any, context: dict) -> Any:
    """``value`` with every ``Template`` in it rendered over ``context`` (see ``context``)."""
    if isinstance(value, Template):
        try:
            return value.render(context)
        except Exception as exc:  # an undefined value or a sandbox refusal: the action fails, with why
            raise RenderError(f"template {value.source!r}: {exc}") from None
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, context) for item in value]
    return value


def check_glob(glob: Any) -> str | None:
    """Why ``glob`` is not a usable tag glob, or ``None``."""
    if not isinstance(glob, str) or not glob:
        return "the tag glob must be a non-empty string"
    if any(ord(c) < 32 for c in glob):
        return "the tag glob holds a control character"
    depth = 0
    for c in glob:
        if c == "[":
            depth += 1
        elif c == "]" and depth:
            depth -= 1
    if depth:
        return "the tag glob has an unclosed '['"
    return None


def _positive(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0


def _parse_action(kind: str, body: Any, where: str) -> Any:
    required, optional, templated = ACTION_FIELDS[kind]
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(sorted(required | optional))}, "
                          f"got {body!r}")
    unknown = sorted(set(body) - required - optional)
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}; expected {', '.join(sorted(required | optional))}")
    missing = sorted(required - set(body))
    if missing:
        raise ConfigError(f"{where}: missing field {missing[0]!r}")
    fields: dict[str, Any] = {}
    for name, value in body.items():
        if name in ("tag", "glob", "url") and (not isinstance(value, str) or not value):
            raise ConfigError(f"{where}: field {name!r} must be a non-empty string, not {value!r}")
        if name in ("data", "headers") and not isinstance(value, dict):
            raise ConfigError(f"{where}: field {name!r} must be a mapping, not {value!r}")
        if name == "argv" and (not isinstance(value, list) or not value
                               or not all(isinstance(arg, (str, int, float)) and not isinstance(arg, bool)
                                          for arg in value)):
            raise ConfigError(f"{where}: field 'argv' must be a non-empty list of strings, not {value!r}")
        if name == "timeout" and not _positive(value):
            raise ConfigError(f"{where}: field 'timeout' must be a positive number of seconds, not {value!r}")
        if name == "env" and (not isinstance(value, dict)
                              or not all(isinstance(k, str) and isinstance(v, (str, int, float))
                                         for k, v in value.items())):
            raise ConfigError(f"{where}: field 'env' must be a mapping of names to strings, not {value!r}")
        if name == "max_output" and (isinstance(value, bool) or not isinstance(value, int)
                                     or not 0 <= value <= MAX_OUTPUT_LIMIT):
            raise ConfigError(f"{where}: field 'max_output' must be bytes from 0 to {MAX_OUTPUT_LIMIT}, "
                              f"not {value!r}")
        if name == "argv":
            value = [str(arg) for arg in value]
        if name == "env":
            value = {k: str(v) for k, v in value.items()}
        fields[name] = _compile(value, where) if name in templated else value
    if kind in DEFAULT_TIMEOUT:
        fields.setdefault("timeout", DEFAULT_TIMEOUT[kind])
        fields["timeout"] = float(fields["timeout"])
    if kind == "run":
        fields.setdefault("env", {})
        fields.setdefault("max_output", DEFAULT_MAX_OUTPUT)
    if kind == "fire":
        fields.setdefault("data", {})
    return fields


def parse(value: Any, source: str = "master") -> tuple[Rule, ...]:
    """The rules of a ``reactor`` config value; ``ConfigError`` naming the rule on the first problem."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"{source}: key 'reactor' has value {value!r}; expected a list of "
                          f"'GLOB: [actions]' mappings", file=source, key="reactor", value=value)
    rules = []
    for number, item in enumerate(value, 1):
        where = f"{source}: reactor rule {number}"
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f"{where}: expected one 'GLOB: [actions]' mapping, got {item!r}",
                              file=source, key="reactor")
        (glob, actions), = item.items()
        where = f"{where} ({glob!r})"
        problem = check_glob(glob)
        if problem:
            raise ConfigError(f"{where}: {problem}", file=source, key="reactor", value=glob)
        if not isinstance(actions, list) or not actions:
            raise ConfigError(f"{where}: expected a non-empty list of actions, got {actions!r}",
                              file=source, key="reactor")
        parsed = []
        for index, entry in enumerate(actions):
            at = f"{where}, action {index + 1}"
            if not isinstance(entry, dict) or len(entry) != 1:
                raise ConfigError(f"{at}: expected one of {', '.join(ACTIONS)} with its fields, got {entry!r}",
                                  file=source, key="reactor")
            (kind, body), = entry.items()
            if kind not in ACTION_FIELDS:
                raise ConfigError(f"{at}: unknown action {kind!r}; expected one of {', '.join(ACTIONS)}",
                                  file=source, key="reactor", value=kind)
            parsed.append(Action(kind, _parse_action(kind, body, f"{at} ({kind})"), index))
        rules.append(Rule(glob, tuple(parsed), number - 1, item))
    return tuple(rules)


_WILDCARDS = re.compile(r"[*?\[]")


class RuleSet:
    """Rules indexed by the literal prefix of their glob, so a tag is checked against few of them.

    A glob splits into its literal prefix (up to the first ``*``, ``?`` or
    ``[``) and the rest. Rules are bucketed by (prefix length, prefix); a tag
    looks up one dict per distinct prefix length and only tests the rules
    there: exact globs need nothing more, ``prefix*`` globs nothing more
    (``*`` matches ``/`` as in fnmatch), others their compiled regex. The
    answer per tag is cached, since a bus repeats its tags.
    """

    CACHE = 8192

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self.exact: dict[str, list[Rule]] = {}
        # prefix length -> prefix -> [(rule, regex or None)]
        self.buckets: dict[int, dict[str, list[tuple[Rule, re.Pattern | None]]]] = {}
        for rule in rules:
            found = _WILDCARDS.search(rule.glob)
            if found is None:
                self.exact.setdefault(rule.glob, []).append(rule)
                continue
            prefix = rule.glob[:found.start()]
            rest = rule.glob[found.start():]
            regex = None if rest == "*" else re.compile(fnmatch.translate(rule.glob))
            self.buckets.setdefault(len(prefix), {}).setdefault(prefix, []).append((rule, regex))
        self.lengths = sorted(self.buckets)
        self._cache: dict[str, tuple[Rule, ...]] = {}

    def __len__(self) -> int:
        return len(self.rules)

    def match(self, tag: str) -> tuple[Rule, ...]:
        """The rules whose glob matches ``tag``, in config order (none for ``eventbus/reactor/*``)."""
        cached = self._cache.get(tag)
        if cached is not None:
            return cached
        found: list[Rule] = []
        if not tag.startswith(RESERVED_PREFIX):
            found.extend(self.exact.get(tag, ()))
            size = len(tag)
            for length in self.lengths:
                if length > size:
                    break
                bucket = self.buckets[length].get(tag[:length])
                if bucket:
                    found.extend(rule for rule, regex in bucket if regex is None or regex.match(tag))
            if len(found) > 1:
                found.sort(key=lambda rule: rule.index)
        result = tuple(found)
        if len(self._cache) >= self.CACHE:
            self._cache.clear()
        self._cache[tag] = result
        return result
