"""The docs' config key tables, rendered from the declarations in ``eventbus.configkeys``.

Each table sits in a Markdown file between ``<!-- config-keys: NAME -->`` and
``<!-- end config-keys -->``; ``TABLES[NAME]`` says which keys it shows in
which order and in which words (the README's short ``doc`` or the key page's
``detail``). Names, files, defaults and meanings all come from the
declarations, so a table cannot disagree with the code::

    python -m eventbus.configdoc            # exit 1 and a diff when a table is stale
    python -m eventbus.configdoc --write    # rewrite the tables
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from eventbus import configkeys
from eventbus.forwarding import config as forwardconf
from eventbus.errors import ConfigError

FILES: dict[str, type[configkeys.CommonConfig]] = {
    "master": configkeys.MasterConfig, "minion": configkeys.MinionConfig, "api": configkeys.ApiConfig,
    "forward": forwardconf.ForwardConfig}
# The files whose keys the generated tables document (forward's are in docs/forward.md).
DOCUMENTED = ("master", "minion", "api")
DOCS = ("README.md", "docs/journal.md", "docs/link.md", "docs/api.md", "docs/fleet.md")
REPO = Path(__file__).resolve().parents[1]

MARKER = re.compile(r"<!-- config-keys: ([\w-]+) -->")
BLOCK = re.compile(r"(<!-- config-keys: ([\w-]+) -->\n)(.*?)(<!-- end config-keys -->)", re.S)


def keys_of(file: str) -> list[str]:
    """The keys file ``file`` accepts, in declaration order."""
    return [f.name for f in dataclasses.fields(FILES[file]) if f.metadata.get("kind") != "internal"]


def _field(file: str, key: str) -> dataclasses.Field:
    return {f.name: f for f in dataclasses.fields(FILES[file])}[key]


def _text(file: str, key: str, detail: bool) -> str:
    """A key's meaning in ``file``; a subclass that only changes a default keeps its base's words."""
    for cls in FILES[file].__mro__:
        spec = getattr(cls, "__dataclass_fields__", {}).get(key)
        if spec is not None and "doc" in spec.metadata:
            return spec.metadata.get("detail", spec.metadata["doc"]) if detail else spec.metadata["doc"]
    raise ConfigError(f"{file}: key {key!r} is declared without a meaning (doc=...)", file=file, key=key)


def _value(value: Any) -> str:
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (int, float)):
        return str(value)
    return f"`{value}`"


def _default(files: Sequence[str], key: str) -> str:
    """The default of ``key`` as the tables show it; per-file defaults as ``A / .../b`` (same directory)."""
    shown: list[str] = []
    first = None
    for file in files:
        spec = _field(file, key)
        if "shown" in spec.metadata:
            text = spec.metadata["shown"]
        elif first is not None and isinstance(spec.default, str) and isinstance(first, str) \
                and spec.default.rpartition("/")[0] == first.rpartition("/")[0] != "":
            text = f"`.../{spec.default.rpartition('/')[2]}`"
        else:
            text = _value(spec.default)
        first = spec.default if first is None else first
        if text not in shown:
            shown.append(text)
    return " / ".join(shown)


def default_of(key: str) -> str:
    """The default of ``key`` as the tables show it, over every file that declares it."""
    return _default([file for file in FILES if key in keys_of(file)], key)


def _joined(texts: Sequence[str]) -> str:
    return "; ".join(dict.fromkeys(texts))


def _cells(texts: Sequence[str]) -> str:
    return ", ".join(texts) if len(set(texts)) > 1 else texts[0]


@dataclass(frozen=True)
class Row:
    """One row: keys shown together; ``default`` / ``meaning`` replace the declared ones (a pointer row)."""

    keys: tuple[str, ...]
    default: str | None = None
    meaning: str | None = None


@dataclass(frozen=True)
class Table:
    """A key table over ``files``; ``detail`` tables use each key's page text and split per-file meanings."""

    files: tuple[str, ...]
    rows: tuple[Row, ...]
    file_column: bool = False
    detail: bool = False

    def _files_of(self, key: str) -> list[str]:
        found = [file for file in self.files if key in keys_of(file)]
        if not found:
            raise ConfigError(f"config-keys table: key {key!r} is declared in none of {', '.join(self.files)}",
                              key=key)
        return found

    def documents(self) -> Iterator[tuple[str, str]]:
        """(file, key) of every key the table shows."""
        for row in self.rows:
            for key in row.keys:
                for file in self._files_of(key):
                    yield file, key

    def render(self) -> str:
        header = ["key", "file", "default", "meaning"] if self.file_column else ["key", "default", "meaning"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.rows:
            for files in self._row_files(row):
                lines.append(self._line(row, files))
        return "\n".join(lines) + "\n"

    def _row_files(self, row: Row) -> list[list[str]]:
        """The files of each line a row becomes: one line, or (detail tables) one per distinct meaning."""
        files = self._files_of(row.keys[0])
        for key in row.keys[1:]:
            if self.file_column and self._files_of(key) != files:
                raise ConfigError(f"config-keys table: keys {', '.join(row.keys)} of one row are not in the "
                                  "same files", key=key)
        if not self.detail or row.meaning is not None:
            return [files]
        groups: dict[str, list[str]] = {}
        for file in files:
            groups.setdefault(_joined([_text(file, key, True) for key in row.keys]), []).append(file)
        return list(groups.values())

    def _line(self, row: Row, files: list[str]) -> str:
        names = ", ".join(f"`{key}`" for key in row.keys)
        default = row.default or _cells([_default(files, key) for key in row.keys])
        if row.meaning is not None:
            meaning = row.meaning
        else:
            per_file = [_joined([_text(file, key, self.detail) for key in row.keys]) for file in files]
            meaning = per_file[0] if len(set(per_file)) == 1 else "; ".join(
                f"{text} ({file})" for text, file in zip(per_file, files))
        cells = [names, _file_cell(files), default, meaning] if self.file_column else [names, default, meaning]
        return "| " + " | ".join(cells) + " |"


def _file_cell(files: list[str]) -> str:
    return "all" if set(files) == set(FILES) else ", ".join(files)


def _rows(*rows: str | Row) -> tuple[Row, ...]:
    """Rows from ``"a b"`` strings (keys shown together) or ``Row`` values."""
    return tuple(row if isinstance(row, Row) else Row(tuple(row.split())) for row in rows)


_BUS = ("master", "minion", "api", "forward")
_JOURNAL = _rows("event_journal", "journal_dir", "journal_max_bytes journal_max_age", "journal_fsync")
_API = ("host port", "ssl_crt ssl_key", "master_config", "external_auth", "token_expire", "jwt_secret",
        "webhook_disable_auth", "events_replay", "cors_origin", "stream_limit", "stream_queue", "metrics_public",
        "login_rate")

TABLES: dict[str, Table] = {
    # README.md, "Configuration", in its reading order: general keys, journal, link, REST API.
    "general": Table(_BUS, _rows(
        "root_dir", "sock_dir", "pki_dir", "id", "master", "interface", "publish_port ret_port", "auto_accept",
        "max_event_size", "event_match_type", "presence_events", "loop_interval", "subscriber_queue",
        "event_window", "event_window_bytes", "log_level log_file"), file_column=True),
    "journal": Table(("master",), _JOURNAL),
    "link": Table(("master", "minion"), _rows(
        "heartbeat_interval", "cachedir", "spool_max_events", "master_pubkey", "master_type", "master_alive_interval",
        "master_failback", "relay_rate_limit", "reactor", "cluster"), file_column=True),
    "api": Table(("api",), _rows(*_API)),
    # The keys' own pages.
    "journal-detail": Table(("master",), _rows(
        "event_journal", "journal_dir", "journal_max_bytes", "journal_max_age", "journal_fsync"), detail=True),
    "link-detail": Table(("master", "minion"), _rows(
        "heartbeat_interval", "cachedir", "spool_max_events", "master_pubkey", "relay_rate_limit"), file_column=True,
        detail=True),
    "fleet-detail": Table(("master", "minion"), _rows(
        "id", "master", "master_type", "master_alive_interval", "master_failback", "master_pubkey", "cluster"),
        file_column=True,
        detail=True),
    "api-detail": Table(("api",), _rows(*_API, Row(
        ("max_event_size", "event_match_type", "log_level", "log_file", "root_dir"), default="as everywhere",
        meaning="`/hook` bodies over `max_event_size` get 413")), detail=True),
}


def render(text: str, label: str = "doc") -> str:
    """``text`` with every marked table replaced by what the declarations render."""
    def table(match: re.Match) -> str:
        name = match.group(2)
        if name not in TABLES:
            raise ConfigError(f"{label}: unknown config-keys table {name!r}; known: {', '.join(TABLES)}",
                              file=label)
        return match.group(1) + TABLES[name].render() + match.group(4)
    return BLOCK.sub(table, text)


def main(argv: Sequence[str] | None = None) -> int:
    """Check (default) or ``--write`` the key tables of ``DOCS`` (or the files given)."""
    parser = argparse.ArgumentParser(prog="python -m eventbus.configdoc", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the tables instead of checking them")
    parser.add_argument("--root", type=Path, default=REPO, help="the checkout (default: this one)")
    parser.add_argument("files", nargs="*", default=list(DOCS), help="Markdown files, relative to --root")
    args = parser.parse_args(argv)
    stale = 0
    for name in args.files:
        path = args.root / name
        try:
            text = path.read_text(encoding="utf-8")
            rendered = render(text, name)
        except (OSError, ConfigError) as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 2
        if rendered == text:
            continue
        if args.write:
            path.write_text(rendered, encoding="utf-8")
            print(f"rewrote the key tables of {name}")
        else:
            stale += 1
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), rendered.splitlines(True),
                                                       name, f"{name} (rendered)"))
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
