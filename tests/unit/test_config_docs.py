"""The docs' config key tables against the declarations: generated tables are what the code renders,
docs/forward.md agrees with each sink's ``KEYS``, the ``conf/`` samples name only declared keys."""
from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from eventbus import configdoc
from eventbus.forwarding import config as forwardconf
from eventbus.errors import ConfigError
from eventbus.sink import COMMON_KEYS, REQUIRED

REPO = Path(__file__).resolve().parents[2]


# -- the generated tables ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", configdoc.DOCS)
def test_each_key_table_is_what_the_declarations_render(name):
    text = (REPO / name).read_text(encoding="utf-8")
    rendered = configdoc.render(text, name)
    if rendered != text:
        diff = "".join(difflib.unified_diff(text.splitlines(True), rendered.splitlines(True), name,
                                            f"{name} as the declarations render it"))
        pytest.fail(f"{name}: a config key table differs from eventbus/config.py "
                    f"(python -m eventbus.configdoc --write rewrites it):\n{diff}")


def shown_tables() -> list[str]:
    return [name for doc in configdoc.DOCS
            for name in configdoc.MARKER.findall((REPO / doc).read_text(encoding="utf-8"))]


def test_every_table_is_shown_once_and_every_declared_key_is_in_one():
    assert sorted(shown_tables()) == sorted(configdoc.TABLES)
    documented = {(file, key) for table in configdoc.TABLES.values() for file, key in table.documents()
                  if file in configdoc.DOCUMENTED}
    declared = {(file, key) for file in configdoc.DOCUMENTED for key in configdoc.keys_of(file)}
    assert sorted(declared - documented) == [], "declared keys that no table documents"
    assert sorted(documented - declared) == [], "documented keys that no file declares"


def test_a_table_naming_an_undeclared_key_does_not_render():
    table = configdoc.Table(("master",), (configdoc.Row(("journal_max_byte",)),))
    with pytest.raises(ConfigError, match="journal_max_byte"):
        table.render()


def hand_written_key_tables(text: str) -> Iterator[list[list[str]]]:
    """The rows (cells) of each ``| key | ...`` table outside the generated blocks."""
    lines = configdoc.BLOCK.sub("", text).splitlines()
    for number, line in enumerate(lines):
        if re.match(r"\|\s*key\s*\|", line):
            rows = []
            for row in lines[number:]:
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in row.strip().strip("|").split("|")])
            yield rows


def same_default(documented: str, rendered: str) -> bool:
    """``documented`` says ``rendered``, perhaps in other words: ``5 s`` for 5, ``64 MiB`` for 67108864."""
    units = {"": 1, "s": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    number = re.fullmatch(r"([\d,]+) ?(s|KiB|MiB|GiB)?", documented)
    if number and rendered.isdigit():
        return int(number.group(1).replace(",", "")) * units[number.group(2) or ""] == int(rendered)
    return documented == rendered


@pytest.mark.parametrize("doc", [*configdoc.DOCS, "docs/architecture.md", "docs/bench.md", "docs/cloudevents.md",
                                 "docs/forward.md", "docs/metrics.md", "docs/reactor.md"])
def test_a_hand_written_key_table_names_declared_keys_with_their_defaults(doc):
    """Generated tables are preferred; one written by hand (a doc not generated) is checked instead."""
    declared = {key for file in configdoc.FILES for key in configdoc.keys_of(file)}
    for header, _rule, *rows in hand_written_key_tables((REPO / doc).read_text(encoding="utf-8")):
        assert doc not in configdoc.DOCS, f"{doc}: a key table outside <!-- config-keys: ... --> markers"
        for row in rows:
            keys = re.findall(r"`(\w+)`", row[0])
            assert keys and set(keys) <= declared, f"{doc}: {row[0]} is not a declared key"
            if "default" in header and len(keys) == 1:
                documented, rendered = row[header.index("default")], configdoc.default_of(keys[0])
                assert same_default(documented, rendered), f"{doc}: {keys[0]} defaults to {rendered}, not {documented}"


def test_the_check_command_says_what_differs(tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- config-keys: journal -->\n| stale |\n<!-- end config-keys -->\n")
    assert configdoc.main(["--root", str(tmp_path), "doc.md"]) == 1
    assert "+| `event_journal` |" in capsys.readouterr().out
    assert configdoc.main(["--root", str(tmp_path), "--write", "doc.md"]) == 0
    assert configdoc.main(["--root", str(tmp_path), "doc.md"]) == 0
    assert "| `journal_fsync` | `batch` |" in doc.read_text()


# -- docs/forward.md (hand-written, checked) -----------------------------------------------------------------

FORWARD_DOC = REPO / "docs/forward.md"


def split_items(cell: str) -> list[str]:
    """``cell``'s comma separated items, commas inside parentheses or backticks kept."""
    items, depth, quoted, current = [], 0, False, ""
    for char in cell:
        if char == "`":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == "," and depth == 0 and not quoted:
            items.append(current.strip())
            current = ""
        else:
            current += char
    return [item for item in [*items, current.strip()] if item]


def documented_keys(cell: str) -> dict[str, Any]:
    """``{key: default}`` of a list like ``\\`path\\` (\\`x.log\\`, under root_dir), \\`url\\` (required)``;
    a key with no default given documents ``None``."""
    keys: dict[str, Any] = {}
    for item in split_items(cell):
        found = re.fullmatch(r"(?:or )?`(\w+)`(?: \((.*)\))?", item, re.S)
        assert found, f"docs/forward.md: {item!r} is not '`key` (default, ...)'"
        key, note = found.groups()
        value: Any = None
        if note is not None:
            note = note.removeprefix("default ")
            literal = re.match(r"`([^`]*)`|(\d+)\b|(required)\b", note)
            if literal and literal.group(1) is not None:
                value = yaml.safe_load(literal.group(1))
            elif literal and literal.group(2) is not None:
                value = int(literal.group(2))
            elif literal:
                value = REQUIRED
        keys[key] = value
    return keys


def forward_config_section() -> str:
    text = FORWARD_DOC.read_text(encoding="utf-8")
    return text.split("\n## Config\n", 1)[1].split("\n## ", 1)[0]


def forward_sentence(opening: str) -> dict[str, Any]:
    prose = " ".join(forward_config_section().split())
    found = re.search(re.escape(opening) + r" (.*?)\.(?: |$)", prose)
    assert found, f"docs/forward.md: no sentence starting {opening!r}"
    return documented_keys(found.group(1))


def forward_type_rows() -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for line in forward_config_section().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        for kind in re.findall(r"`([\w.]+)`", cells[0]):
            rows[kind] = cells[1]
    return rows


def plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def disagreement(documented: dict[str, Any], declared: dict[str, Any]) -> str:
    """What differs between a doc's ``{key: default}`` and the code's, in words ('' when they agree)."""
    problems = []
    if set(declared) - set(documented):
        problems.append(f"declared but not documented: {', '.join(sorted(set(declared) - set(documented)))}")
    if set(documented) - set(declared):
        problems.append(f"documented but not declared: {', '.join(sorted(set(documented) - set(declared)))}")
    problems += [f"{key}: documented default {documented[key]!r}, declared {declared[key]!r}"
                 for key in sorted(set(documented) & set(declared)) if documented[key] != declared[key]]
    return "; ".join(problems)


def test_forward_md_top_keys_are_the_declared_ones():
    documented = forward_sentence("Top keys:")
    fields = {f.name: f for f in dataclasses.fields(forwardconf.ForwardConfig)}
    # The sentence gives a default only where it differs from the general table's ("as everywhere").
    top_keys = [*configdoc.keys_of("forward"), "brokers", forwardconf.RASA_KEY]
    declared = {key: fields[key].default if documented.get(key) is not None else None for key in top_keys}
    assert not disagreement(documented, declared), f"docs/forward.md 'Top keys:': {disagreement(documented, declared)}"


def test_forward_md_common_broker_keys_are_the_declared_ones():
    fields = {f.name: f for f in dataclasses.fields(forwardconf.BrokerConfig)}
    declared = {key: None if fields[key].default is dataclasses.MISSING else plain(fields[key].default)
                for key in COMMON_KEYS}
    documented = forward_sentence("Broker keys common to every type:")
    assert not disagreement(documented, declared), f"docs/forward.md common keys: {disagreement(documented, declared)}"


def builtin_types() -> list[str]:
    from eventbus.daemon.forward import registry

    return list(registry.BUILTIN)


@pytest.mark.parametrize("kind", builtin_types())
def test_forward_md_keys_of_each_broker_type_are_its_sinks_keys(kind):
    from eventbus.daemon.forward import registry

    sink = registry.sink_class(kind, kind)
    assert sink.KEYS is not None, f"{sink.__module__}.{sink.__name__} declares no KEYS: its keys are unchecked"
    rows = forward_type_rows()
    assert kind in rows, f"docs/forward.md has no row for type {kind!r}"
    common = forward_sentence("Broker keys common to every type:")
    declared = {key: default for key, default in sink.KEYS.items() if not (key in common and default == common[key])}
    problems = disagreement(documented_keys(rows[kind]), declared)
    assert not problems, f"docs/forward.md, type {kind!r} against {sink.__module__}.{sink.__name__}.KEYS: {problems}"


# -- conf/ samples -------------------------------------------------------------------------------------------


def sample_top_keys(name: str) -> set[str]:
    """Top-level keys of ``conf/NAME``, given or commented out (``# key: value``)."""
    text = (REPO / "conf" / name).read_text(encoding="utf-8")
    return set(re.findall(r"^(?:# ?)?([a-z_]+):(?:\s|$)", text, re.M))


@pytest.mark.parametrize("name", ["master", "minion", "api", "forward"])
def test_conf_samples_name_only_declared_keys(name):
    declared = set(configdoc.keys_of(name)) | ({"brokers", forwardconf.RASA_KEY} if name == "forward" else set())
    assert sorted(sample_top_keys(name) - declared) == []


def test_conf_forward_brokers_name_only_their_types_keys():
    from eventbus.daemon.forward import registry

    text = (REPO / "conf/forward").read_text(encoding="utf-8")
    uncommented = re.sub(r"^  # (- |  )", r"  \1", text, flags=re.M)  # the commented-out brokers too
    for broker in yaml.safe_load(uncommented)["brokers"]:
        sink = registry.sink_class(broker["type"], broker["name"]) if broker["type"] in registry.BUILTIN else None
        if sink is None or sink.KEYS is None:
            continue
        named = {re.sub(r"_(file|env)$", "", key) for key in broker}
        assert sorted(named - set(sink.KEYS) - set(COMMON_KEYS)) == [], broker["name"]
